//! The on-disk formats: segment header and records. Plain code over byte slices, no I/O.
//!
//! Segment header, 64 bytes at offset 0 of every segment file (little endian):
//! ```text
//! { magic "SWBDLOG\0" 8 | version u16 | header_bytes u16 | flags u32 |
//!   segment_id u64 | seq_base u64 | created_unix_ms u64 | segment_bytes u64 |
//!   reserved 12 (zero) | crc32c u32 over bytes 0..60 }
//! ```
//! Record, at an 8-byte aligned offset, zero-padded to a multiple of 8:
//! ```text
//! { sync u32 | len u32 | crc32c u32 | kind u8 | version u8 | flags u16 | body (len) | pad }
//! ```
//! `crc32c` covers `len` and everything from `kind` to the end of the body, so a record
//! is valid wherever it lies: compaction moves records by copying their bytes. `sync` is
//! a constant that lets recovery find the next record after a damaged one.
//!
//! Bodies by kind (all integers u64 unless said):
//! ```text
//! 1 message        { recipient | sender | msg_id | seq | timestamp_ms | expiry_ms | body.. }
//! 2 erase          { recipient | seq | target_segment }
//! 3 account put    { key_len u16 | key | value.. }
//! 4 account delete { target_segment | key.. }
//! 5 seal           { next_segment }
//! ```
//! `target_segment` of a tombstone (erase, account delete) is the segment where the
//! killed record lived when it was killed; every copy of it lies at or before that
//! segment, so the tombstone must be kept while any such segment that may hold a copy
//! exists (the rules are in `reclaim`).
//!
//! Versions: the header's `version` is the segment format, each record carries its own
//! record version. A reader accepts every version up to its own; a newer segment is
//! refused at open (it cannot be safely rewritten), a newer record is skipped and counted.

use crate::types::{MsgSeq, SegmentId, UserId};

pub const SEGMENT_MAGIC: [u8; 8] = *b"SWBDLOG\0";
pub const FORMAT_VERSION: u16 = 1;
pub const RECORD_VERSION: u8 = 1;
pub const SEGMENT_HEADER_BYTES: usize = 64;
pub const RECORD_HEADER_BYTES: usize = 16;
/// Marks the start of every record. Chosen to be unlikely in text and small integers.
pub const SYNC: u32 = 0x5B1D_C0DE;
/// Fixed fields of a message record before its body.
pub const MESSAGE_FIXED_BYTES: usize = 48;
/// Largest opaque message body the log accepts (the wire frame limit is far lower).
pub const BODY_BYTES_MAX: usize = 1 << 20;
/// Largest account key and value.
pub const ACCOUNT_KEY_BYTES_MAX: usize = 1024;
pub const ACCOUNT_VALUE_BYTES_MAX: usize = 4096;
/// Largest record body of any kind.
pub const RECORD_BODY_BYTES_MAX: usize = MESSAGE_FIXED_BYTES + BODY_BYTES_MAX;
/// Largest record on disk, header and padding included.
pub const RECORD_BYTES_MAX: usize = align8(RECORD_HEADER_BYTES + RECORD_BODY_BYTES_MAX);
/// A seal record on disk.
pub const SEAL_RECORD_BYTES: usize = RECORD_HEADER_BYTES + 8;

const _: () = assert!(ACCOUNT_KEY_BYTES_MAX + 2 + ACCOUNT_VALUE_BYTES_MAX <= RECORD_BODY_BYTES_MAX);
const _: () = assert!(SEAL_RECORD_BYTES % 8 == 0);

pub const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Message = 1,
    Erase = 2,
    AccountPut = 3,
    AccountDelete = 4,
    Seal = 5,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Message,
            2 => Kind::Erase,
            3 => Kind::AccountPut,
            4 => Kind::AccountDelete,
            5 => Kind::Seal,
            _ => return None,
        })
    }
}

/// A message as stored. `body` borrows the segment (or the caller's buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageRecord<'a> {
    pub recipient: UserId,
    pub sender: UserId,
    pub msg_id: u64,
    pub seq: MsgSeq,
    pub timestamp_ms: u64,
    pub expiry_ms: u64,
    pub body: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Message(MessageRecord<'a>),
    Erase {
        recipient: UserId,
        seq: MsgSeq,
        target: SegmentId,
    },
    AccountPut {
        key: &'a [u8],
        value: &'a [u8],
    },
    AccountDelete {
        key: &'a [u8],
        target: SegmentId,
    },
    Seal {
        next: SegmentId,
    },
}

