//! Getting disk space back: expiry, deleting dead segments, compacting sparse ones.
//! All of it runs in [`Log::maintain`] with a byte budget per call, on the writer's
//! thread between appends, so it never stalls the writer for long.
//!
//! Liveness of a record in segment S:
//! - a message: the index points at this copy;
//! - an account value: the accounts map points at this copy;
//! - an erase of message `seq` with target T: some segment other than S with id ≤ T
//!   may still hold a copy of the message. Every copy lies at or before T (T held the
//!   last one when it was erased), and only in a segment written after the message was
//!   first appended: one whose highest message sequence number is ≥ `seq` (sequence
//!   numbers increase in append order and copies keep theirs). So a message pending
//!   for months in an old segment does not keep every later erase on disk;
//! - an account delete with target T: some segment other than S with id ≤ T still
//!   exists, and its key has no newer value (keys are reused; message sequence numbers
//!   never are).
//!
//! A segment with nothing live is deleted; one whose live bytes are below
//! `compact_live_ratio` of its used bytes has its live records copied to the head and is
//! then deleted. Deletions wait until the log is durable up to the moment they were
//! decided, so a machine crash can never lose a copy that replaced the deleted one.

use crate::error::StorageError;
use crate::log::{Log, Segs};
use crate::record::{Record, SEGMENT_HEADER_BYTES};
use crate::scan::{Item, Scanner};
use crate::types::{Lsn, MsgSeq, SegmentId};

#[derive(Default)]
pub(crate) struct ReclaimState {
    /// Segment being compacted and the offset reached.
    compacting: Option<(SegmentId, usize)>,
    /// Segment being swept for expired messages, offset reached, and the smallest
    /// expiry among the live messages seen so far.
    expiring: Option<(SegmentId, usize, u64)>,
    /// Segments to delete once the log is durable up to the position.
    deletes: Vec<(SegmentId, Lsn)>,
}

/// What one [`Log::maintain`] call did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintainReport {
    pub expired: u64,
    pub compacted_records: u64,
    pub compacted_bytes: u64,
    pub segments_deleted: u64,
    pub bytes_scanned: u64,
    /// Work is left that a further call would do.
    pub more: bool,
}

impl Log {
    /// Does up to about `budget_bytes` of reclaim work: sweeps expired messages, deletes
    /// dead segments, compacts sparse ones. Call it regularly (the router does it each
    /// tick). `now_ms` decides expiry.
    pub fn maintain(
        &mut self,
        now_ms: u64,
        budget_bytes: usize,
    ) -> Result<MaintainReport, StorageError> {
        self.help_flusher();
        self.look_ahead(now_ms);
        if now_ms >= self.disk_checked_ms + 1000 {
            self.disk_checked_ms = now_ms;
            self.check_disk();
        }
        let mut r = MaintainReport::default();
        let mut budget = budget_bytes;
        self.delete_ready(&mut r)?;
        self.expire_some(now_ms, &mut budget, &mut r);
        self.schedule_dead();
        self.compact_some(&mut budget, &mut r)?;
        self.delete_ready(&mut r)?;
        r.more = budget == 0
            || self.reclaim.compacting.is_some()
            || self.reclaim.expiring.is_some()
            || !self.reclaim.deletes.is_empty();
        self.stats.expired += r.expired;
        self.stats.compacted_records += r.compacted_records;
        self.stats.compacted_bytes += r.compacted_bytes;
        self.stats.segments_deleted += r.segments_deleted;
        Ok(r)
    }

    fn is_active(&self, id: SegmentId) -> bool {
        self.active().seg.id == id
    }

    fn scheduled(&self, id: SegmentId) -> bool {
        self.reclaim.deletes.iter().any(|&(d, _)| d == id)
    }

    /// Whether a tombstone in `owner` that killed `(target, seq)` ([`Record::killed`])
    /// must be kept: another segment at or before the target may hold a copy of what
    /// it killed.
    fn tombstone_live(&self, owner: SegmentId, (target, seq): (SegmentId, MsgSeq)) -> bool {
        self.segments
            .iter()
            .take_while(|s| s.seg.id <= target)
            .any(|s| s.seg.id != owner && s.max_seq >= seq)
    }

    /// Nothing in it is live. Its tombstones are judged by their summary (highest
    /// target, lowest sequence number), which may keep a segment whose tombstones are
    /// each dead; compaction then checks them one by one and copies none.
    fn dead(&self, i: usize) -> bool {
        let s = &self.segments[i];
        s.live_records == 0
            && s.tombstones
                .is_none_or(|k| !self.tombstone_live(s.seg.id, k))
    }

