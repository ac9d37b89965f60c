//! Entry points for the fuzz targets in `wire/fuzz` (and the property tests that run
//! them on every `cargo test`).

use crate::frame::{decode, peek, FRAME_BYTES_DEFAULT};

/// Decodes a stream of frames from arbitrary bytes; whatever decodes must re-encode
/// to the same bytes, and decoding must never panic.
pub fn decode_stream(data: &[u8]) {
    let mut at = 0;
    while at < data.len() {
        let _ = peek(&data[at..], FRAME_BYTES_DEFAULT);
        match decode(&data[at..], FRAME_BYTES_DEFAULT) {
            Ok((frame, len)) => {
                let mut out = Vec::with_capacity(len);
                frame.encode(&mut out);
                assert_eq!(out, &data[at..at + len], "{frame:?} re-encodes differently");
                at += len;
            }
            Err(_) => return,
        }
    }
}
