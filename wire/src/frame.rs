//! The envelope and every frame of the client protocol.
//!
//! Envelope, 8 bytes, then `len` bytes of payload (all integers little endian):
//! ```text
//! { len u32 | kind u8 | flags u8 (0) | reserved u16 (0) } payload[len]
//! ```
//! Payloads start with fixed-layout fields; a body, where a frame has one, is the rest
//! of the payload and is opaque (clients may encrypt it end to end). A `Send`'s
//! recipient is at payload offset 0, so the gateway routes it by reading 8 bytes.
//!
//! ```text
//! kind dir  frame            payload
//! 0x01 C→S  Hello            magic "SWB\0" | min_version u16 | max_version u16
//! 0x02 S→C  Welcome          version u16 | ping_interval_s u16 | frame_bytes_max u32 | server_time_ms u64
//! 0x10 C→S  RegisterRequest  phone u64
//! 0x11 S→C  RegisterPending  phone u64 | expires_in_s u32 | reserved u32
//! 0x12 C→S  Verify           phone u64 | pin u32 | reserved u32
//! 0x13 S→C  Registered       phone u64 | key [32]
//! 0x14 C→S  Login            phone u64 | key [32]
//! 0x15 S→C  LoggedIn         pending u32 | reserved u32
//! 0x20 C→S  Send             to u64 | msg_id u64 | body..
//! 0x21 S→C  ServerAck        to u64 | msg_id u64
//! 0x22 S→C  Deliver          seq u64 | from u64 | msg_id u64 | timestamp_ms u64 | body..
//! 0x23 C→S  Ack              seq u64
//! 0x24 S→C  Receipt          seq u64 | by u64 | msg_id u64 | timestamp_ms u64 | kind u8 | reserved [7]
//! 0x25 C→S  Read             from u64 | msg_id u64
//! 0x26 S→C  Refused          to u64 | msg_id u64 | code u16 | reserved [6]
//! 0x30 both Ping             nonce u64
//! 0x31 both Pong             nonce u64
//! 0x40 S→C  Error            code u16 | reason (UTF-8, ≤ 256 bytes)
//! 0x41 both Close            code u16 | reason (UTF-8, ≤ 256 bytes)
//! ```
//! Reserved fields must be zero. Direction is checked by the connection state machine,
//! not here.

use crate::error::{ErrorCode, FrameError};
use crate::types::{Key, Phone, Pin};

pub const ENVELOPE_BYTES: usize = 8;
/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Default maximum payload; the server announces its own in `Welcome`.
pub const FRAME_BYTES_DEFAULT: usize = 64 * 1024;
/// No configuration may raise the maximum payload above this.
pub const FRAME_BYTES_LIMIT: usize = 1 << 20;
/// Longest reason text in `Error` and `Close`.
pub const REASON_BYTES_MAX: usize = 256;
pub const HELLO_MAGIC: [u8; 4] = *b"SWB\0";