    fn schedule_dead(&mut self) {
        let written = self.written();
        for i in 0..self.segments.len() - 1 {
            let id = self.segments[i].seg.id;
            if self.dead(i)
                && !self.scheduled(id)
                && self.reclaim.compacting.is_none_or(|(c, _)| c != id)
            {
                self.reclaim.deletes.push((id, written));
            }
        }
    }

    fn delete_ready(&mut self, r: &mut MaintainReport) -> Result<(), StorageError> {
        let durable = self.durable();
        let mut i = 0;
        while i < self.reclaim.deletes.len() {
            let (id, needs) = self.reclaim.deletes[i];
            if needs > durable {
                i += 1;
                continue;
            }
            self.reclaim.deletes.swap_remove(i);
            let Some(pos) = self.seg_index(id) else {
                continue;
            };
            if self.is_active(id) || !self.dead(pos) {
                continue; // something made it live again (cannot happen today; be safe)
            }
            let st = self.segments.remove(pos).expect("present");
            std::fs::remove_file(&st.seg.path)
                .map_err(StorageError::io("delete segment", &st.seg.path))?;
            if self.reclaim.expiring.is_some_and(|(e, _, _)| e == id) {
                self.reclaim.expiring = None;
            }
            r.segments_deleted += 1;
        }
        Ok(())
    }

    fn expire_some(&mut self, now_ms: u64, budget: &mut usize, r: &mut MaintainReport) {
        if self.reclaim.expiring.is_none() {
            self.reclaim.expiring = self
                .segments
                .iter()
                .find(|s| s.min_expiry_ms <= now_ms && s.live_records > 0)
                .map(|s| (s.seg.id, SEGMENT_HEADER_BYTES, u64::MAX));
        }
        let Some((id, mut at, mut min)) = self.reclaim.expiring else {
            return;
        };
        let Some(pos) = self.seg_index(id) else {
            self.reclaim.expiring = None;
            return;
        };
        let mut doomed = vec![];
        let end;
        {
            let st = &self.segments[pos];
            let mut scan = Scanner::at(&st.seg.bytes()[..st.used], at);
            loop {
                if *budget == 0 {
                    end = false;
                    break;
                }
                let Some(item) = scan.next() else {
                    end = true;
                    break;
                };
                let (offset, len) = match item {
                    Item::Record { offset, len, .. }
                    | Item::Unknown { offset, len, .. }
                    | Item::Skipped { offset, len, .. } => (offset, len),
                };
                if let Item::Record {
                    record: Record::Message(m),
                    ..
                } = item
                {
                    let here = Lsn::new(id, offset as u32);
                    if self.index.get(m.recipient, m.seq, &Segs(&self.segments)) == Some(here) {
                        if m.expiry_ms <= now_ms {
                            doomed.push((m.recipient, m.seq));
                        } else {
                            min = min.min(m.expiry_ms);
                        }
                    }
                }
                at = offset + len;
                *budget = budget.saturating_sub(len);
                r.bytes_scanned += len as u64;
            }
        }
        r.expired += doomed.len() as u64;
        for (user, seq) in doomed {
            self.kill_message(user, seq);
        }
        if end {
            self.segments[pos].min_expiry_ms = min;
            self.reclaim.expiring = None;
        } else {
            self.reclaim.expiring = Some((id, at, min));
        }
    }

    fn pick_compaction(&self) -> Option<SegmentId> {
        let ratio = self.config.compact_live_ratio;
        self.segments
            .iter()
            .take(self.segments.len() - 1)
            .find(|s| {
                let used = s.used.saturating_sub(SEGMENT_HEADER_BYTES) as f64;
                used > 0.0 && (s.live_bytes as f64) < ratio * used && !self.scheduled(s.seg.id)
            })
            .map(|s| s.seg.id)
    }

