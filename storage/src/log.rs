//! The log of one router shard: appends, erases, accounts, reads, positions.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

use ahash::AHashMap;

use crate::config::{Durability, LogConfig};
use crate::error::{Limit, StorageError};
use crate::flusher::{Activation, FlushJob, Flusher, Preparer, Rescuer, Shared};
use crate::index::{Index, Records};
use crate::record::{
    decode_verified, MessageRecord, Record, SegmentHeader, FORMAT_VERSION, SEAL_RECORD_BYTES,
    SEGMENT_HEADER_BYTES,
};
use crate::segment::{DirLock, Segment};
use crate::starve::Watch;
use crate::types::{Lsn, MsgSeq, SegmentId, UserId};

/// A segment and what the log knows about its records.
pub(crate) struct SegState {
    pub seg: Segment,
    /// End of its data: the next record would go here.
    pub used: usize,
    pub sealed: bool,
    /// Live messages and account values in it, and their bytes on disk.
    pub live_records: u64,
    pub live_bytes: u64,
    /// Its tombstones, if any may still be needed, summed up: the highest
    /// `target_segment` among them and the lowest sequence number they erase (0 for
    /// an account delete, which has none). See `reclaim` for how they are used.
    pub tombstones: Option<(SegmentId, MsgSeq)>,
    /// The highest sequence number of the message records written into it (originals
    /// and compaction's copies): it holds no copy of a later message.
    pub max_seq: MsgSeq,
    /// No live message in it expires before this (unix ms).
    pub min_expiry_ms: u64,
}

impl SegState {
    pub fn new(seg: Segment, used: usize) -> Self {
        SegState {
            seg,
            used,
            sealed: false,
            live_records: 0,
            live_bytes: 0,
            tombstones: None,
            max_seq: MsgSeq(0),
            min_expiry_ms: u64::MAX,
        }
    }

    /// Notes a tombstone written into it ([`Record::killed`]).
    pub fn add_tombstone(&mut self, killed: (SegmentId, MsgSeq)) {
        add_tombstone(&mut self.tombstones, killed);
    }

    /// Notes a message record written into it.
    pub fn add_message(&mut self, seq: MsgSeq) {
        self.max_seq = self.max_seq.max(seq);
    }
}

/// Adds a tombstone ([`Record::killed`]) to a segment's summary of them: (highest
/// target, lowest sequence number erased).
pub(crate) fn add_tombstone(
    summary: &mut Option<(SegmentId, MsgSeq)>,
    (target, seq): (SegmentId, MsgSeq),
) {
    *summary = Some(match *summary {
        None => (target, seq),
        Some((t, s)) => (t.max(target), s.min(seq)),
    });
}

/// An account value and where it is.
pub(crate) struct Account {
    pub value: Box<[u8]>,
    pub at: Lsn,
    pub record_bytes: u32,
}

/// A message to store.
#[derive(Clone, Copy, Debug)]
pub struct NewMessage<'a> {
    pub recipient: UserId,
    pub sender: UserId,
    /// The sender's id for it.
    pub msg_id: u64,
    pub timestamp_ms: u64,
    /// When it expires (unix ms); `None`: `timestamp_ms` plus the configured TTL.
    pub expiry_ms: Option<u64>,
    pub body: &'a [u8],
}

/// The free space on a log's filesystem ([`Log::disk`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSpace {
    pub free: u64,
    pub reserve: u64,
    /// `free` is under `reserve`: new messages and accounts are refused.
    pub full: bool,
}

/// What an append produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub seq: MsgSeq,
    /// The record is safe once [`Log::durable`] reaches this.
    pub lsn: Lsn,
}

/// A pending message read from the log; `body` borrows the mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredMessage<'a> {
    pub seq: MsgSeq,
    pub recipient: UserId,
    pub sender: UserId,
    pub msg_id: u64,
    pub timestamp_ms: u64,
    pub expiry_ms: u64,
    pub body: &'a [u8],
}

/// How long the writer polls the preparer while it waits for a segment.
const PREPARE_POLL: Duration = Duration::from_millis(1);
/// The writer makes the next segment itself once it has waited this long for a preparer
/// that is starved of CPU ([`Watch::starved`]).
const PREPARE_PATIENCE: Duration = Duration::from_millis(5);
/// Where the system keeps no scheduler statistics: how long the writer waits at most.
const PREPARE_FALLBACK: Duration = Duration::from_millis(500);
/// The least a record waits for the flusher before the writer asks whether it is starved.
pub(crate) const FLUSH_PATIENCE_MIN: Duration = Duration::from_millis(20);

/// Counters and gauges of a log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    pub segments: u64,
    pub disk_bytes: u64,
    pub pending_messages: u64,
    pub pending_bytes: u64,
    pub users_with_pending: u64,
    pub accounts: u64,
    pub written: Lsn,
    pub durable: Lsn,
    pub appends: u64,
    pub erases: u64,
    pub rollovers: u64,
    /// Rollovers that had to wait for the preparer, and how long they waited in all.
    pub prepare_stalls: u64,
    pub prepare_stall_us: u64,
    /// Segments the writer made itself because the preparer was kept from the CPU.
    pub prepare_takeovers: u64,
    pub prefaulted_segments: u64,
    pub expired: u64,
    pub compacted_records: u64,
    pub compacted_bytes: u64,
    pub segments_deleted: u64,
    pub flushes: u64,
    pub flush_us_max: u64,
    pub flush_us_total: u64,
    /// Directory syncs before flushes (`group`: before a new segment's first flush).
    pub dir_syncs: u64,
    /// Flushes handed to the rescue thread (in `maintain`) because the flusher was kept
    /// from the CPU while records waited to be made durable.
    pub rescue_flushes: u64,
    /// Free bytes on the log's filesystem when last looked (at each new segment and
    /// every second of `maintain`), and whether that is under the reserve kept for
    /// acknowledgements ([`Log::disk_reserve`]): new messages are refused meanwhile.
    pub disk_free_bytes: u64,
    pub disk_full: bool,
    /// A flush (`msync`, directory `fsync`) failed: the durable position no longer
    /// advances and every append is refused with [`StorageError::FlushFailed`] (what was
    /// reported durable before stays so). Until the process restarts.
    pub flush_failed: bool,
}

