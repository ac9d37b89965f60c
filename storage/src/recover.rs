//! Opening a log: scan every segment, check every checksum, rebuild the index and the
//! accounts, cut a torn tail, and report what was found.
//!
//! Three phases: (1) open the segment files and read their headers, in order; (2) scan
//! the segments on worker threads (one per core, segments are independent: every
//! record carries its own position, and position is log order); (3) merge: per user,
//! order messages by sequence number, keep the newest copy of each, drop the erased;
//! replay account changes in log order.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ahash::AHashMap;

use crate::config::LogConfig;
use crate::error::StorageError;
use crate::index::{Index, Loaded};
use crate::log::{add_tombstone, unix_ms, Account, Log, SegState};
use crate::record::{
    align8, HeaderError, Record, SegmentHeader, FORMAT_VERSION, MESSAGE_FIXED_BYTES,
    RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::scan::{first_nonzero, End, Item, Scanner};
use crate::segment::{staged_id, DirLock, Segment};
use crate::types::{Lsn, MsgSeq, SegmentId, UserId};

/// At most this many damage notes are kept in a report; the counters are complete.
pub const REPORT_NOTES_MAX: usize = 100;

/// What opening a log found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: u64,
    pub records: u64,
    /// Bytes of valid records read.
    pub bytes: u64,
    pub messages_live: u64,
    pub accounts_live: u64,
    /// Messages found already expired and dropped.
    pub expired: u64,
    /// Damaged ranges skipped between intact records, and their bytes.
    pub skipped_ranges: u64,
    pub skipped_bytes: u64,
    /// Intact records of a newer version or unknown kind, ignored.
    pub unknown_records: u64,
    /// Bytes of a partial last record cut from the end of the log.
    pub torn_bytes_cut: u64,
    pub damaged_headers: u64,
    /// Segment files set aside as unreadable (renamed `*.damaged`).
    pub files_set_aside: u64,
    /// Prepared segments never started, removed.
    pub blank_segments_removed: u64,
    /// Threads that scanned.
    pub scan_threads: u64,
    /// Time scanning the segments (checksums, decoding), and time rebuilding the index
    /// and accounts from what the scan found; both are part of `elapsed`.
    pub scan_elapsed: Duration,
    pub index_elapsed: Duration,
    pub elapsed: Duration,
    /// One line per damage, at most [`REPORT_NOTES_MAX`].
    pub notes: Vec<String>,
}

impl RecoveryReport {
    fn note(&mut self, line: String) {
        if self.notes.len() < REPORT_NOTES_MAX {
            self.notes.push(line);
        }
    }

    /// True when nothing was damaged.
    pub fn clean(&self) -> bool {
        self.skipped_ranges == 0
            && self.torn_bytes_cut == 0
            && self.damaged_headers == 0
            && self.files_set_aside == 0
    }
}

/// Partitions of the scan's output by user hash: the scan writes 256 sequential streams
/// instead of touching a random user's vector per record, and each partition is then
/// grouped by user while it fits the cache.
const PARTITIONS: usize = 256;
const _: () = assert!(BUCKETS.is_power_of_two());

/// A message record seen by the scan (32 bytes; the scan writes one per record).
#[derive(Clone, Copy)]
struct Seen {
    user: UserId,
    seq: MsgSeq,
    at: Lsn,
    body_bytes: u32,
}

const _: () = assert!(std::mem::size_of::<Seen>() == 32);

impl Seen {
    fn record_bytes(&self) -> u64 {
        align8(RECORD_HEADER_BYTES + MESSAGE_FIXED_BYTES + self.body_bytes as usize) as u64
    }
}

/// An account change seen by the scan, replayed in log order after the scan.
enum AccountOp {
    Put { value: Box<[u8]>, record_bytes: u32 },
    Delete,
}

/// What one scanning thread collects.
struct Collected {
    hasher: ahash::RandomState,
    seen: Vec<Vec<Seen>>,
    /// Per segment this thread scanned (its index among the segments, in the order
    /// scanned): where its messages start in each partition of `seen`.
    marks: Vec<(usize, Vec<usize>)>,
    erased: Vec<Vec<(UserId, MsgSeq)>>,
    accounts: Vec<(Lsn, Box<[u8]>, AccountOp)>,
}