/// Why bytes are not a record. `Incomplete` means more bytes could make them one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("incomplete: {needed} bytes needed")]
    Incomplete { needed: usize },
    #[error("no sync marker")]
    BadSync,
    #[error("record length {0} over the limit")]
    TooLong(u32),
    #[error("checksum mismatch")]
    Checksum,
    #[error("record version {0} is newer than this build reads")]
    NewerVersion(u8),
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("malformed {0:?} record")]
    Malformed(Kind),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("message body of {0} bytes is over the {BODY_BYTES_MAX}-byte limit")]
    BodyTooLarge(usize),
    #[error("account key of {0} bytes is empty or over the {ACCOUNT_KEY_BYTES_MAX}-byte limit")]
    KeySize(usize),
    #[error("account value of {0} bytes is over the {ACCOUNT_VALUE_BYTES_MAX}-byte limit")]
    ValueTooLarge(usize),
}

impl Record<'_> {
    /// For a tombstone: the segment it targets and the message sequence number it
    /// erases (`MsgSeq(0)` for an account delete, which erases no message: any segment
    /// at or before the target counts for it). `None` for other records.
    pub fn killed(&self) -> Option<(SegmentId, MsgSeq)> {
        match *self {
            Record::Erase { target, seq, .. } => Some((target, seq)),
            Record::AccountDelete { target, .. } => Some((target, MsgSeq(0))),
            _ => None,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Record::Message(_) => Kind::Message,
            Record::Erase { .. } => Kind::Erase,
            Record::AccountPut { .. } => Kind::AccountPut,
            Record::AccountDelete { .. } => Kind::AccountDelete,
            Record::Seal { .. } => Kind::Seal,
        }
    }

    fn body_len(&self) -> usize {
        match self {
            Record::Message(m) => MESSAGE_FIXED_BYTES + m.body.len(),
            Record::Erase { .. } => 24,
            Record::AccountPut { key, value } => 2 + key.len() + value.len(),
            Record::AccountDelete { key, .. } => 8 + key.len(),
            Record::Seal { .. } => 8,
        }
    }

    /// Checks the limits that [`Record::encode`] relies on.
    pub fn check(&self) -> Result<(), EncodeError> {
        match self {
            Record::Message(m) if m.body.len() > BODY_BYTES_MAX => {
                Err(EncodeError::BodyTooLarge(m.body.len()))
            }
            Record::AccountPut { key, .. } | Record::AccountDelete { key, .. }
                if key.is_empty() || key.len() > ACCOUNT_KEY_BYTES_MAX =>
            {
                Err(EncodeError::KeySize(key.len()))
            }
            Record::AccountPut { value, .. } if value.len() > ACCOUNT_VALUE_BYTES_MAX => {
                Err(EncodeError::ValueTooLarge(value.len()))
            }
            _ => Ok(()),
        }
    }

    /// Bytes the record takes on disk, header and padding included.
    pub fn encoded_len(&self) -> usize {
        align8(RECORD_HEADER_BYTES + self.body_len())
    }

    /// Writes the record at the start of `out`, which must hold [`Record::encoded_len`]
    /// bytes and must have passed [`Record::check`]. Returns the bytes written.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let body_len = self.body_len();
        let total = align8(RECORD_HEADER_BYTES + body_len);
        let out = &mut out[..total];
        let body = &mut out[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + body_len];
        match self {
            Record::Message(m) => {
                put_u64(body, 0, m.recipient.get());
                put_u64(body, 8, m.sender.get());
                put_u64(body, 16, m.msg_id);
                put_u64(body, 24, m.seq.0);
                put_u64(body, 32, m.timestamp_ms);
                put_u64(body, 40, m.expiry_ms);
                body[MESSAGE_FIXED_BYTES..].copy_from_slice(m.body);
            }
            Record::Erase {
                recipient,
                seq,
                target,
            } => {
                put_u64(body, 0, recipient.get());
                put_u64(body, 8, seq.0);
                put_u64(body, 16, target.0 as u64);
            }
            Record::AccountPut { key, value } => {
                body[..2].copy_from_slice(&(key.len() as u16).to_le_bytes());
                body[2..2 + key.len()].copy_from_slice(key);
                body[2 + key.len()..].copy_from_slice(value);
            }
            Record::AccountDelete { key, target } => {
                put_u64(body, 0, target.0 as u64);
                body[8..].copy_from_slice(key);
            }
            Record::Seal { next } => put_u64(body, 0, next.0 as u64),
        }
        out[RECORD_HEADER_BYTES + body_len..].fill(0);
        out[0..4].copy_from_slice(&SYNC.to_le_bytes());
        out[4..8].copy_from_slice(&(body_len as u32).to_le_bytes());
        out[12] = self.kind() as u8;
        out[13] = RECORD_VERSION;
        out[14..16].fill(0);
        let crc = record_crc(out, body_len);
        out[8..12].copy_from_slice(&crc.to_le_bytes());
        total
    }
}

