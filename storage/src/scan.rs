//! Recovery's reader: walks the bytes of one segment and says what it finds — records,
//! damaged ranges it skipped, and where the data ends. No I/O; fuzzed directly.
//!
//! Rules, at each 8-byte aligned position:
//! - a valid record is returned and the walk moves past it; a seal ends the segment;
//! - a record of a newer version or unknown kind whose checksum holds is skipped whole
//!   ([`Item::Unknown`]): a later format wrote it, nothing is damaged;
//! - anything else is damage: the walk looks ahead for the next aligned sync marker
//!   that starts a valid record. Found: the range before it is [`Item::Skipped`].
//!   Not found: the data ends here, and the non-zero bytes after it are a torn tail.

use crate::record::{decode, DecodeError, Record, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SYNC};

#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    Record {
        offset: usize,
        len: usize,
        record: Record<'a>,
    },
    /// A checksummed record this build cannot read; kept on disk, ignored in memory.
    Unknown {
        offset: usize,
        len: usize,
        error: DecodeError,
    },
    /// `[offset, offset + len)` holds no valid record; a valid record follows.
    Skipped {
        offset: usize,
        len: usize,
        error: DecodeError,
    },
}

/// Where a segment's valid data ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct End {
    /// The next record would go here.
    pub offset: usize,
    /// Non-zero bytes after `offset` that are no record: a torn or damaged tail.
    pub torn_bytes: usize,
    /// The segment ended with a seal record.
    pub sealed: bool,
}

pub struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
    end: Option<End>,
}

impl<'a> Scanner<'a> {
    /// Scans a whole segment (`buf` starts with the segment header, which is skipped).
    pub fn new(segment: &'a [u8]) -> Self {
        Self::at(segment, SEGMENT_HEADER_BYTES.min(segment.len() & !7))
    }

    /// Scans from `offset` (8-aligned) on.
    pub fn at(buf: &'a [u8], offset: usize) -> Self {
        debug_assert_eq!(offset % 8, 0);
        Scanner {
            buf,
            pos: offset,
            end: None,
        }
    }

    /// Where the data ends; `Some` once the iterator has returned `None`.
    pub fn end(&self) -> Option<End> {
        self.end
    }

    /// Ends the walk at `offset`; `torn_bytes` as in [`End`].
    fn finish(&mut self, offset: usize, torn_bytes: usize, sealed: bool) {
        self.end = Some(End {
            offset,
            torn_bytes,
            sealed,
        });
        self.pos = self.buf.len();
    }

    /// Bytes from `offset` to the last non-zero byte: a torn tail's length.
    fn nonzero_after(&self, offset: usize) -> usize {
        last_nonzero(&self.buf[offset..]).map_or(0, |i| i + 1)
    }

    /// The next aligned position at or after `from` where a checksummed record starts.
    fn resync(&self, from: usize) -> Option<usize> {
        let mut q = from;
        while q + RECORD_HEADER_BYTES <= self.buf.len() {
            if self.buf[q..q + 4] == SYNC.to_le_bytes() && checksum_holds(&self.buf[q..]) {
                return Some(q);
            }
            q += 8;
        }
        None
    }
}

/// The record at the start of `buf` is intact, whether or not this build can read it.
fn checksum_holds(buf: &[u8]) -> bool {
    matches!(
        decode(buf),
        Ok(_) | Err(DecodeError::NewerVersion(_)) | Err(DecodeError::UnknownKind(_))
    )
}

impl<'a> Iterator for Scanner<'a> {
    type Item = Item<'a>;

    #[inline]
    fn next(&mut self) -> Option<Item<'a>> {
        if self.end.is_some() {
            return None;
        }
        let p = self.pos;
        if p + RECORD_HEADER_BYTES > self.buf.len() {
            let p = p.min(self.buf.len());
            self.finish(p, self.nonzero_after(p), false);
            return None;
        }
        let buf: &'a [u8] = self.buf;
        match decode(&buf[p..]) {
            Ok((record, len)) => {
                self.pos = p + len;
                if let Record::Seal { .. } = record {
                    self.finish(self.pos, 0, true);
                }
                Some(Item::Record {
                    offset: p,
                    len,
                    record,
                })
            }
            Err(error @ (DecodeError::NewerVersion(_) | DecodeError::UnknownKind(_))) => {
                let body = u32::from_le_bytes(buf[p + 4..p + 8].try_into().expect("4")) as usize;
                let len = crate::record::align8(RECORD_HEADER_BYTES + body);
                self.pos = p + len;
                Some(Item::Unknown {
                    offset: p,
                    len,
                    error,
                })
            }
            Err(error) => {
                if first_nonzero(&buf[p..]).is_none() {
                    // The data ends in zeros: nothing torn (and no second pass over
                    // them looking for the last non-zero byte).
                    self.finish(p, 0, false);
                    return None;
                }
                match self.resync(p + 8) {
                    Some(r) => {
                        self.pos = r;
                        Some(Item::Skipped {
                            offset: p,
                            len: r - p,
                            error,
                        })
                    }
                    None => {
                        self.finish(p, self.nonzero_after(p), false);
                        None
                    }
                }
            }
        }
    }
}

