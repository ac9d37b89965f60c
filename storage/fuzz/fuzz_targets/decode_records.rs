#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| storage::fuzzing::decode_records(data));