/// The record's checksum: CRC32C of `len` (bytes 4..8) then of bytes 12 to the end of
/// the body.
fn record_crc(rec: &[u8], body_len: usize) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if body_len <= SHORT_BODY_BYTES && std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE 4.2, checked just above.
        return unsafe { record_crc_short(rec, body_len) };
    }
    record_crc_any(rec, body_len)
}

/// The checksum through the `crc32c` crate, for any length.
fn record_crc_any(rec: &[u8], body_len: usize) -> u32 {
    let crc = crc32c::crc32c(&rec[4..8]);
    crc32c::crc32c_append(crc, &rec[12..RECORD_HEADER_BYTES + body_len])
}

/// Bodies up to this long take [`record_crc_short`]; longer ones gain from the
/// crate's three interleaved streams.
const SHORT_BODY_BYTES: usize = 256;

/// The checksum of a short record in one pass of the CRC32C instruction: the header's
/// two 4-byte pieces, then the body a word at a time. Recovery checks one per record,
/// most of them around 100 bytes, where the crate's general entry costs twice this: it
/// takes the two pieces in two calls, each starting at a 4-byte (not 8-byte) boundary
/// that it walks a byte at a time. Equal to [`record_crc_any`] (a property test).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn record_crc_short(rec: &[u8], body_len: usize) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};
    let body = &rec[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + body_len];
    let mut crc = !0u32;
    crc = _mm_crc32_u32(crc, get_u32(rec, 4));
    crc = _mm_crc32_u32(crc, get_u32(rec, 12));
    let mut crc = crc as u64;
    let mut words = body.chunks_exact(8);
    for w in &mut words {
        crc = _mm_crc32_u64(crc, u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    let mut crc = crc as u32;
    for &b in words.remainder() {
        crc = _mm_crc32_u8(crc, b);
    }
    !crc
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn segment_of(v: u64, kind: Kind) -> Result<SegmentId, DecodeError> {
    u32::try_from(v)
        .map(SegmentId)
        .map_err(|_| DecodeError::Malformed(kind))
}

/// Decodes the record at the start of `buf`; returns it and the bytes it takes.
pub fn decode(buf: &[u8]) -> Result<(Record<'_>, usize), DecodeError> {
    decode_checked(buf, true)
}

/// Decodes a record whose checksum this process already checked: it appended the
/// record, or recovery verified it. The structure is still checked (sync marker,
/// length, kind, fields); the CRC is not computed again. Reads of pending messages use
/// this: each is read up to three times (delivery, receipt, erase) in its life.
pub(crate) fn decode_verified(buf: &[u8]) -> Result<(Record<'_>, usize), DecodeError> {
    decode_checked(buf, false)
}

#[inline]
fn decode_checked(buf: &[u8], check_crc: bool) -> Result<(Record<'_>, usize), DecodeError> {
    if buf.len() < RECORD_HEADER_BYTES {
        return Err(DecodeError::Incomplete {
            needed: RECORD_HEADER_BYTES,
        });
    }
    if get_u32(buf, 0) != SYNC {
        return Err(DecodeError::BadSync);
    }
    let len = get_u32(buf, 4);
    if len as usize > RECORD_BODY_BYTES_MAX {
        return Err(DecodeError::TooLong(len));
    }
    let body_len = len as usize;
    let total = align8(RECORD_HEADER_BYTES + body_len);
    if buf.len() < total {
        return Err(DecodeError::Incomplete { needed: total });
    }
    if check_crc && get_u32(buf, 8) != record_crc(buf, body_len) {
        return Err(DecodeError::Checksum);
    }
    if buf[13] > RECORD_VERSION {
        return Err(DecodeError::NewerVersion(buf[13]));
    }
    let kind = Kind::from_u8(buf[12]).ok_or(DecodeError::UnknownKind(buf[12]))?;
    let body = &buf[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + body_len];
    let bad = DecodeError::Malformed(kind);
    let user = |v: u64| UserId::new(v).ok_or(bad);
    let record = match kind {
        Kind::Message => {
            if body.len() < MESSAGE_FIXED_BYTES {
                return Err(bad);
            }
            Record::Message(MessageRecord {
                recipient: user(get_u64(body, 0))?,
                sender: user(get_u64(body, 8))?,
                msg_id: get_u64(body, 16),
                seq: MsgSeq(get_u64(body, 24)),
                timestamp_ms: get_u64(body, 32),
                expiry_ms: get_u64(body, 40),
                body: &body[MESSAGE_FIXED_BYTES..],
            })
        }
        Kind::Erase => {
            if body.len() != 24 {
                return Err(bad);
            }
            Record::Erase {
                recipient: user(get_u64(body, 0))?,
                seq: MsgSeq(get_u64(body, 8)),
                target: segment_of(get_u64(body, 16), kind)?,
            }
        }
        Kind::AccountPut => {
            if body.len() < 2 {
                return Err(bad);
            }
            let key_len = u16::from_le_bytes([body[0], body[1]]) as usize;
            let rest = &body[2..];
            if key_len == 0
                || key_len > ACCOUNT_KEY_BYTES_MAX
                || key_len > rest.len()
                || rest.len() - key_len > ACCOUNT_VALUE_BYTES_MAX
            {
                return Err(bad);
            }
            Record::AccountPut {
                key: &rest[..key_len],
                value: &rest[key_len..],
            }
        }
        Kind::AccountDelete => {
            if body.len() < 9 || body.len() - 8 > ACCOUNT_KEY_BYTES_MAX {
                return Err(bad);
            }
            Record::AccountDelete {
                target: segment_of(get_u64(body, 0), kind)?,
                key: &body[8..],
            }
        }
        Kind::Seal => {
            if body.len() != 8 {
                return Err(bad);
            }
            Record::Seal {
                next: segment_of(get_u64(body, 0), kind)?,
            }
        }
    };
    Ok((record, total))
}

/// The header at the start of a segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub version: u16,
    pub segment: SegmentId,
    /// The log's next message sequence number when the segment was started: a floor
    /// for numbering after recovery, even when every message before it was erased.
    pub seq_base: u64,
    pub created_unix_ms: u64,
    pub segment_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("segment header is all zeros (never started)")]
    Blank,
    #[error("bad magic")]
    Magic,
    #[error("header checksum mismatch")]
    Checksum,
    #[error("segment format version {0} is newer than this build reads ({FORMAT_VERSION})")]
    NewerVersion(u16),
    #[error("malformed header")]
    Malformed,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&(SEGMENT_HEADER_BYTES as u16).to_le_bytes());
        put_u64(&mut b, 16, self.segment.0 as u64);
        put_u64(&mut b, 24, self.seq_base);
        put_u64(&mut b, 32, self.created_unix_ms);
        put_u64(&mut b, 40, self.segment_bytes);
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, HeaderError> {
        if b.len() < SEGMENT_HEADER_BYTES {
            return Err(HeaderError::Malformed);
        }
        if b[..SEGMENT_HEADER_BYTES].iter().all(|&x| x == 0) {
            return Err(HeaderError::Blank);
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::Magic);
        }
        if get_u32(b, 60) != crc32c::crc32c(&b[..60]) {
            return Err(HeaderError::Checksum);
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version > FORMAT_VERSION {
            return Err(HeaderError::NewerVersion(version));
        }
        if u16::from_le_bytes([b[10], b[11]]) as usize != SEGMENT_HEADER_BYTES {
            return Err(HeaderError::Malformed);
        }
        Ok(SegmentHeader {
            version,
            segment: segment_of(get_u64(b, 16), Kind::Seal).map_err(|_| HeaderError::Malformed)?,
            seq_base: get_u64(b, 24),
            created_unix_ms: get_u64(b, 32),
            segment_bytes: get_u64(b, 40),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The one-pass checksum of short records is the crate's, at every length
        /// around the switch-over and whatever the bytes.
        #[test]
        fn short_checksum_is_the_crates(
            bytes in proptest::collection::vec(any::<u8>(), RECORD_HEADER_BYTES + 300),
            body_len in 0usize..300,
        ) {
            prop_assert_eq!(record_crc(&bytes, body_len), record_crc_any(&bytes, body_len));
        }
    }

    fn user() -> impl Strategy<Value = UserId> {
        (1..=UserId::MAX).prop_map(|v| UserId::new(v).unwrap())
    }

    fn record() -> impl Strategy<Value = (u8, Vec<u8>, Vec<u8>, UserId, UserId, [u64; 5])> {
        (
            1u8..=5,
            proptest::collection::vec(any::<u8>(), 1..300),
            proptest::collection::vec(any::<u8>(), 0..300),
            user(),
            user(),
            any::<[u64; 5]>(),
        )
    }

    fn build<'a>(
        kind: u8,
        a: &'a [u8],
        b: &'a [u8],
        u1: UserId,
        u2: UserId,
        n: [u64; 5],
    ) -> Record<'a> {
        match kind {
            1 => Record::Message(MessageRecord {
                recipient: u1,
                sender: u2,
                msg_id: n[0],
                seq: MsgSeq(n[1]),
                timestamp_ms: n[2],
                expiry_ms: n[3],
                body: b,
            }),
            2 => Record::Erase {
                recipient: u1,
                seq: MsgSeq(n[0]),
                target: SegmentId(n[1] as u32),
            },
            3 => Record::AccountPut { key: a, value: b },
            4 => Record::AccountDelete {
                key: a,
                target: SegmentId(n[2] as u32),
            },
            _ => Record::Seal {
                next: SegmentId(n[4] as u32),
            },
        }
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip((kind, a, b, u1, u2, n) in record()) {
            let rec = build(kind, &a, &b, u1, u2, n);
            rec.check().unwrap();
            let mut buf = vec![0xAAu8; rec.encoded_len() + 8];
            let len = rec.encode(&mut buf);
            prop_assert_eq!(len, rec.encoded_len());
            prop_assert_eq!(len % 8, 0);
            let (back, used) = decode(&buf).unwrap();
            prop_assert_eq!(used, len);
            prop_assert_eq!(back, rec);
            // Every strict prefix is incomplete or invalid, never a different record.
            for cut in [0, 1, RECORD_HEADER_BYTES - 1, RECORD_HEADER_BYTES, len - 1] {
                prop_assert!(decode(&buf[..cut]).is_err());
            }
        }

        #[test]
        fn any_single_bit_flip_is_detected((kind, a, b, u1, u2, n) in record(), bit in any::<usize>()) {
            let rec = build(kind, &a, &b, u1, u2, n);
            let mut buf = vec![0u8; rec.encoded_len()];
            let len = rec.encode(&mut buf);
            // Padding is outside the checksum by design; flip within the framed bytes.
            let framed = RECORD_HEADER_BYTES + rec.body_len();
            let bit = bit % (framed * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            if let Ok((r, _)) = decode(&buf[..len]) {
                prop_assert!(false, "flip at bit {} decoded as {:?}", bit, r);
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
            let _ = SegmentHeader::decode(&bytes);
        }

        #[test]
        fn header_round_trip(seg in any::<u32>(), base in any::<u64>(), ms in any::<u64>(), sz in any::<u64>()) {
            let h = SegmentHeader { version: FORMAT_VERSION, segment: SegmentId(seg), seq_base: base, created_unix_ms: ms, segment_bytes: sz };
            prop_assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
        }
    }

    #[test]
    fn limits_are_checked() {
        let big = vec![0u8; BODY_BYTES_MAX + 1];
        let u = UserId::new(1).unwrap();
        let m = Record::Message(MessageRecord {
            recipient: u,
            sender: u,
            msg_id: 0,
            seq: MsgSeq(0),
            timestamp_ms: 0,
            expiry_ms: 0,
            body: &big,
        });
        assert_eq!(
            m.check(),
            Err(EncodeError::BodyTooLarge(BODY_BYTES_MAX + 1))
        );
        let p = Record::AccountPut {
            key: b"",
            value: b"",
        };
        assert_eq!(p.check(), Err(EncodeError::KeySize(0)));
    }

    #[test]
    fn short_input_is_incomplete_not_invalid() {
        let rec = Record::Seal { next: SegmentId(3) };
        let mut buf = [0u8; SEAL_RECORD_BYTES];
        rec.encode(&mut buf);
        assert!(matches!(
            decode(&buf[..10]),
            Err(DecodeError::Incomplete { .. })
        ));
        assert!(matches!(
            decode(&buf[..20]),
            Err(DecodeError::Incomplete { .. })
        ));
        let mut newer = buf;
        newer[13] = RECORD_VERSION + 1;
        let crc = record_crc(&newer, 8);
        newer[8..12].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&newer), Err(DecodeError::NewerVersion(2)));
    }
}