pub struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    _lock: DirLock,
    /// Every segment on disk, in id order; the last is the one appended to.
    pub(crate) segments: VecDeque<SegState>,
    pub(crate) next_seq: u64,
    pub(crate) index: Index,
    pub(crate) accounts: AHashMap<Box<[u8]>, Account>,
    pub(crate) shared: Arc<Shared>,
    flusher: Option<Flusher>,
    /// The flusher's stand-in when it is starved (`group` mode).
    rescuer: Option<Rescuer>,
    preparer: Preparer,
    unflushed: u32,
    /// Durability the writer watches in `group` mode: the position it wants durable and
    /// the flusher since it started wanting it ([`Log::help_flusher`]).
    flush_watch: Option<(Lsn, Watch)>,
    /// Where the flush last handed to the rescuer ends, until durability reaches it.
    rescuing: Option<Lsn>,
    pub(crate) reclaim: crate::reclaim::ReclaimState,
    pub(crate) stats: LogStats,
    /// When `maintain` last looked at the free space.
    pub(crate) disk_checked_ms: u64,
    /// The preparer's next segment, taken as soon as it was made ([`Log::look_ahead`]).
    early: Option<crate::flusher::Prepared>,
    /// The next segment could not be made (`ENOSPC`): new messages and accounts are
    /// refused while the active segment keeps its room for acknowledgements; tried again
    /// every second from `maintain` (at `next_retry_ms`).
    next_unmakeable: bool,
    next_retry_ms: u64,
}

impl Log {
    pub(crate) fn assemble(
        dir: &Path,
        config: LogConfig,
        lock: DirLock,
        segments: VecDeque<SegState>,
        next_seq: u64,
        index: Index,
        accounts: AHashMap<Box<[u8]>, Account>,
    ) -> Result<Log, StorageError> {
        let shared = Arc::new(Shared::default());
        let preparer = Preparer::start(
            dir.to_owned(),
            config.segment_bytes,
            config.prefault,
            config.background_low_priority,
        )
        .map_err(StorageError::io("start preparer thread", dir))?;
        let flusher = match config.durability {
            Durability::Group => Some(
                Flusher::start(
                    Arc::clone(&shared),
                    Duration::from_micros(config.group_interval_us),
                    dir.to_owned(),
                    config.background_low_priority,
                )
                .map_err(StorageError::io("start flusher thread", dir))?,
            ),
            _ => None,
        };
        let rescuer = match config.durability {
            Durability::Group => Some(
                Rescuer::start(Arc::clone(&shared), dir.to_owned())
                    .map_err(StorageError::io("start flush rescue thread", dir))?,
            ),
            _ => None,
        };
        let mut log = Log {
            dir: dir.to_owned(),
            config,
            _lock: lock,
            segments,
            next_seq,
            index,
            accounts,
            shared,
            flusher,
            rescuer,
            preparer,
            unflushed: 0,
            flush_watch: None,
            rescuing: None,
            reclaim: Default::default(),
            stats: LogStats::default(),
            disk_checked_ms: 0,
            early: None,
            next_unmakeable: false,
            next_retry_ms: 0,
        };
        let active = log.active();
        let end = Lsn::new(active.seg.id, active.used as u32);
        if let Some(f) = &log.flusher {
            let _ = f.tx.send(Activation {
                id: active.seg.id,
                map: active.seg.shared_map(),
                prev_end: None,
            });
        }
        // What recovery found (and any tail it zeroed) is made durable before use. Not
        // in `none` mode, which promises nothing across a machine crash: there, written
        // is durable, and flushing would only make the first open after a busy run
        // wait for the disk to take every page still dirty in the cache.
        if log.config.durability != Durability::None {
            for s in &log.segments {
                s.seg
                    .flush(0, s.used.max(SEGMENT_HEADER_BYTES))
                    .map_err(StorageError::io("msync", &s.seg.path))?;
            }
            log.shared
                .sync_dir_through(&log.dir, active.seg.id)
                .map_err(StorageError::io("sync directory", &log.dir))?;
        }
        log.shared.written.store(end.0, Ordering::Release);
        log.shared.set_durable(end);
        log.preparer.request(SegmentId(active.seg.id.0 + 1));
        log.check_disk();
        Ok(log)
    }

    /// Bytes kept free on the log's filesystem for acknowledgements (erase records):
    /// two segments. Under it new messages and accounts are refused
    /// ([`StorageError::DiskFull`]); erases go on, so recipients can read and the
    /// compaction that follows frees space.
    pub fn disk_reserve(&self) -> u64 {
        2 * self.config.segment_bytes
    }

    /// Looks at the free space (segments are allocated whole when made, so the space
    /// used changes only when a segment is made or deleted, or by other programs).
    pub(crate) fn check_disk(&mut self) {
        if let Ok(free) = crate::segment::free_bytes(&self.dir) {
            self.stats.disk_free_bytes = free;
            self.stats.disk_full = free < self.disk_reserve() || self.next_unmakeable;
        }
    }

