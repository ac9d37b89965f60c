//! The in-memory index: per recipient, its pending messages in order.
//!
//! 16 bytes per pending message (sequence number and position) in a `VecDeque` per
//! user; with the deque's growth the worst case is 32. Lengths are not kept: they are in
//! the record, which the log reads when it needs them.

use std::collections::VecDeque;

use ahash::AHashMap;

use crate::types::{Lsn, MsgSeq, UserId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub seq: MsgSeq,
    /// Where the record starts.
    pub at: Lsn,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 16);

#[derive(Default)]
pub(crate) struct Queue {
    pub entries: VecDeque<Entry>,
    pub bytes: u64,
}

impl Queue {
    fn find(&self, seq: MsgSeq) -> Option<usize> {
        // Acks come mostly in order: look at the front before searching.
        match self.entries.front() {
            Some(e) if e.seq == seq => Some(0),
            _ => self.entries.binary_search_by_key(&seq, |e| e.seq).ok(),
        }
    }
}

#[derive(Default)]
pub(crate) struct Index {
    users: AHashMap<UserId, Queue>,
    pub messages: u64,
    pub bytes: u64,
}

impl Index {
    pub fn queue(&self, user: UserId) -> Option<&Queue> {
        self.users.get(&user)
    }

    /// Appends in sequence order (`seq` larger than any of the user's).
    pub fn push(&mut self, user: UserId, entry: Entry, body_bytes: u64) {
        let q = self.users.entry(user).or_default();
        debug_assert!(q.entries.back().is_none_or(|b| b.seq < entry.seq));
        q.entries.push_back(entry);
        q.bytes += body_bytes;
        self.messages += 1;
        self.bytes += body_bytes;
    }

    /// Builds a user's queue at recovery from entries in sequence order.
    pub fn load(&mut self, user: UserId, entries: Vec<(Entry, u64)>) {
        debug_assert!(entries.is_sorted_by(|a, b| a.0.seq < b.0.seq));
        let bytes: u64 = entries.iter().map(|(_, b)| b).sum();
        let q = self.users.entry(user).or_default();
        q.entries.extend(entries.into_iter().map(|(e, _)| e));
        q.bytes += bytes;
        self.messages += q.entries.len() as u64;
        self.bytes += bytes;
    }

    pub fn get(&self, user: UserId, seq: MsgSeq) -> Option<Entry> {
        let q = self.users.get(&user)?;
        q.find(seq).map(|i| q.entries[i])
    }

    pub fn remove(
        &mut self,
        user: UserId,
        seq: MsgSeq,
        body_bytes: impl FnOnce(Lsn) -> u64,
    ) -> Option<Entry> {
        let q = self.users.get_mut(&user)?;
        let i = q.find(seq)?;
        let e = q.entries.remove(i).expect("found");
        let bytes = body_bytes(e.at);
        q.bytes -= bytes;
        self.messages -= 1;
        self.bytes -= bytes;
        if q.entries.is_empty() {
            self.users.remove(&user);
        }
        Some(e)
    }

    /// Moves a message's position (compaction copied it).
    pub fn relocate(&mut self, user: UserId, seq: MsgSeq, at: Lsn) {
        if let Some(q) = self.users.get_mut(&user) {
            if let Some(i) = q.find(seq) {
                q.entries[i].at = at;
            }
        }
    }

    pub fn user_ids(&self) -> impl Iterator<Item = UserId> + '_ {
        self.users.keys().copied()
    }

    pub fn users(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SegmentId;

    #[test]
    fn push_find_remove_relocate() {
        let u = UserId::new(5).unwrap();
        let mut ix = Index::default();
        for s in 1..=5 {
            ix.push(
                u,
                Entry {
                    seq: MsgSeq(s),
                    at: Lsn::new(SegmentId(1), s as u32 * 8),
                },
                10,
            );
        }
        assert_eq!(ix.messages, 5);
        assert!(ix.remove(u, MsgSeq(3), |_| 10).is_some());
        assert!(ix.remove(u, MsgSeq(3), |_| 10).is_none());
        ix.relocate(u, MsgSeq(4), Lsn::new(SegmentId(2), 64));
        assert_eq!(ix.get(u, MsgSeq(4)).unwrap().at, Lsn::new(SegmentId(2), 64));
        for s in [1, 2, 4, 5] {
            ix.remove(u, MsgSeq(s), |_| 10).unwrap();
        }
        assert_eq!((ix.messages, ix.bytes, ix.users()), (0, 0, 0));
    }
}