    fn compact_some(
        &mut self,
        budget: &mut usize,
        r: &mut MaintainReport,
    ) -> Result<(), StorageError> {
        let mut scratch = Vec::new();
        while *budget > 0 {
            if self.reclaim.compacting.is_none() {
                self.reclaim.compacting =
                    self.pick_compaction().map(|id| (id, SEGMENT_HEADER_BYTES));
            }
            let Some((id, at)) = self.reclaim.compacting else {
                return Ok(());
            };
            let Some(pos) = self.seg_index(id) else {
                self.reclaim.compacting = None;
                continue;
            };
            // Read the next record; copy it out if it is live.
            let (next, copy) = {
                let st = &self.segments[pos];
                let mut scan = Scanner::at(&st.seg.bytes()[..st.used], at);
                match scan.next() {
                    None => (None, None),
                    Some(Item::Record {
                        offset,
                        len,
                        record,
                    }) => {
                        let live = self.live_in(id, Lsn::new(id, offset as u32), &record);
                        if live {
                            scratch.clear();
                            scratch.extend_from_slice(&st.seg.bytes()[offset..offset + len]);
                        }
                        (Some(offset + len), live.then_some(record_kind(&record)))
                    }
                    Some(Item::Unknown { offset, len, .. } | Item::Skipped { offset, len, .. }) => {
                        (Some(offset + len), None)
                    }
                }
            };
            let Some(next) = next else {
                // Everything live is copied: the segment's tombstones live on in the copies.
                let st = &mut self.segments[pos];
                debug_assert_eq!(st.live_records, 0);
                st.tombstones = None;
                let written = self.written();
                self.reclaim.deletes.push((id, written));
                self.reclaim.compacting = None;
                continue;
            };
            *budget = budget.saturating_sub(next - at);
            r.bytes_scanned += (next - at) as u64;
            self.reclaim.compacting = Some((id, next));
            if let Some(kind) = copy {
                self.copy_forward(id, Lsn::new(id, at as u32), &scratch, kind)?;
                r.compacted_records += 1;
                r.compacted_bytes += scratch.len() as u64;
            }
        }
        Ok(())
    }

    fn live_in(&self, owner: SegmentId, here: Lsn, record: &Record<'_>) -> bool {
        match record {
            Record::Message(m) => {
                self.index.get(m.recipient, m.seq, &Segs(&self.segments)) == Some(here)
            }
            Record::AccountPut { key, .. } => self.accounts.get(*key).is_some_and(|a| a.at == here),
            Record::Erase { .. } => self.tombstone_live(owner, killed(record)),
            // Keys are reused: once the key has a newer value, that value (later in the
            // log than every older one) does the tombstone's work, and a copy of the
            // tombstone placed after it would wrongly delete it at replay.
            Record::AccountDelete { key, .. } => {
                !self.accounts.contains_key(*key) && self.tombstone_live(owner, killed(record))
            }
            Record::Seal { .. } => false,
        }
    }

    /// Appends a copy of a live record and moves everything that pointed at it.
    fn copy_forward(
        &mut self,
        from: SegmentId,
        old: Lsn,
        bytes: &[u8],
        kind: Copied,
    ) -> Result<(), StorageError> {
        let (start, _) = self.append_with(bytes.len(), false, |buf| buf.copy_from_slice(bytes))?;
        let (record, len) = crate::record::decode(bytes).expect("copied a valid record");
        let len64 = len as u64;
        match (kind, record) {
            (Copied::Message, Record::Message(m)) => {
                self.index
                    .relocate(m.recipient, m.seq, start, &Segs(&self.segments));
                let head = self.segments.back_mut().expect("active");
                head.min_expiry_ms = head.min_expiry_ms.min(m.expiry_ms);
                head.add_message(m.seq);
            }
            (Copied::Account, Record::AccountPut { key, .. }) => {
                if let Some(a) = self.accounts.get_mut(key) {
                    debug_assert_eq!(a.at, old);
                    a.at = start;
                }
            }
            (Copied::Tombstone, r) => {
                self.segments
                    .back_mut()
                    .expect("active")
                    .add_tombstone(killed(&r));
                return Ok(());
            }
            _ => unreachable!("kind matches the record"),
        }
        let head = self.segments.back_mut().expect("active");
        head.live_records += 1;
        head.live_bytes += len64;
        let src = self.seg_mut(from).expect("source segment");
        src.live_records -= 1;
        src.live_bytes -= len64;
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Copied {
    Message,
    Account,
    Tombstone,
}

/// What a record known to be a tombstone killed.
fn killed(record: &Record<'_>) -> (SegmentId, MsgSeq) {
    record.killed().expect("a tombstone")
}

fn record_kind(r: &Record<'_>) -> Copied {
    match r {
        Record::Message(_) => Copied::Message,
        Record::AccountPut { .. } => Copied::Account,
        _ => Copied::Tombstone,
    }
}