    /// Takes the preparer's next segment as soon as it is made, to learn while the active
    /// segment still has room that the next one cannot be made (no room: a quota, or
    /// space `statvfs` counted as free): new messages are refused from then on
    /// (`DiskFull`), so the active segment's room stays for acknowledgements. Asks for it
    /// again every second; the flag drops once one is made. Called by `maintain`.
    pub(crate) fn look_ahead(&mut self, now_ms: u64) {
        if self.early.is_none() {
            if let Ok((id, made)) = self.preparer.rx.try_recv() {
                match made {
                    Err(e) if crate::segment::is_no_space(&e) => {
                        // A retry's failure keeps the retry's schedule.
                        let retry_ms = if self.next_unmakeable {
                            self.next_retry_ms
                        } else {
                            now_ms + 1000
                        };
                        self.no_room_for_next(retry_ms);
                    }
                    made => {
                        let ok = made.is_ok();
                        self.early = Some((id, made));
                        if ok && self.next_unmakeable {
                            self.next_unmakeable = false;
                            self.check_disk();
                        }
                    }
                }
            }
        }
        if self.next_unmakeable && self.early.is_none() && now_ms >= self.next_retry_ms {
            self.next_retry_ms = now_ms + 1000;
            self.preparer.request(SegmentId(self.active().seg.id.0 + 1));
        }
    }

    /// The free space when last looked, and whether it is under the reserve.
    pub fn disk(&self) -> DiskSpace {
        DiskSpace {
            free: self.stats.disk_free_bytes,
            reserve: self.disk_reserve(),
            full: self.stats.disk_full,
        }
    }

    fn refuse_if_disk_full(&self) -> Result<(), StorageError> {
        if self.stats.disk_full {
            return Err(self.disk_full_error());
        }
        Ok(())
    }

    fn disk_full_error(&self) -> StorageError {
        StorageError::DiskFull {
            free: self.stats.disk_free_bytes,
            reserve: self.disk_reserve(),
        }
    }

    /// The next segment could not be made (`ENOSPC`): a full disk until one is made,
    /// the preparer asked again at `retry_ms` (by `maintain`'s clock; 0: at once).
    fn no_room_for_next(&mut self, retry_ms: u64) -> StorageError {
        self.next_unmakeable = true;
        self.next_retry_ms = retry_ms;
        self.stats.disk_full = true;
        self.disk_full_error()
    }

    /// The next segment, made by the writer itself because the preparer is kept from
    /// the CPU: installed under its name at once, not pre-faulted.
    fn made_by_writer(&mut self, next: SegmentId) -> std::io::Result<Segment> {
        self.stats.prepare_takeovers += 1;
        let sync_dir = self.config.durability == Durability::Always;
        Segment::create(&self.dir, next, self.config.segment_bytes, false, sync_dir)
    }

    pub(crate) fn active(&self) -> &SegState {
        self.segments
            .back()
            .expect("a log always has an active segment")
    }

    pub(crate) fn seg_index(&self, id: SegmentId) -> Option<usize> {
        // Appends touch the newest segments: look there first.
        let n = self.segments.len();
        if n > 0 && self.segments[n - 1].seg.id == id {
            return Some(n - 1);
        }
        self.segments.binary_search_by_key(&id, |s| s.seg.id).ok()
    }

    pub(crate) fn seg_mut(&mut self, id: SegmentId) -> Option<&mut SegState> {
        self.seg_index(id).map(|i| &mut self.segments[i])
    }

    /// The record that starts at `at`.
    pub(crate) fn record_at(&self, at: Lsn) -> Option<(Record<'_>, usize)> {
        let s = &self.segments[self.seg_index(at.segment())?];
        // Index entries point at records appended here or verified by recovery.
        decode_verified(&s.seg.bytes()[at.offset() as usize..]).ok()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Changes the group-commit interval while the log runs (a runtime knob): the
    /// flusher uses it from its next sleep. Same bounds as `group_interval_us`.
    pub fn set_group_interval_us(&mut self, us: u64) -> Result<(), crate::ConfigError> {
        let candidate = LogConfig {
            group_interval_us: us,
            ..self.config.clone()
        };
        candidate.validate()?;
        self.config.group_interval_us = us;
        self.shared.interval_us.store(us, Ordering::Relaxed);
        if let Some(f) = &self.flusher {
            f.wake();
        }
        Ok(())
    }

    /// End of the last appended record.
    pub fn written(&self) -> Lsn {
        Lsn(self.shared.written.load(Ordering::Acquire))
    }

    /// Everything before this position survives a machine crash (`group`, `always`) or
    /// a process crash (`none`).
    pub fn durable(&self) -> Lsn {
        self.shared.durable()
    }

    /// Waits until `lsn` is durable; false on timeout or when flushing has failed.
    pub fn wait_durable(&self, lsn: Lsn, timeout: Duration) -> bool {
        self.shared.wait_durable(lsn, timeout)
    }

    /// Flushes everything written now, on this thread.
    pub fn flush(&mut self) -> Result<Lsn, StorageError> {
        let written = self.written();
        let durable = self.durable();
        if written > durable {
            if self.config.durability != Durability::None {
                self.shared
                    .sync_dir_through(&self.dir, written.segment())
                    .map_err(flush_failed(&self.shared, "sync directory", &self.dir))?;
            }
            for (s, from, to) in self.unflushed(durable) {
                s.seg
                    .flush(from, to)
                    .map_err(flush_failed(&self.shared, "msync", &s.seg.path))?;
            }
            self.shared.set_durable(written);
        }
        Ok(written)
    }

    /// Appends one record; returns where it starts and ends. `grows`: a message or an
    /// account (see [`Log::append_with`]).
    pub(crate) fn append(
        &mut self,
        rec: &Record<'_>,
        grows: bool,
    ) -> Result<(Lsn, Lsn), StorageError> {
        self.append_with(rec.encoded_len(), grows, |buf| {
            rec.encode(buf);
        })
    }

    /// Bytes at the end of each segment that a record making the log grow (a message,
    /// an account) takes only once the next segment is ready: when it cannot be made
    /// (no room), new messages are refused and acknowledgements (erase records) still
    /// fit, so recipients read and free space.
    pub fn erase_reserve(&self) -> usize {
        (self.config.segment_bytes as usize / 64).max(4096)
    }

    /// Appends `len` bytes that `write` fills (an encoded record). `grows`: the record
    /// adds to what the log holds (a message, an account), and may cut into the
    /// [`Log::erase_reserve`] only once the next segment is ready.
    pub(crate) fn append_with(
        &mut self,
        len: usize,
        grows: bool,
        write: impl FnOnce(&mut [u8]),
    ) -> Result<(Lsn, Lsn), StorageError> {
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(StorageError::FlushFailed(
                self.shared.failure().unwrap_or_default(),
            ));
        }
        let max = self.config.record_bytes_max();
        if len > max {
            return Err(StorageError::RecordTooLarge { bytes: len, max });
        }
        // A segment's capacity is its file's size (the config may have changed since).
        let seg_bytes = self.active().seg.len();
        let room = seg_bytes.saturating_sub(self.active().used + SEAL_RECORD_BYTES);
        if self.active().sealed || len > room {
            self.roll()?;
        } else if grows && len + self.erase_reserve() > room {
            self.make_room_ahead()?;
        }
        let active = self.segments.back_mut().expect("active");
        let at = active.used;
        write(&mut active.seg.bytes_mut()[at..at + len]);
        active.used += len;
        let id = active.seg.id;
        let start = Lsn::new(id, at as u32);
        let end = Lsn::new(id, (at + len) as u32);
        self.publish(start, end)?;
        Ok((start, end))
    }