impl Collected {
    /// `records` is an estimate (from the segments' sizes) to size the partitions once.
    fn new(records: usize) -> Self {
        let each = records / PARTITIONS + records / PARTITIONS / 8 + 16;
        Collected {
            hasher: hasher(),
            seen: (0..PARTITIONS).map(|_| Vec::with_capacity(each)).collect(),
            marks: Vec::new(),
            erased: (0..PARTITIONS).map(|_| Vec::new()).collect(),
            accounts: Vec::new(),
        }
    }

    fn part(&self, user: UserId) -> usize {
        self.hasher.hash_one(user) as usize % PARTITIONS
    }

    /// The messages of partition `p` per segment: (segment index, its records).
    fn chunks(&self, p: usize) -> impl Iterator<Item = (usize, &[Seen])> {
        let seen = &self.seen[p];
        self.marks
            .iter()
            .enumerate()
            .map(move |(k, (seg, starts))| {
                let end = self.marks.get(k + 1).map_or(seen.len(), |m| m.1[p]);
                (*seg, &seen[starts[p]..end])
            })
    }
}

fn hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(1, 2, 3, 4)
}

/// What scanning one segment found.
#[derive(Default)]
struct SegScan {
    end: End,
    /// Its tombstones' summary, as `SegState::tombstones`, and its highest message
    /// sequence number.
    tombstones: Option<(SegmentId, MsgSeq)>,
    max_seq: MsgSeq,
    records: u64,
    bytes: u64,
    expired: u64,
    unknown: u64,
    skipped: Vec<(usize, usize, String)>,
    /// The earliest expiry of the messages in it, live or not: a lower bound of the
    /// live ones' (which is all the log keeps; an expiry pass makes it exact).
    min_expiry_ms: u64,
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering what is there.
    /// `now_ms` decides which messages have expired.
    pub fn open(
        dir: impl AsRef<Path>,
        config: LogConfig,
        now_ms: u64,
    ) -> Result<(Log, RecoveryReport), StorageError> {
        let started = Instant::now();
        let dir = dir.as_ref();
        config.validate()?;
        std::fs::create_dir_all(dir).map_err(StorageError::io("create directory", dir))?;
        let lock = DirLock::acquire(dir).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => StorageError::Locked(dir.to_owned()),
            _ => StorageError::io("lock", dir.join("LOCK"))(e),
        })?;
        let mut report = RecoveryReport::default();
        let mut files = list_segments(dir, &mut report)?;
        remove_blank_tail(&mut files, config.segment_bytes, &mut report)?;

        // Phase 1: open and check headers, in order.
        let mut segs: Vec<Segment> = Vec::with_capacity(files.len());
        let mut next_seq = 1u64;
        for (id, path) in &files {
            let seg = match Segment::open(path, *id, config.segment_bytes) {
                Ok(seg) => seg,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    set_aside(path, &e, &mut report)?;
                    continue;
                }
                Err(e) => return Err(StorageError::io("open segment", path)(e)),
            };
            match SegmentHeader::decode(seg.bytes()) {
                Ok(h) => {
                    if h.segment != *id {
                        report.damaged_headers += 1;
                        report.note(format!(
                            "{}: header names segment {:?}",
                            path.display(),
                            h.segment
                        ));
                    }
                    next_seq = next_seq.max(h.seq_base);
                }
                Err(HeaderError::Blank)
                    if first_nonzero(&seg.bytes()[SEGMENT_HEADER_BYTES..]).is_none() =>
                {
                    // Blank in the middle of the log: nothing in it, nothing lost.
                    remove_if_there(path)
                        .map_err(StorageError::io("remove blank segment", path))?;
                    report.blank_segments_removed += 1;
                    continue;
                }
                Err(HeaderError::NewerVersion(version)) => {
                    return Err(StorageError::NewerFormat {
                        path: path.clone(),
                        version,
                    });
                }
                Err(e) => {
                    report.damaged_headers += 1;
                    report.note(format!(
                        "{}: {e}; reading its records anyway",
                        path.display()
                    ));
                }
            }
            segs.push(seg);
        }
        report.segments = segs.len() as u64;

        // Phase 2: scan the segments on worker threads.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(segs.len())
            .max(1);
        let estimate = segs
            .iter()
            .map(|s| s.len() / 104)
            .sum::<usize>()
            .min(1 << 28);
        let scan_started = Instant::now();
        // Each thread sizes its partitions for the whole log: threads take segments as
        // they finish, so any one may scan most of them, and growing a partition copies
        // it. Capacity never touched is only address space.
        let (scans, collected) = scan_all(&segs, threads, estimate, now_ms);
        report.scan_threads = threads as u64;
        report.scan_elapsed = scan_started.elapsed();

        // Phase 3: merge, in log order.
        let mut segments: VecDeque<SegState> = VecDeque::with_capacity(segs.len() + 1);
        let n = segs.len();
        for (i, (mut seg, scan)) in segs.into_iter().zip(scans).enumerate() {
            let path = seg.path.clone();
            report.records += scan.records;
            report.bytes += scan.bytes;
            report.expired += scan.expired;
            report.unknown_records += scan.unknown;
            for (offset, len, error) in scan.skipped {
                report.skipped_ranges += 1;
                report.skipped_bytes += len as u64;
                report.note(format!(
                    "{}: skipped {len} bytes at {offset} ({error})",
                    path.display()
                ));
            }
            let end = scan.end;
            let last = i + 1 == n;
            if end.torn_bytes > 0 {
                if last {
                    seg.bytes_mut()[end.offset..end.offset + end.torn_bytes].fill(0);
                    report.torn_bytes_cut += end.torn_bytes as u64;
                    report.note(format!(
                        "{}: cut a torn tail of {} bytes at {}",
                        path.display(),
                        end.torn_bytes,
                        end.offset
                    ));
                } else {
                    report.skipped_ranges += 1;
                    report.skipped_bytes += end.torn_bytes as u64;
                    report.note(format!(
                        "{}: {} damaged bytes after its last record at {}",
                        path.display(),
                        end.torn_bytes,
                        end.offset
                    ));
                }
            }
            let mut st = SegState::new(seg, end.offset);
            st.sealed = end.sealed || !last;
            st.tombstones = scan.tombstones;
            st.max_seq = scan.max_seq;
            st.min_expiry_ms = scan.min_expiry_ms;
            segments.push_back(st);
            next_seq = next_seq.max(scan.max_seq.0 + 1);
        }
        if segments.back().is_none_or(|s| s.sealed) {
            let id = segments
                .back()
                .map_or(SegmentId(1), |s| SegmentId(s.seg.id.0 + 1));
            let mut seg = Segment::create(dir, id, config.segment_bytes, config.prefault, true)
                .map_err(|e| {
                    if crate::segment::is_no_space(&e) {
                        StorageError::NoSpace {
                            dir: dir.to_owned(),
                            needed: config.segment_bytes,
                            free: crate::segment::free_bytes(dir).unwrap_or(0),
                            reserve: 2 * config.segment_bytes,
                        }
                    } else {
                        StorageError::io("create segment", dir.join(id.file_name()))(e)
                    }
                })?;
            let header = SegmentHeader {
                version: FORMAT_VERSION,
                segment: id,
                seq_base: next_seq,
                created_unix_ms: unix_ms(),
                segment_bytes: config.segment_bytes,
            };
            seg.bytes_mut()[..SEGMENT_HEADER_BYTES].copy_from_slice(&header.encode());
            segments.push_back(SegState::new(seg, SEGMENT_HEADER_BYTES));
        }
        let index_started = Instant::now();
        let (index, accounts) = build_index(collected, &mut segments, &mut report);
        report.index_elapsed = index_started.elapsed();
        let log = Log::assemble(dir, config, lock, segments, next_seq, index, accounts)?;
        report.elapsed = started.elapsed();
        Ok((log, report))
    }
}

