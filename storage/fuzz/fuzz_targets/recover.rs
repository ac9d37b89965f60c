#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| storage::fuzzing::recover_from_bytes(data));