    fn publish(&mut self, start: Lsn, end: Lsn) -> Result<(), StorageError> {
        self.shared.written.store(end.0, Ordering::Release);
        match self.config.durability {
            Durability::None => self.shared.durable.store(end.0, Ordering::Release),
            Durability::Group => {
                self.unflushed += 1;
                if self.unflushed >= self.config.group_records {
                    self.unflushed = 0;
                    if let Some(f) = &self.flusher {
                        f.wake();
                    }
                }
            }
            Durability::Always => {
                let s = self.active();
                let from = if start.segment() == end.segment() {
                    start.offset() as usize
                } else {
                    0
                };
                s.seg
                    .flush(from, end.offset() as usize)
                    .map_err(flush_failed(&self.shared, "msync", &s.seg.path))?;
                self.shared.set_durable(end);
            }
        }
        Ok(())
    }

    /// The segment to start as `next`: the preparer's, installed under its name; or,
    /// when the preparer is kept from the CPU while the writer waits for it (it runs at
    /// low priority: [`crate::starve`]), one the writer makes itself, not pre-faulted.
    /// The preparer's late copy is removed when it arrives.
    fn next_segment(&mut self, next: SegmentId) -> Result<Segment, StorageError> {
        let prepared = self.await_prepared(next)?;
        self.install_prepared(next, prepared)
    }

    /// Near the end of the active segment, before a message cuts into the erase
    /// reserve: makes sure the next segment exists (waits for the preparer, or makes it),
    /// or refuses with `DiskFull` when there is no room for it.
    fn make_room_ahead(&mut self) -> Result<(), StorageError> {
        let next = SegmentId(self.active().seg.id.0 + 1);
        if matches!(&self.early, Some((id, Ok(_))) if *id == next) {
            return Ok(());
        }
        let path = self.dir.join(next.file_name());
        let made = match self.await_prepared(next)? {
            Some(made) => made,
            // Installing it again at the roll renames it onto itself.
            None => self.made_by_writer(next),
        };
        match made {
            Ok(seg) => {
                self.early = Some((next, Ok(seg)));
                Ok(())
            }
            Err(e) if crate::segment::is_no_space(&e) => Err(self.no_room_for_next(0)),
            Err(e) => {
                self.preparer.request(next);
                Err(StorageError::io("prepare segment", path)(e))
            }
        }
    }

