//! Switchboard's client protocol: the frames phones and the gateway exchange over TLS,
//! their limits and error codes. Plain code over byte slices: no I/O, no clock, no
//! allocation when decoding (bodies borrow the input). Documented byte by byte in
//! `docs/PROTOCOL.md`.
//!
//! # Layout
//! - [`types`]: `Phone` (E.164 number), `Pin`, `Key`.
//! - [`frame`]: the envelope, every frame, encode and decode.
//! - [`error`]: `FrameError` (why bytes are not a frame) and `ErrorCode` (what goes on the
//!   wire in `Error` and `Close`).
//! - [`link`]: what gateway and router say to each other (`ToRouter`, `ToClient`).
//! - [`linkcodec`]: the link protocol on the wire (gateway ↔ router, router ↔ router).
//! - [`fuzzing`]: entry points for the fuzz targets in `wire/fuzz`.
#![forbid(unsafe_code)]

pub mod error;
pub mod frame;
pub mod fuzzing;
pub mod link;
pub mod linkcodec;
pub mod types;

pub use error::{ErrorCode, FrameError};
pub use frame::{
    decode, peek, Frame, Header, ReceiptKind, ENVELOPE_BYTES, FRAME_BYTES_DEFAULT,
    FRAME_BYTES_LIMIT, PROTOCOL_VERSION, REASON_BYTES_MAX,
};
pub use types::{Key, Phone, Pin};