/// Scans every segment; workers take segments in turn. Returns each segment's scan (in
/// segment order) and each worker's collection.
fn scan_all(
    segs: &[Segment],
    threads: usize,
    estimate: usize,
    now_ms: u64,
) -> (Vec<SegScan>, Vec<Collected>) {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<SegScan>>> = Mutex::new((0..segs.len()).map(|_| None).collect());
    let work = || {
        let mut c = Collected::new(estimate);
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(seg) = segs.get(i) else { break };
            c.marks.push((i, c.seen.iter().map(Vec::len).collect()));
            let scan = scan_segment(seg, now_ms, &mut c);
            results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(scan);
        }
        c
    };
    let collected = if threads <= 1 {
        vec![work()]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("scan thread panicked"))
                .collect()
        })
    };
    let scans = results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|s| s.expect("every segment scanned"))
        .collect();
    (scans, collected)
}

fn scan_segment(seg: &Segment, now_ms: u64, c: &mut Collected) -> SegScan {
    // Map the whole segment in one call rather than a fault per few pages (the scan
    // reads all of it, the last one's empty tail included, to check it is empty).
    seg.populate_read();
    let mut out = SegScan {
        min_expiry_ms: u64::MAX,
        ..SegScan::default()
    };
    let mut scan = Scanner::new(seg.bytes());
    for item in &mut scan {
        match item {
            Item::Record {
                offset,
                len,
                record,
            } => {
                out.records += 1;
                out.bytes += len as u64;
                let at = Lsn::new(seg.id, offset as u32);
                collect(record, at, len, now_ms, &mut out, c);
            }
            Item::Unknown { .. } => out.unknown += 1,
            Item::Skipped { offset, len, error } => {
                out.skipped.push((offset, len, error.to_string()))
            }
        }
    }
    out.end = scan.end().expect("scan finished");
    out
}