    /// What the preparer made for `next` (taken early by [`Log::look_ahead`], or waited
    /// for); `None` when it is kept from the CPU while the writer waits.
    fn await_prepared(
        &mut self,
        next: SegmentId,
    ) -> Result<Option<std::io::Result<Segment>>, StorageError> {
        let mut stall: Option<Watch> = None;
        match self.early.take() {
            Some((id, made)) if id == next => return Ok(Some(made)),
            Some((_, Ok(stale))) => stale.discard(),
            _ => {}
        }
        if self.next_unmakeable {
            // The preparer's last try failed and nothing may be on its way: try again.
            self.preparer.request(next);
        }
        let prepared = loop {
            // Not waiting yet: take what is there (a zero timeout receives first).
            let wait = stall.as_ref().map_or(Duration::ZERO, |_| PREPARE_POLL);
            match self.preparer.rx.recv_timeout(wait) {
                // Made by the writer already.
                Ok((id, made)) if id < next => {
                    if let Ok(seg) = made {
                        seg.discard();
                    }
                }
                Ok((id, made)) if id == next => break Some(made),
                Ok((id, made)) => {
                    // Cannot happen (nothing is requested past `next`); refuse rather
                    // than misnumber.
                    if let Ok(seg) = made {
                        seg.discard();
                    }
                    self.preparer.request(next);
                    return Err(StorageError::io("prepare segment", &self.dir)(
                        std::io::Error::other(format!("prepared {id:?}, wanted {next:?}")),
                    ));
                }
                Err(RecvTimeoutError::Timeout) => match &mut stall {
                    None => {
                        self.stats.prepare_stalls += 1;
                        stall = Some(Watch::start());
                    }
                    Some(w) => {
                        let tid = &self.preparer.tid;
                        if w.starved(tid, PREPARE_PATIENCE, PREPARE_FALLBACK) {
                            break None;
                        }
                    }
                },
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(StorageError::io("prepare segment", &self.dir)(
                        std::io::Error::other("preparer thread is gone"),
                    ))
                }
            }
        };
        if let Some(w) = &stall {
            self.stats.prepare_stall_us += w.elapsed().as_micros() as u64;
        }
        Ok(prepared)
    }

    /// Installs what the preparer made for `next` (`None`: it is kept from the CPU, the
    /// writer makes the segment itself).
    fn install_prepared(
        &mut self,
        next: SegmentId,
        prepared: Option<std::io::Result<Segment>>,
    ) -> Result<Segment, StorageError> {
        let sync_dir = self.config.durability == Durability::Always;
        let path = self.dir.join(next.file_name());
        match prepared {
            Some(Ok(mut seg)) => match seg.install(&self.dir, sync_dir) {
                Ok(()) => Ok(seg),
                Err(e) => {
                    seg.discard();
                    self.preparer.request(next);
                    Err(StorageError::io("install prepared segment", path)(e))
                }
            },
            Some(Err(e)) => {
                self.preparer.request(next);
                Err(StorageError::io("prepare segment", path)(e))
            }
            None => self
                .made_by_writer(next)
                .map_err(StorageError::io("create segment", path)),
        }
    }

    /// In `group` mode, hands what is written to the rescue thread (normal priority)
    /// when the flusher has been kept from the CPU (it runs at low priority:
    /// [`crate::starve`]) while a record waited for it longer than four flush intervals
    /// (at least [`FLUSH_PATIENCE_MIN`]): acknowledgements wait for durability, and on a
    /// saturated machine they would wait for seconds. A flusher that is slow because the
    /// disk is (blocked in `msync`, not waiting for a CPU) is left to it, and so is a
    /// rescue still under way. Called by `maintain`; costs the writer no I/O.
    pub(crate) fn help_flusher(&mut self) {
        let Some(rescuer) = &self.rescuer else {
            return;
        };
        let (written, durable) = (self.written(), self.durable());
        if self.rescuing.is_some_and(|r| durable >= r) {
            self.rescuing = None;
        }
        if written <= durable {
            self.flush_watch = None;
            return;
        }
        let tid = &self.shared.flusher_tid;
        let interval = Duration::from_micros(self.shared.interval_us.load(Ordering::Relaxed));
        let patience = (interval * 4).max(FLUSH_PATIENCE_MIN);
        match &mut self.flush_watch {
            Some((wanted, w)) if durable < *wanted => {
                if self.rescuing.is_none() && w.starved(tid, patience, patience * 4) {
                    let ranges = self
                        .unflushed(durable)
                        .map(|(s, from, to)| (s.seg.shared_map(), from, to))
                        .collect();
                    rescuer.hand(FlushJob {
                        ranges,
                        through: written,
                    });
                    self.rescuing = Some(written);
                    self.stats.rescue_flushes += 1;
                    self.flush_watch = None;
                }
            }
            // Nothing watched yet, or the flusher made what was watched durable.
            _ => self.flush_watch = Some((written, Watch::start())),
        }
    }

    /// The segments holding what lies after `durable`, each with the byte range to flush.
    fn unflushed(&self, durable: Lsn) -> impl Iterator<Item = (&SegState, usize, usize)> {
        self.segments
            .iter()
            .filter(move |s| s.seg.id >= durable.segment())
            .map(move |s| {
                let from = if s.seg.id == durable.segment() {
                    durable.offset() as usize
                } else {
                    0
                };
                (s, from, s.used)
            })
    }

    /// Seals the active segment and starts the prepared one.
    fn roll(&mut self) -> Result<(), StorageError> {
        let active = self.segments.back_mut().expect("active");
        let next = SegmentId(active.seg.id.0 + 1);
        if !active.sealed {
            let at = active.used;
            Record::Seal { next }.encode(&mut active.seg.bytes_mut()[at..]);
            active.used += SEAL_RECORD_BYTES;
            active.sealed = true;
            if self.config.durability == Durability::Always {
                active.seg.flush(at, active.used).map_err(flush_failed(
                    &self.shared,
                    "msync",
                    &active.seg.path,
                ))?;
            }
        }
        let prev = (active.seg.id, active.used);
        let mut seg = match self.next_segment(next) {
            Ok(seg) => seg,
            // No room for the next segment (the disk, or a quota `statvfs` does not
            // see): refused as a full disk until `maintain` finds room again, when the
            // next append tries once more.
            // The next `maintain` asks the preparer again.
            Err(StorageError::Io { source, .. }) if crate::segment::is_no_space(&source) => {
                return Err(self.no_room_for_next(0));
            }
            Err(e) => return Err(e),
        };
        let header = SegmentHeader {
            version: FORMAT_VERSION,
            segment: next,
            seq_base: self.next_seq,
            created_unix_ms: unix_ms(),
            segment_bytes: self.config.segment_bytes,
        };
        seg.bytes_mut()[..SEGMENT_HEADER_BYTES].copy_from_slice(&header.encode());
        if self.config.durability == Durability::Always {
            seg.flush(0, SEGMENT_HEADER_BYTES).map_err(flush_failed(
                &self.shared,
                "msync",
                &seg.path,
            ))?;
        }
        if seg.prefaulted {
            self.stats.prefaulted_segments += 1;
        }
        if let Some(f) = &self.flusher {
            let _ = f.tx.send(Activation {
                id: next,
                map: seg.shared_map(),
                prev_end: Some(prev),
            });
        }
        self.segments
            .push_back(SegState::new(seg, SEGMENT_HEADER_BYTES));
        self.stats.rollovers += 1;
        self.preparer.request(SegmentId(next.0 + 1));
        let start = Lsn::new(next, SEGMENT_HEADER_BYTES as u32);
        self.shared.written.store(start.0, Ordering::Release);
        if self.config.durability != Durability::Group {
            self.shared.set_durable(start);
        }
        self.check_disk();
        Ok(())
    }

    /// Stores a message for its recipient. Not deduplicated here: the router does that.
    pub fn append_message(&mut self, m: &NewMessage<'_>) -> Result<Appended, StorageError> {
        self.refuse_if_disk_full()?;
        let body = m.body.len() as u64;
        let c = &self.config;
        let probe = self.index.probe(m.recipient, &Segs(&self.segments));
        let (user_msgs, user_bytes) = (probe.messages, probe.bytes);
        for (limit, now, add, max) in [
            (Limit::UserMessages, user_msgs, 1, c.user_messages_max),
            (Limit::UserBytes, user_bytes, body, c.user_bytes_max),
            (
                Limit::ShardMessages,
                self.index.messages,
                1,
                c.shard_messages_max,
            ),
            (Limit::ShardBytes, self.index.bytes, body, c.shard_bytes_max),
        ] {
            if now + add > max {
                return Err(StorageError::Full { limit, max });
            }
        }
        let seq = MsgSeq(self.next_seq);
        let expiry_ms = m
            .expiry_ms
            .unwrap_or(m.timestamp_ms.saturating_add(self.config.message_ttl_ms));
        let rec = Record::Message(MessageRecord {
            recipient: m.recipient,
            sender: m.sender,
            msg_id: m.msg_id,
            seq,
            timestamp_ms: m.timestamp_ms,
            expiry_ms,
            body: m.body,
        });
        rec.check()?;
        let (start, end) = self.append(&rec, true)?;
        self.next_seq += 1;
        self.index.push(probe, m.recipient, start, body);
        let active = self.segments.back_mut().expect("active");
        active.live_records += 1;
        active.live_bytes += rec.encoded_len() as u64;
        active.min_expiry_ms = active.min_expiry_ms.min(expiry_ms);
        active.add_message(seq);
        self.stats.appends += 1;
        Ok(Appended { seq, lsn: end })
    }

    /// Erases a delivered message. `Ok(None)` when it is not pending (already erased,
    /// expired, or never stored): nothing is written.
    pub fn erase(&mut self, recipient: UserId, seq: MsgSeq) -> Result<Option<Lsn>, StorageError> {
        let Some(at) = self.index.get(recipient, seq, &Segs(&self.segments)) else {
            return Ok(None);
        };
        let rec = Record::Erase {
            recipient,
            seq,
            target: at.segment(),
        };
        let (_, end) = self.append(&rec, false)?;
        self.segments
            .back_mut()
            .expect("active")
            .add_tombstone(rec.killed().expect("a tombstone"));
        self.kill_message(recipient, seq);
        self.stats.erases += 1;
        Ok(Some(end))
    }

    /// Drops a message from the index and its segment's live count.
    pub(crate) fn kill_message(&mut self, recipient: UserId, seq: MsgSeq) {
        let Some(at) = self.index.remove(recipient, seq, &Segs(&self.segments)) else {
            return;
        };
        let rec_bytes = self.record_at(at).map_or(0, |(_, len)| len as u64);
        if let Some(s) = self.seg_mut(at.segment()) {
            s.live_records -= 1;
            s.live_bytes -= rec_bytes;
        }
    }

    /// Stores or replaces an account value.
    pub fn put_account(&mut self, key: &[u8], value: &[u8]) -> Result<Lsn, StorageError> {
        self.refuse_if_disk_full()?;
        if !self.accounts.contains_key(key)
            && self.accounts.len() as u64 >= self.config.accounts_max
        {
            return Err(StorageError::Full {
                limit: Limit::Accounts,
                max: self.config.accounts_max,
            });
        }
        let rec = Record::AccountPut { key, value };
        rec.check()?;
        let (start, end) = self.append(&rec, true)?;
        let len = rec.encoded_len() as u32;
        let old = self.accounts.insert(
            key.into(),
            Account {
                value: value.into(),
                at: start,
                record_bytes: len,
            },
        );
        if let Some(old) = old {
            self.unlive(old.at, old.record_bytes);
        }
        let active = self.segments.back_mut().expect("active");
        active.live_records += 1;
        active.live_bytes += len as u64;
        Ok(end)
    }

    /// Deletes an account. `Ok(None)` when there was none.
    pub fn delete_account(&mut self, key: &[u8]) -> Result<Option<Lsn>, StorageError> {
        let Some(old) = self.accounts.get(key) else {
            return Ok(None);
        };
        let target = old.at.segment();
        let rec = Record::AccountDelete { key, target };
        rec.check()?;
        let (_, end) = self.append(&rec, false)?;
        self.segments
            .back_mut()
            .expect("active")
            .add_tombstone(rec.killed().expect("a tombstone"));
        let old = self.accounts.remove(key).expect("present");
        self.unlive(old.at, old.record_bytes);
        Ok(Some(end))
    }

    fn unlive(&mut self, at: Lsn, bytes: u32) {
        if let Some(s) = self.seg_mut(at.segment()) {
            s.live_records -= 1;
            s.live_bytes -= bytes as u64;
        }
    }

    pub fn account(&self, key: &[u8]) -> Option<&[u8]> {
        self.accounts.get(key).map(|a| &*a.value)
    }

    /// Every account, in no particular order.
    pub fn accounts(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.accounts.iter().map(|(k, a)| (&**k, &*a.value))
    }

    /// A user's pending messages in order, read from the log as the iterator advances.
    /// Messages expired at `now_ms` are skipped.
    pub fn pending(&self, user: UserId, now_ms: u64) -> impl Iterator<Item = StoredMessage<'_>> {
        self.pending_from(user, |_| 0, now_ms)
    }

    /// A user's pending messages with a sequence number above `after`, in order: where a
    /// delivery stream resumes (found by binary search, not by skipping).
    pub fn pending_after(
        &self,
        user: UserId,
        after: MsgSeq,
        now_ms: u64,
    ) -> impl Iterator<Item = StoredMessage<'_>> {
        let segs = Segs(&self.segments);
        self.pending_from(
            user,
            move |q| q.partition_point(|s| s <= after, &segs),
            now_ms,
        )
    }

    fn pending_from(
        &self,
        user: UserId,
        from: impl FnOnce(&crate::index::Queue<'_>) -> usize,
        now_ms: u64,
    ) -> impl Iterator<Item = StoredMessage<'_>> {
        self.index
            .queue(user)
            .map(|q| {
                let i = from(&q);
                q.iter_from(i)
            })
            .into_iter()
            .flatten()
            .filter_map(move |at| self.stored(at, now_ms))
    }

    /// One pending message by its sequence number (`None`: not pending, or expired).
    pub fn get(&self, user: UserId, seq: MsgSeq, now_ms: u64) -> Option<StoredMessage<'_>> {
        self.index
            .get(user, seq, &Segs(&self.segments))
            .and_then(|at| self.stored(at, now_ms))
    }

    /// Users with at least one pending message, in no particular order.
    pub fn users_with_pending(&self) -> impl Iterator<Item = UserId> + '_ {
        self.index.user_ids()
    }

    fn stored(&self, at: Lsn, now_ms: u64) -> Option<StoredMessage<'_>> {
        match self.record_at(at) {
            Some((Record::Message(m), _)) if m.expiry_ms > now_ms => Some(StoredMessage {
                seq: m.seq,
                recipient: m.recipient,
                sender: m.sender,
                msg_id: m.msg_id,
                timestamp_ms: m.timestamp_ms,
                expiry_ms: m.expiry_ms,
                body: m.body,
            }),
            _ => None,
        }
    }

    /// Pending messages and body bytes of a user (expired ones count until swept).
    pub fn pending_count(&self, user: UserId) -> (u64, u64) {
        self.index
            .queue(user)
            .map_or((0, 0), |q| (q.len() as u64, q.bytes(&Segs(&self.segments))))
    }

    /// Pending messages and body bytes in the whole log.
    pub fn pending_total(&self) -> (u64, u64) {
        (self.index.messages, self.index.bytes)
    }

    pub fn stats(&self) -> LogStats {
        let s = &self.shared;
        LogStats {
            segments: self.segments.len() as u64,
            disk_bytes: self.segments.iter().map(|s| s.seg.len() as u64).sum(),
            pending_messages: self.index.messages,
            pending_bytes: self.index.bytes,
            users_with_pending: self.index.users() as u64,
            accounts: self.accounts.len() as u64,
            written: self.written(),
            durable: self.durable(),
            flushes: s.flushes.load(Ordering::Relaxed),
            flush_us_max: s.flush_ns_max.load(Ordering::Relaxed) / 1000,
            flush_us_total: s.flush_ns_total.load(Ordering::Relaxed) / 1000,
            dir_syncs: s.dir_syncs.load(Ordering::Relaxed),
            flush_failed: s.failed.load(Ordering::Relaxed),
            ..self.stats.clone()
        }
    }

    /// Why flushing failed, once it has (see [`LogStats::flush_failed`]).
    pub fn flush_failure(&self) -> Option<String> {
        if !self.shared.failed.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.shared.failure().unwrap_or_default())
    }

    /// Flushes and stops the helper threads; reports a flush failure.
    pub fn close(mut self) -> Result<(), StorageError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), StorageError> {
        if let Some(f) = self.flusher.take() {
            f.stop(&self.shared);
        }
        if let Some(mut r) = self.rescuer.take() {
            r.stop();
        }
        // Before the directory's lock goes (a field dropped after this): the next
        // process to open the log must find the directory as it will stay.
        self.preparer.stop();
        if let Some((_, Ok(staged))) = self.early.take() {
            staged.discard();
        }
        if let Some(why) = self.shared.failure() {
            return Err(StorageError::FlushFailed(why));
        }
        self.flush().map(|_| ())
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("written", &self.written())
            .field("durable", &self.durable())
            .finish_non_exhaustive()
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// The log's segments as the index reads them back.
pub(crate) struct Segs<'a>(pub &'a VecDeque<SegState>);