/// Index of the first non-zero byte. Word at a time: recovery reads whole empty tails.
pub fn first_nonzero(buf: &[u8]) -> Option<usize> {
    let mut chunks = buf.chunks_exact(64);
    let mut base = 0;
    for c in &mut chunks {
        if c.iter().fold(0u8, |a, &b| a | b) != 0 {
            return c.iter().position(|&b| b != 0).map(|i| base + i);
        }
        base += 64;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b != 0)
        .map(|i| base + i)
}

/// Index of the last non-zero byte.
pub fn last_nonzero(buf: &[u8]) -> Option<usize> {
    let mut end = buf.len();
    let head = buf.len() % 64;
    let mut chunks = buf[head..].rchunks_exact(64);
    for c in &mut chunks {
        if c.iter().fold(0u8, |a, &b| a | b) != 0 {
            return c.iter().rposition(|&b| b != 0).map(|i| end - 64 + i);
        }
        end -= 64;
    }
    buf[..head].iter().rposition(|&b| b != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{MessageRecord, SEGMENT_HEADER_BYTES};
    use crate::types::{MsgSeq, SegmentId, UserId};

    fn msg(seq: u64, body: &[u8]) -> Record<'_> {
        Record::Message(MessageRecord {
            recipient: UserId::new(7).unwrap(),
            sender: UserId::new(9).unwrap(),
            msg_id: seq,
            seq: MsgSeq(seq),
            timestamp_ms: 1,
            expiry_ms: 2,
            body,
        })
    }

    fn segment(records: &[Record<'_>], size: usize) -> (Vec<u8>, Vec<usize>) {
        let mut buf = vec![0u8; size];
        buf[..8].copy_from_slice(b"whatever");
        let mut at = SEGMENT_HEADER_BYTES;
        let mut offsets = vec![];
        for r in records {
            offsets.push(at);
            at += r.encode(&mut buf[at..]);
        }
        offsets.push(at);
        (buf, offsets)
    }

    fn records(s: &mut Scanner<'_>) -> Vec<usize> {
        s.filter_map(|i| match i {
            Item::Record { offset, .. } => Some(offset),
            _ => None,
        })
        .collect()
    }

    #[test]
    fn clean_segment() {
        let recs = [msg(1, b"a"), msg(2, b"bb"), msg(3, b"")];
        let (buf, offs) = segment(&recs, 4096);
        let mut s = Scanner::new(&buf);
        assert_eq!(records(&mut s), offs[..3]);
        assert_eq!(
            s.end(),
            Some(End {
                offset: offs[3],
                torn_bytes: 0,
                sealed: false
            })
        );
    }

    #[test]
    fn damage_in_the_middle_is_skipped_and_the_rest_kept() {
        let recs = [msg(1, b"aaaa"), msg(2, b"bbbb"), msg(3, b"cccc")];
        let (mut buf, offs) = segment(&recs, 4096);
        buf[offs[1] + 20] ^= 0xff;
        let items: Vec<_> = Scanner::new(&buf).collect();
        assert_eq!(items.len(), 3);
        assert!(
            matches!(items[1], Item::Skipped { offset, len, error: DecodeError::Checksum }
            if offset == offs[1] && len == offs[2] - offs[1])
        );
    }

    #[test]
    fn torn_tail_is_cut() {
        let recs = [msg(1, b"aaaa"), msg(2, &[5u8; 40])];
        let (mut buf, offs) = segment(&recs, 4096);
        // Half of the last record never made it.
        buf[offs[1] + 30..offs[2]].fill(0);
        let mut s = Scanner::new(&buf);
        assert_eq!(records(&mut s), vec![offs[0]]);
        let end = s.end().unwrap();
        assert_eq!(end.offset, offs[1]);
        // Measured to the last non-zero byte of what was left of it.
        assert!((1..=30).contains(&end.torn_bytes), "{end:?}");
        assert!(buf[offs[1] + end.torn_bytes..].iter().all(|&b| b == 0));
    }

    #[test]
    fn seal_ends_the_segment() {
        let recs = [msg(1, b"x"), Record::Seal { next: SegmentId(2) }];
        let (mut buf, offs) = segment(&recs, 4096);
        buf[offs[2] + 64] = 1; // garbage after a seal is not read
        let mut s = Scanner::new(&buf);
        assert_eq!(records(&mut s).len(), 2);
        assert!(s.end().unwrap().sealed);
    }

    #[test]
    fn zeroed_hole_followed_by_records_is_skipped() {
        let recs = [msg(1, b"a"), msg(2, b"b"), msg(3, b"c")];
        let (mut buf, offs) = segment(&recs, 4096);
        buf[offs[1]..offs[2]].fill(0);
        let items: Vec<_> = Scanner::new(&buf).collect();
        assert!(matches!(items[1], Item::Skipped { .. }));
        assert!(matches!(items[2], Item::Record { offset, .. } if offset == offs[2]));
    }

    #[test]
    fn nonzero_helpers() {
        let mut b = vec![0u8; 1000];
        assert_eq!(first_nonzero(&b), None);
        assert_eq!(last_nonzero(&b), None);
        b[3] = 1;
        b[997] = 1;
        assert_eq!(first_nonzero(&b), Some(3));
        assert_eq!(last_nonzero(&b), Some(997));
        b[997] = 0;
        assert_eq!(last_nonzero(&b), Some(3));
        b[3] = 0;
        b[700] = 9;
        assert_eq!(first_nonzero(&b), Some(700));
    }
}