fn collect(
    record: Record<'_>,
    at: Lsn,
    len: usize,
    now_ms: u64,
    out: &mut SegScan,
    c: &mut Collected,
) {
    if let Some(killed) = record.killed() {
        add_tombstone(&mut out.tombstones, killed);
    }
    match record {
        Record::Message(m) => {
            out.max_seq = out.max_seq.max(m.seq);
            if m.expiry_ms <= now_ms {
                // Every copy of a message has the same expiry: none of them is kept.
                out.expired += 1;
                return;
            }
            out.min_expiry_ms = out.min_expiry_ms.min(m.expiry_ms);
            let p = c.part(m.recipient);
            debug_assert_eq!(
                len,
                align8(RECORD_HEADER_BYTES + MESSAGE_FIXED_BYTES + m.body.len())
            );
            c.seen[p].push(Seen {
                user: m.recipient,
                seq: m.seq,
                at,
                body_bytes: m.body.len() as u32,
            });
        }
        Record::Erase { recipient, seq, .. } => {
            let p = c.part(recipient);
            c.erased[p].push((recipient, seq));
        }
        Record::AccountPut { key, value } => c.accounts.push((
            at,
            key.into(),
            AccountOp::Put {
                value: value.into(),
                record_bytes: len as u32,
            },
        )),
        Record::AccountDelete { key, .. } => {
            c.accounts.push((at, key.into(), AccountOp::Delete));
        }
        Record::Seal { .. } => {}
    }
}

/// The log's segment files, in id order. Segments staged by the preparer and never
/// started (`*.seg.prep`, left by a crash) are removed on the way.
fn list_segments(
    dir: &Path,
    report: &mut RecoveryReport,
) -> Result<Vec<(SegmentId, PathBuf)>, StorageError> {
    let mut files = vec![];
    for entry in std::fs::read_dir(dir).map_err(StorageError::io("read directory", dir))? {
        let entry = entry.map_err(StorageError::io("read directory", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = SegmentId::from_file_name(name) {
            files.push((id, entry.path()));
        } else if staged_id(name).is_some() {
            let path = entry.path();
            remove_if_there(&path).map_err(StorageError::io("remove staged segment", &path))?;
            report.blank_segments_removed += 1;
        }
    }
    files.sort();
    Ok(files)
}

/// Removes prepared segments at the end of the log that were never started, so that the
/// last segment with data is known before the scan (its torn tail is cut, it is appended to).
fn remove_blank_tail(
    files: &mut Vec<(SegmentId, PathBuf)>,
    min_bytes: u64,
    report: &mut RecoveryReport,
) -> Result<(), StorageError> {
    while let Some((id, path)) = files.last() {
        let seg = match Segment::open(path, *id, min_bytes) {
            Ok(seg) => seg,
            Err(_) => return Ok(()), // the main pass reports it
        };
        let blank = matches!(SegmentHeader::decode(seg.bytes()), Err(HeaderError::Blank))
            && first_nonzero(&seg.bytes()[SEGMENT_HEADER_BYTES..]).is_none();
        if !blank {
            return Ok(());
        }
        drop(seg);
        remove_if_there(path).map_err(StorageError::io("remove blank segment", path))?;
        report.blank_segments_removed += 1;
        files.pop();
    }
    Ok(())
}

/// Removes a file; one already gone is fine.
fn remove_if_there(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn set_aside(
    path: &Path,
    why: &io::Error,
    report: &mut RecoveryReport,
) -> Result<(), StorageError> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".damaged");
    std::fs::rename(path, &aside).map_err(StorageError::io("set aside damaged segment", path))?;
    report.files_set_aside += 1;
    report.note(format!("{}: {why}; renamed to *.damaged", path.display()));
    Ok(())
}

/// One partition's output from every scanning thread: its messages per segment, in
/// log order, and its erases.
struct Partition<'a> {
    chunks: Vec<&'a [Seen]>,
    erased: Vec<(UserId, MsgSeq)>,
}