impl Records for Segs<'_> {
    fn message(&self, at: Lsn) -> (MsgSeq, u64) {
        let Ok(i) = self.0.binary_search_by_key(&at.segment(), |s| s.seg.id) else {
            return (MsgSeq(u64::MAX), 0);
        };
        // Index positions point at records appended here or verified by recovery.
        match decode_verified(&self.0[i].seg.bytes()[at.offset() as usize..]) {
            Ok((Record::Message(m), _)) => (m.seq, m.body.len() as u64),
            // Not a message: the index is wrong; a sequence number nothing asks for.
            _ => (MsgSeq(u64::MAX), 0),
        }
    }
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A flush the writer made failed (`msync`, directory `fsync`): as when the flusher's
/// fails, nothing after the last good flush is durable any more, and the log refuses
/// every append from now on ([`StorageError::FlushFailed`]) instead of pretending.
fn flush_failed<'a>(
    shared: &'a Shared,
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |source| {
        let e = StorageError::Io {
            op,
            path: path.to_owned(),
            source,
        };
        shared.fail(e.to_string());
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flusher::Preparer;
    use std::time::Instant;

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 64 * 1024,
            durability: Durability::Group,
            group_interval_us: 200,
            prefault: false,
            ..LogConfig::default()
        }
    }

    fn append_until_rollovers(log: &mut Log, rollovers: u64, n: &mut u64) {
        let to = UserId::new(3).unwrap();
        while log.stats.rollovers < rollovers {
            *n += 1;
            let m = NewMessage {
                recipient: to,
                sender: to,
                msg_id: *n,
                timestamp_ms: 1,
                expiry_ms: None,
                body: &[7; 500],
            };
            log.append_message(&m).unwrap();
        }
    }

    fn staged(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".prep"))
            .collect();
        names.sort();
        names
    }

    /// A preparer that never answers (its thread unknown, so no scheduler statistics):
    /// the writer waits its fallback patience, then makes the segment itself; the late
    /// staged copy is removed when it comes, and the next one is used as usual.
    #[test]
    fn a_preparer_that_never_answers_is_replaced_and_its_late_segment_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), config(), 1).unwrap();
        let (by_hand, requests, answers) = Preparer::by_hand();
        let mut real = std::mem::replace(&mut log.preparer, by_hand);
        real.stop();
        assert_eq!(staged(dir.path()), Vec::<String>::new());

        let mut n = 0;
        append_until_rollovers(&mut log, 1, &mut n);
        let s = log.stats();
        assert_eq!((s.prepare_stalls, s.prepare_takeovers), (1, 1), "{s:?}");
        assert!(s.prepare_stall_us >= PREPARE_FALLBACK.as_micros() as u64);
        assert_eq!(log.active().seg.id, SegmentId(2));
        assert_eq!(requests.try_recv(), Ok(SegmentId(3)));

        // The preparer's segment 2 comes late, then 3.
        let bytes = log.config.segment_bytes;
        for id in [2, 3] {
            let seg = Segment::stage(dir.path(), SegmentId(id), bytes, false);
            answers.send((SegmentId(id), seg)).unwrap();
        }
        assert_eq!(
            staged(dir.path()),
            ["00000002.seg.prep", "00000003.seg.prep"]
        );
        append_until_rollovers(&mut log, 2, &mut n);
        let s = log.stats();
        assert_eq!((s.prepare_stalls, s.prepare_takeovers), (1, 1), "{s:?}");
        assert_eq!(log.active().seg.id, SegmentId(3));
        assert_eq!(staged(dir.path()), Vec::<String>::new());
        assert!(dir.path().join(SegmentId(3).file_name()).exists());

        // A staged segment left by a crash is removed by recovery.
        drop(Segment::stage(dir.path(), SegmentId(9), bytes, false).unwrap());
        log.close().unwrap();
        let (log, report) = Log::open(dir.path(), config(), 1).unwrap();
        assert!(report.clean(), "{report:?}");
        assert_eq!(report.blank_segments_removed, 1);
        // Only the reopened log's own next segment is staged (or none yet).
        let left = staged(dir.path());
        assert!(left.is_empty() || left == ["00000004.seg.prep"], "{left:?}");
        let to = UserId::new(3).unwrap();
        assert_eq!(log.pending(to, 1).count() as u64, n);
    }

    /// With the flusher gone, `maintain` hands the flush to the rescue thread once a
    /// record has waited past the patience (no scheduler statistics for a thread that
    /// exited: time alone), and not before; the writer itself flushes nothing.
    #[test]
    fn the_rescuer_flushes_when_the_flusher_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), config(), 1).unwrap();
        log.flusher.take().unwrap().stop(&log.shared);
        let flushed_at_stop = log.stats().flushes;
        let to = UserId::new(3).unwrap();
        let m = NewMessage {
            recipient: to,
            sender: to,
            msg_id: 1,
            timestamp_ms: 1,
            expiry_ms: None,
            body: b"hello",
        };
        let lsn = log.append_message(&m).unwrap().lsn;
        let watched = Instant::now();
        log.maintain(1, 0).unwrap();
        log.maintain(1, 0).unwrap();
        if watched.elapsed() < FLUSH_PATIENCE_MIN {
            assert_eq!(log.stats().rescue_flushes, 0);
        }
        // Patience FLUSH_PATIENCE_MIN; without statistics, four times that.
        std::thread::sleep(FLUSH_PATIENCE_MIN * 4);
        log.maintain(1, 0).unwrap();
        assert!(log.wait_durable(lsn, Duration::from_secs(30)));
        let s = log.stats();
        assert_eq!(s.rescue_flushes, 1, "{s:?}");
        assert_eq!(s.flushes, flushed_at_stop + 1, "{s:?}");
        // Nothing more to rescue once durable.
        log.maintain(1, 0).unwrap();
        std::thread::sleep(FLUSH_PATIENCE_MIN * 4);
        log.maintain(1, 0).unwrap();
        assert_eq!(log.stats().rescue_flushes, 1);
        log.close().unwrap();
    }
}
