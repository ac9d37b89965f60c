//! Newtypes for the values the log stores and hands out.

use std::fmt;

/// A user, by phone number: the E.164 digits read as an integer (at most 15 digits,
/// so it always fits). `0` is not a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(u64);

impl UserId {
    /// Largest value: fifteen nines, the longest E.164 number.
    pub const MAX: u64 = 999_999_999_999_999;

    /// A user id, or `None` for `0` or a value over fifteen digits.
    pub const fn new(v: u64) -> Option<Self> {
        if v == 0 || v > Self::MAX {
            None
        } else {
            Some(Self(v))
        }
    }

    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}", self.0)
    }
}

/// The log's own number for a message: unique within one log for its whole life,
/// increasing in append order, kept when compaction moves the record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgSeq(pub u64);

/// Identifies a segment file; also its place in log order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId(pub u32);

impl SegmentId {
    pub fn file_name(self) -> String {
        format!("{:08x}.seg", self.0)
    }

    /// Parses a name made by [`SegmentId::file_name`].
    pub fn from_file_name(name: &str) -> Option<Self> {
        let hex = name.strip_suffix(".seg")?;
        if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(hex, 16).ok().map(SegmentId)
    }
}

/// A position in the log: `segment << 32 | byte offset in the segment`. Ordered as the
/// log is. Positions are where records *end* when reported as written or durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const fn new(segment: SegmentId, offset: u32) -> Self {
        Lsn(((segment.0 as u64) << 32) | offset as u64)
    }
    pub const fn segment(self) -> SegmentId {
        SegmentId((self.0 >> 32) as u32)
    }
    pub const fn offset(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}:{:08x}", self.segment().0, self.offset())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_bounds() {
        assert!(UserId::new(0).is_none());
        assert!(UserId::new(UserId::MAX + 1).is_none());
        assert_eq!(
            UserId::new(15551234567).unwrap().to_string(),
            "+15551234567"
        );
    }

    #[test]
    fn segment_names_round_trip() {
        let id = SegmentId(0xabc);
        assert_eq!(SegmentId::from_file_name(&id.file_name()), Some(id));
        assert_eq!(SegmentId::from_file_name("0000000g.seg"), None);
        assert_eq!(SegmentId::from_file_name("00000001.seg.tmp"), None);
    }

    #[test]
    fn lsn_orders_by_segment_then_offset() {
        let a = Lsn::new(SegmentId(1), u32::MAX);
        let b = Lsn::new(SegmentId(2), 0);
        assert!(a < b);
        assert_eq!(b.segment(), SegmentId(2));
        assert_eq!(a.offset(), u32::MAX);
    }
}