/// Buckets of finished queues, by the top bits of [`Index::order_key`]: the index adds
/// them bucket by bucket, so in table order.
const BUCKETS: usize = 256;

fn bucket(index: &Index, user: UserId) -> usize {
    (index.order_key(user) >> (64 - BUCKETS.trailing_zeros())) as usize
}

/// What one thread made of its partitions: each user's queue, in [`BUCKETS`] buckets,
/// and per segment (in `ids` order) the live records
/// and bytes.
struct Resolved {
    queues: Vec<Vec<Loaded>>,
    live: Vec<(u64, u64)>,
}

/// Per user: order by sequence number, keep the newest copy of each message (compaction
/// made the later ones), drop the erased.
///
/// A partition's messages are grouped by user with a counting sort over the records in
/// log order: one small hash lookup per record, no allocation per user. In log order a
/// user's messages are already in sequence order unless compaction moved some, so the
/// sort by sequence number is mostly a check.
fn resolve(parts: Vec<Partition<'_>>, ids: &[SegmentId], index: &Index) -> Resolved {
    let mut out = Resolved {
        queues: (0..BUCKETS).map(|_| Vec::new()).collect(),
        live: vec![(0, 0); ids.len()],
    };
    let first = ids.first().map_or(0, |id| id.0);
    let seg_pos = |id: SegmentId| match ids.get(id.0.wrapping_sub(first) as usize) {
        Some(&at) if at == id => id.0 as usize - first as usize,
        _ => ids.binary_search(&id).expect("record from a known segment"),
    };
    let mut local: AHashMap<UserId, u32> = AHashMap::new();
    let mut users: Vec<UserId> = Vec::new();
    let mut next: Vec<usize> = Vec::new();
    let mut which: Vec<u32> = Vec::new();
    let mut grouped: Vec<Seen> = Vec::new();
    let mut positions: Vec<Lsn> = Vec::new();
    let n_parts = parts.len();
    for (k, Partition { chunks, mut erased }) in parts.into_iter().enumerate() {
        local.clear();
        users.clear();
        next.clear();
        which.clear();
        for m in chunks.iter().flat_map(|c| c.iter()) {
            let i = *local.entry(m.user).or_insert_with(|| {
                users.push(m.user);
                next.push(0);
                (users.len() - 1) as u32
            });
            next[i as usize] += 1;
            which.push(i);
        }
        // Counts to starts.
        let mut sum = 0;
        for n in next.iter_mut() {
            let c = *n;
            *n = sum;
            sum += c;
        }
        let Some(&fill) = chunks.iter().flat_map(|c| c.iter()).next() else {
            continue; // no messages: erases alone leave nothing pending
        };
        grouped.clear();
        grouped.resize(sum, fill);
        for (m, &i) in chunks.iter().flat_map(|c| c.iter()).zip(&which) {
            grouped[next[i as usize]] = *m;
            next[i as usize] += 1;
        }
        // `next[i]` is now where user `i`'s records end.
        if k == 0 {
            // Users spread evenly over partitions and buckets (both by hash): size the
            // buckets once from the first partition rather than growing them.
            let each = users.len() * n_parts / BUCKETS;
            for b in &mut out.queues {
                b.reserve(each + each / 8 + 4);
            }
        }
        erased.sort_unstable();
        let mut start = 0;
        for (&user, &end) in users.iter().zip(&next) {
            let seen = &mut grouped[start..end];
            start = end;
            if !seen.is_sorted_by(|a, b| (a.seq, a.at) < (b.seq, b.at)) {
                seen.sort_unstable_by_key(|m| (m.seq, m.at));
            }
            let from = erased.partition_point(|e| e.0 < user);
            let to = from + erased[from..].partition_point(|e| e.0 == user);
            let mut erased = erased[from..to].iter().map(|e| e.1).peekable();
            positions.clear();
            let mut bytes = 0;
            for (i, m) in seen.iter().enumerate() {
                if seen.get(i + 1).is_some_and(|n| n.seq == m.seq) {
                    continue; // an older copy
                }
                while erased.next_if(|&e| e < m.seq).is_some() {}
                if erased.peek() == Some(&m.seq) {
                    continue;
                }
                let l = &mut out.live[seg_pos(m.at.segment())];
                l.0 += 1;
                l.1 += m.record_bytes();
                bytes += m.body_bytes as u64;
                positions.push(m.at);
            }
            if !positions.is_empty() {
                out.queues[bucket(index, user)].push(Loaded::new(user, &positions, bytes));
            }
        }
    }
    out
}