const _: () = assert!(FRAME_BYTES_DEFAULT <= FRAME_BYTES_LIMIT);
const _: () = assert!(FRAME_BYTES_LIMIT <= u32::MAX as usize);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Hello = 0x01,
    Welcome = 0x02,
    RegisterRequest = 0x10,
    RegisterPending = 0x11,
    Verify = 0x12,
    Registered = 0x13,
    Login = 0x14,
    LoggedIn = 0x15,
    Send = 0x20,
    ServerAck = 0x21,
    Deliver = 0x22,
    Ack = 0x23,
    Receipt = 0x24,
    Read = 0x25,
    Refused = 0x26,
    Ping = 0x30,
    Pong = 0x31,
    Error = 0x40,
    Close = 0x41,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Kind> {
        use Kind::*;
        Some(match v {
            0x01 => Hello,
            0x02 => Welcome,
            0x10 => RegisterRequest,
            0x11 => RegisterPending,
            0x12 => Verify,
            0x13 => Registered,
            0x14 => Login,
            0x15 => LoggedIn,
            0x20 => Send,
            0x21 => ServerAck,
            0x22 => Deliver,
            0x23 => Ack,
            0x24 => Receipt,
            0x25 => Read,
            0x26 => Refused,
            0x30 => Ping,
            0x31 => Pong,
            0x40 => Error,
            0x41 => Close,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ReceiptKind {
    Delivered = 1,
    Read = 2,
}

/// A frame; bodies and reasons borrow the buffer it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Hello {
        min_version: u16,
        max_version: u16,
    },
    Welcome {
        version: u16,
        ping_interval_s: u16,
        frame_bytes_max: u32,
        server_time_ms: u64,
    },
    RegisterRequest {
        phone: Phone,
    },
    RegisterPending {
        phone: Phone,
        expires_in_s: u32,
    },
    Verify {
        phone: Phone,
        pin: Pin,
    },
    Registered {
        phone: Phone,
        key: Key,
    },
    Login {
        phone: Phone,
        key: Key,
    },
    LoggedIn {
        pending: u32,
    },
    Send {
        to: Phone,
        msg_id: u64,
        body: &'a [u8],
    },
    ServerAck {
        to: Phone,
        msg_id: u64,
    },
    Deliver {
        seq: u64,
        from: Phone,
        msg_id: u64,
        timestamp_ms: u64,
        body: &'a [u8],
    },
    Ack {
        seq: u64,
    },
    Receipt {
        seq: u64,
        by: Phone,
        msg_id: u64,
        timestamp_ms: u64,
        kind: ReceiptKind,
    },
    Read {
        from: Phone,
        msg_id: u64,
    },
    /// A `Send` (or `Read`) the server did not take; the connection stays open.
    Refused {
        to: Phone,
        msg_id: u64,
        code: ErrorCode,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    Error {
        code: ErrorCode,
        reason: &'a str,
    },
    Close {
        code: ErrorCode,
        reason: &'a str,
    },
}

/// The envelope of a frame, read without looking at the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    /// Payload bytes after the envelope.
    pub len: usize,
}

impl Header {
    pub fn frame_bytes(&self) -> usize {
        ENVELOPE_BYTES + self.len
    }
}

/// Reads the envelope at the start of `buf`: enough to know the frame's kind and size
/// (and to refuse an oversized frame before its payload arrives).
pub fn peek(buf: &[u8], max_payload: usize) -> Result<Header, FrameError> {
    if buf.len() < ENVELOPE_BYTES {
        return Err(FrameError::Incomplete {
            needed: ENVELOPE_BYTES,
        });
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4")) as usize;
    let max = max_payload.min(FRAME_BYTES_LIMIT);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let kind = Kind::from_u8(buf[4]).ok_or(FrameError::UnknownKind(buf[4]))?;
    if buf[5] != 0 || buf[6] != 0 || buf[7] != 0 {
        return Err(FrameError::Reserved);
    }
    Ok(Header { kind, len })
}

/// Decodes the frame at the start of `buf`; returns it and the bytes it took.
pub fn decode(buf: &[u8], max_payload: usize) -> Result<(Frame<'_>, usize), FrameError> {
    let h = peek(buf, max_payload)?;
    let total = h.frame_bytes();
    if buf.len() < total {
        return Err(FrameError::Incomplete { needed: total });
    }
    let p = &buf[ENVELOPE_BYTES..total];
    let kind = h.kind;
    let bad = |why| FrameError::Malformed { kind, why };
    let fixed = |n: usize| {
        if p.len() == n {
            Ok(())
        } else {
            Err(bad("wrong length"))
        }
    };
    let at_least = |n: usize| {
        if p.len() >= n {
            Ok(())
        } else {
            Err(bad("too short"))
        }
    };
    let phone = |at: usize| Phone::new(u64_at(p, at)).ok_or(bad("not an E.164 number"));
    let zero = |r: std::ops::Range<usize>| {
        if p[r].iter().all(|&b| b == 0) {
            Ok(())
        } else {
            Err(bad("reserved bytes set"))
        }
    };
    let frame = match kind {
        Kind::Hello => {
            fixed(8)?;
            if p[0..4] != HELLO_MAGIC {
                return Err(bad("bad magic"));
            }
            let (min_version, max_version) = (u16_at(p, 4), u16_at(p, 6));
            if min_version == 0 || min_version > max_version {
                return Err(bad("bad version range"));
            }
            Frame::Hello {
                min_version,
                max_version,
            }
        }
        Kind::Welcome => {
            fixed(16)?;
            Frame::Welcome {
                version: u16_at(p, 0),
                ping_interval_s: u16_at(p, 2),
                frame_bytes_max: u32_at(p, 4),
                server_time_ms: u64_at(p, 8),
            }
        }
        Kind::RegisterRequest => {
            fixed(8)?;
            Frame::RegisterRequest { phone: phone(0)? }
        }
        Kind::RegisterPending => {
            fixed(16)?;
            zero(12..16)?;
            Frame::RegisterPending {
                phone: phone(0)?,
                expires_in_s: u32_at(p, 8),
            }
        }
        Kind::Verify => {
            fixed(16)?;
            zero(12..16)?;
            Frame::Verify {
                phone: phone(0)?,
                pin: Pin::new(u32_at(p, 8)).ok_or(bad("a PIN has five digits"))?,
            }
        }
        Kind::Registered | Kind::Login => {
            fixed(40)?;
            let key = Key(p[8..40].try_into().expect("32"));
            let phone = phone(0)?;
            if kind == Kind::Login {
                Frame::Login { phone, key }
            } else {
                Frame::Registered { phone, key }
            }
        }
        Kind::LoggedIn => {
            fixed(8)?;
            zero(4..8)?;
            Frame::LoggedIn {
                pending: u32_at(p, 0),
            }
        }
        Kind::Send => {
            at_least(16)?;
            Frame::Send {
                to: phone(0)?,
                msg_id: u64_at(p, 8),
                body: &p[16..],
            }
        }
        Kind::ServerAck => {
            fixed(16)?;
            Frame::ServerAck {
                to: phone(0)?,
                msg_id: u64_at(p, 8),
            }
        }
        Kind::Deliver => {
            at_least(32)?;
            Frame::Deliver {
                seq: u64_at(p, 0),
                from: phone(8)?,
                msg_id: u64_at(p, 16),
                timestamp_ms: u64_at(p, 24),
                body: &p[32..],
            }
        }
        Kind::Ack => {
            fixed(8)?;
            Frame::Ack { seq: u64_at(p, 0) }
        }
        Kind::Receipt => {
            fixed(40)?;
            zero(33..40)?;
            let kind = match p[32] {
                1 => ReceiptKind::Delivered,
                2 => ReceiptKind::Read,
                _ => return Err(bad("unknown receipt kind")),
            };
            Frame::Receipt {
                seq: u64_at(p, 0),
                by: phone(8)?,
                msg_id: u64_at(p, 16),
                timestamp_ms: u64_at(p, 24),
                kind,
            }
        }
        Kind::Read => {
            fixed(16)?;
            Frame::Read {
                from: phone(0)?,
                msg_id: u64_at(p, 8),
            }
        }
        Kind::Refused => {
            fixed(24)?;
            zero(18..24)?;
            let code = ErrorCode::from_wire(u16_at(p, 16));
            Frame::Refused {
                to: phone(0)?,
                msg_id: u64_at(p, 8),
                code,
            }
        }
        Kind::Ping | Kind::Pong => {
            fixed(8)?;
            let nonce = u64_at(p, 0);
            if kind == Kind::Ping {
                Frame::Ping { nonce }
            } else {
                Frame::Pong { nonce }
            }
        }
        Kind::Error | Kind::Close => {
            at_least(2)?;
            let code = ErrorCode::from_wire(u16_at(p, 0));
            if p.len() - 2 > REASON_BYTES_MAX {
                return Err(bad("reason too long"));
            }
            let reason = std::str::from_utf8(&p[2..]).map_err(|_| bad("reason is not UTF-8"))?;
            if kind == Kind::Error {
                Frame::Error { code, reason }
            } else {
                Frame::Close { code, reason }
            }
        }
    };
    Ok((frame, total))
}

fn u16_at(p: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(p[at..at + 2].try_into().expect("2"))
}
fn u32_at(p: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(p[at..at + 4].try_into().expect("4"))
}
fn u64_at(p: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(p[at..at + 8].try_into().expect("8"))
}

/// The recipient of a `Send` frame whose envelope has been read: payload offset 0.
/// The gateway routes with this without decoding (or copying) the body.
pub fn send_recipient(frame: &[u8]) -> Option<Phone> {
    if frame.len() < ENVELOPE_BYTES + 8 || frame[4] != Kind::Send as u8 {
        return None;
    }
    Phone::new(u64_at(frame, ENVELOPE_BYTES))
}

impl Frame<'_> {
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Hello { .. } => Kind::Hello,
            Frame::Welcome { .. } => Kind::Welcome,
            Frame::RegisterRequest { .. } => Kind::RegisterRequest,
            Frame::RegisterPending { .. } => Kind::RegisterPending,
            Frame::Verify { .. } => Kind::Verify,
            Frame::Registered { .. } => Kind::Registered,
            Frame::Login { .. } => Kind::Login,
            Frame::LoggedIn { .. } => Kind::LoggedIn,
            Frame::Send { .. } => Kind::Send,
            Frame::ServerAck { .. } => Kind::ServerAck,
            Frame::Deliver { .. } => Kind::Deliver,
            Frame::Ack { .. } => Kind::Ack,
            Frame::Receipt { .. } => Kind::Receipt,
            Frame::Read { .. } => Kind::Read,
            Frame::Refused { .. } => Kind::Refused,
            Frame::Ping { .. } => Kind::Ping,
            Frame::Pong { .. } => Kind::Pong,
            Frame::Error { .. } => Kind::Error,
            Frame::Close { .. } => Kind::Close,
        }
    }

    /// Payload bytes (after the envelope).
    pub fn payload_len(&self) -> usize {
        match self {
            Frame::Hello { .. } | Frame::RegisterRequest { .. } | Frame::LoggedIn { .. } => 8,
            Frame::Ack { .. } | Frame::Ping { .. } | Frame::Pong { .. } => 8,
            Frame::Welcome { .. } | Frame::RegisterPending { .. } | Frame::Verify { .. } => 16,
            Frame::ServerAck { .. } | Frame::Read { .. } => 16,
            Frame::Refused { .. } => 24,
            Frame::Registered { .. } | Frame::Login { .. } | Frame::Receipt { .. } => 40,
            Frame::Send { body, .. } => 16 + body.len(),
            Frame::Deliver { body, .. } => 32 + body.len(),
            Frame::Error { reason, .. } | Frame::Close { reason, .. } => {
                2 + reason.len().min(REASON_BYTES_MAX)
            }
        }
    }

    /// Bytes on the wire, envelope included.
    pub fn encoded_len(&self) -> usize {
        ENVELOPE_BYTES + self.payload_len()
    }

    /// Appends the frame to `out`. A reason longer than [`REASON_BYTES_MAX`] is cut at a
    /// character boundary; everything else is written as given (callers keep bodies
    /// within the negotiated maximum).
    pub fn encode(&self, out: &mut Vec<u8>) {
        // One allocation of the right size, not a growth per field.
        out.reserve(self.encoded_len());
        let start = out.len();
        out.extend_from_slice(&(self.payload_len() as u32).to_le_bytes());
        out.extend_from_slice(&[self.kind() as u8, 0, 0, 0]);
        let u16s = |out: &mut Vec<u8>, v: u16| out.extend_from_slice(&v.to_le_bytes());
        let u32s = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
        let u64s = |out: &mut Vec<u8>, v: u64| out.extend_from_slice(&v.to_le_bytes());
        match *self {
            Frame::Hello {
                min_version,
                max_version,
            } => {
                out.extend_from_slice(&HELLO_MAGIC);
                u16s(out, min_version);
                u16s(out, max_version);
            }
            Frame::Welcome {
                version,
                ping_interval_s,
                frame_bytes_max,
                server_time_ms,
            } => {
                u16s(out, version);
                u16s(out, ping_interval_s);
                u32s(out, frame_bytes_max);
                u64s(out, server_time_ms);
            }
            Frame::RegisterRequest { phone } => u64s(out, phone.get()),
            Frame::RegisterPending {
                phone,
                expires_in_s,
            } => {
                u64s(out, phone.get());
                u32s(out, expires_in_s);
                u32s(out, 0);
            }
            Frame::Verify { phone, pin } => {
                u64s(out, phone.get());
                u32s(out, pin.get());
                u32s(out, 0);
            }
            Frame::Registered { phone, key } | Frame::Login { phone, key } => {
                u64s(out, phone.get());
                out.extend_from_slice(&key.0);
            }
            Frame::LoggedIn { pending } => {
                u32s(out, pending);
                u32s(out, 0);
            }
            Frame::Send { to, msg_id, body } => {
                u64s(out, to.get());
                u64s(out, msg_id);
                out.extend_from_slice(body);
            }
            Frame::ServerAck { to, msg_id } => {
                u64s(out, to.get());
                u64s(out, msg_id);
            }
            Frame::Deliver {
                seq,
                from,
                msg_id,
                timestamp_ms,
                body,
            } => {
                u64s(out, seq);
                u64s(out, from.get());
                u64s(out, msg_id);
                u64s(out, timestamp_ms);
                out.extend_from_slice(body);
            }
            Frame::Ack { seq } => u64s(out, seq),
            Frame::Receipt {
                seq,
                by,
                msg_id,
                timestamp_ms,
                kind,
            } => {
                u64s(out, seq);
                u64s(out, by.get());
                u64s(out, msg_id);
                u64s(out, timestamp_ms);
                out.extend_from_slice(&[kind as u8, 0, 0, 0, 0, 0, 0, 0]);
            }
            Frame::Read { from, msg_id } => {
                u64s(out, from.get());
                u64s(out, msg_id);
            }
            Frame::Refused { to, msg_id, code } => {
                u64s(out, to.get());
                u64s(out, msg_id);
                u16s(out, code.get());
                out.extend_from_slice(&[0; 6]);
            }
            Frame::Ping { nonce } | Frame::Pong { nonce } => u64s(out, nonce),
            Frame::Error { code, reason } | Frame::Close { code, reason } => {
                u16s(out, code.get());
                out.extend_from_slice(truncate_reason(reason).as_bytes());
            }
        }
        debug_assert_eq!(out.len() - start, self.encoded_len());
    }
}