/// Messages: [`resolve`] on threads, then the index and each segment's live counts.
/// Accounts: replay puts and deletes in log order.
fn build_index(
    collected: Vec<Collected>,
    segments: &mut VecDeque<SegState>,
    report: &mut RecoveryReport,
) -> (Index, AHashMap<Box<[u8]>, Account>) {
    let pos = |segments: &VecDeque<SegState>, id: SegmentId| {
        segments
            .binary_search_by_key(&id, |s| s.seg.id)
            .expect("record from a known segment")
    };
    // The partitions are independent (a user's records are all in one): threads sort
    // and filter them and build the users' queues, then this one adds them to the
    // index and the segments' counts.
    let ids: Vec<SegmentId> = segments.iter().map(|s| s.seg.id).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let mut work: Vec<Vec<Partition<'_>>> = (0..threads).map(|_| Vec::new()).collect();
    for p in 0..PARTITIONS {
        let mut chunks: Vec<(usize, &[Seen])> =
            collected.iter().flat_map(|c| c.chunks(p)).collect();
        chunks.sort_unstable_by_key(|c| c.0);
        work[p % threads].push(Partition {
            chunks: chunks.into_iter().map(|c| c.1).collect(),
            erased: collected
                .iter()
                .flat_map(|c| c.erased[p].iter().copied())
                .collect(),
        });
    }
    let mut index = Index::default();
    let done: Vec<Resolved> = if threads == 1 {
        work.into_iter().map(|w| resolve(w, &ids, &index)).collect()
    } else {
        std::thread::scope(|sc| {
            let (ids, index) = (&ids, &index);
            let handles: Vec<_> = work
                .into_iter()
                .map(|w| sc.spawn(move || resolve(w, ids, index)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("index thread panicked"))
                .collect()
        })
    };
    index.reserve(done.iter().flat_map(|r| &r.queues).map(Vec::len).sum());
    for r in &done {
        for (s, &(records, bytes)) in segments.iter_mut().zip(&r.live) {
            s.live_records += records;
            s.live_bytes += bytes;
        }
    }
    // In table order, bucket by bucket across the threads' results.
    let mut done: Vec<_> = done.into_iter().map(|r| r.queues.into_iter()).collect();
    for _ in 0..BUCKETS {
        for r in &mut done {
            for q in r.next().expect("a queue per bucket") {
                index.insert_loaded(q);
            }
        }
    }
    report.messages_live = index.messages;
    let mut account_ops: Vec<_> = collected.into_iter().flat_map(|c| c.accounts).collect();
    account_ops.sort_unstable_by_key(|(at, _, _)| *at);
    let mut accounts: AHashMap<Box<[u8]>, Account> = AHashMap::new();
    for (at, key, op) in account_ops {
        match op {
            AccountOp::Put {
                value,
                record_bytes,
            } => {
                accounts.insert(
                    key,
                    Account {
                        value,
                        at,
                        record_bytes,
                    },
                );
            }
            AccountOp::Delete => {
                accounts.remove(&key);
            }
        }
    }
    report.accounts_live = accounts.len() as u64;
    for a in accounts.values() {
        let i = pos(segments, a.at.segment());
        let s = &mut segments[i];
        s.live_records += 1;
        s.live_bytes += a.record_bytes as u64;
    }
    (index, accounts)
}