fn truncate_reason(s: &str) -> &str {
    if s.len() <= REASON_BYTES_MAX {
        return s;
    }
    let mut end = REASON_BYTES_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(n: u64) -> Phone {
        Phone::new(n).unwrap()
    }

    #[test]
    fn send_is_routable_from_its_header() {
        let mut buf = vec![];
        Frame::Send {
            to: phone(15551234567),
            msg_id: 9,
            body: b"hello",
        }
        .encode(&mut buf);
        assert_eq!(send_recipient(&buf), Some(phone(15551234567)));
        assert_eq!(
            peek(&buf, 100).unwrap(),
            Header {
                kind: Kind::Send,
                len: 21
            }
        );
    }

    #[test]
    fn a_code_this_build_does_not_know_is_kept_not_refused() {
        // A newer server's code reaches an older client: the frame still reads, with the
        // number kept, and is not retryable (docs/PROTOCOL.md).
        for f in [
            Frame::Refused {
                to: phone(15551234567),
                msg_id: 3,
                code: ErrorCode::Other(999),
            },
            Frame::Close {
                code: ErrorCode::Other(4242),
                reason: "newer",
            },
            Frame::Error {
                code: ErrorCode::Other(25),
                reason: "",
            },
        ] {
            let mut buf = vec![];
            f.encode(&mut buf);
            let (back, n) = decode(&buf, 1024).unwrap();
            assert_eq!((back, n), (f, buf.len()));
        }
        assert_eq!(ErrorCode::from_wire(23), ErrorCode::DiskFull);
        assert_eq!(ErrorCode::from_wire(999), ErrorCode::Other(999));
        assert!(!ErrorCode::Other(999).is_retryable());
        for v in 1..=24 {
            assert_eq!(ErrorCode::from_u16(v).unwrap().get(), v);
        }
    }

    #[test]
    fn incomplete_is_not_invalid() {
        let mut buf = vec![];
        Frame::Ping { nonce: 1 }.encode(&mut buf);
        for cut in 0..buf.len() {
            assert!(
                matches!(
                    decode(&buf[..cut], 1024),
                    Err(FrameError::Incomplete { .. })
                ),
                "cut {cut}"
            );
        }
        assert!(decode(&buf, 1024).is_ok());
    }

    #[test]
    fn oversized_frames_are_refused_from_the_envelope_alone() {
        let env = [0x00, 0x00, 0x10, 0x00, Kind::Send as u8, 0, 0, 0]; // 1 MiB
        assert_eq!(
            peek(&env, 65536),
            Err(FrameError::TooLarge {
                len: 1 << 20,
                max: 65536
            })
        );
        assert_eq!(
            peek(&env, 65536).unwrap_err().code(),
            ErrorCode::FrameTooLarge
        );
    }

    #[test]
    fn bad_input_is_named() {
        let unknown = [0, 0, 0, 0, 0x7f, 0, 0, 0];
        assert_eq!(decode(&unknown, 64), Err(FrameError::UnknownKind(0x7f)));
        let reserved = [0, 0, 0, 0, Kind::Ping as u8, 1, 0, 0];
        assert_eq!(decode(&reserved, 64), Err(FrameError::Reserved));
        let mut buf = vec![];
        Frame::Verify {
            phone: phone(15551234567),
            pin: Pin::new(12345).unwrap(),
        }
        .encode(&mut buf);
        buf[16..20].copy_from_slice(&100_000u32.to_le_bytes());
        assert!(matches!(
            decode(&buf, 64),
            Err(FrameError::Malformed {
                kind: Kind::Verify,
                ..
            })
        ));
        let mut buf = vec![];
        Frame::RegisterRequest {
            phone: phone(15551234567),
        }
        .encode(&mut buf);
        buf[8..16].copy_from_slice(&7u64.to_le_bytes());
        assert!(matches!(
            decode(&buf, 64),
            Err(FrameError::Malformed {
                why: "not an E.164 number",
                ..
            })
        ));
    }

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        let reason = "é".repeat(200); // 400 bytes
        let mut buf = vec![];
        Frame::Close {
            code: ErrorCode::Normal,
            reason: &reason,
        }
        .encode(&mut buf);
        let (f, _) = decode(&buf, 1024).unwrap();
        let Frame::Close { reason, .. } = f else {
            panic!()
        };
        assert_eq!(reason.len(), 256);
    }
}
