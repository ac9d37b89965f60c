//! Opening a log: scan every segment, check every checksum, rebuild the index and the
//! accounts, cut a torn tail, and report what was found.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ahash::AHashMap;

use crate::config::LogConfig;
use crate::error::StorageError;
use crate::index::{Entry, Index};
use crate::log::{unix_ms, Account, Log, SegState};
use crate::record::{HeaderError, Record, SegmentHeader, FORMAT_VERSION, SEGMENT_HEADER_BYTES};
use crate::scan::{first_nonzero, Item, Scanner};
use crate::segment::{DirLock, Segment};
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
        self.skipped_ranges == 0 && self.torn_bytes_cut == 0 && self.damaged_headers == 0 && self.files_set_aside == 0
    }
}

struct LiveMsg {
    user: UserId,
    at: Lsn,
    record_bytes: u32,
    body_bytes: u32,
    expiry_ms: u64,
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering what is there.
    /// `now_ms` decides which messages have expired.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig, now_ms: u64) -> Result<(Log, RecoveryReport), StorageError> {
        let started = Instant::now();
        let dir = dir.as_ref();
        config.validate()?;
        std::fs::create_dir_all(dir).map_err(StorageError::io("create directory", dir))?;
        let lock = DirLock::acquire(dir).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => StorageError::Locked(dir.to_owned()),
            _ => StorageError::io("lock", dir.join("LOCK"))(e),
        })?;
        let mut report = RecoveryReport::default();
        let mut files = list_segments(dir)?;
        remove_blank_tail(&mut files, config.segment_bytes, &mut report)?;
        let mut live: AHashMap<MsgSeq, LiveMsg> = AHashMap::new();
        let mut accounts: AHashMap<Box<[u8]>, Account> = AHashMap::new();
        let mut segments: VecDeque<SegState> = VecDeque::new();
        let mut next_seq = 1u64;
        for (i, (id, path)) in files.iter().enumerate() {
            let last = i + 1 == files.len();
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
                        report.note(format!("{}: header names segment {:?}", path.display(), h.segment));
                    }
                    next_seq = next_seq.max(h.seq_base);
                }
                Err(HeaderError::Blank) if first_nonzero(&seg.bytes()[SEGMENT_HEADER_BYTES..]).is_none() => {
                    // Blank in the middle of the log: nothing in it, nothing lost.
                    std::fs::remove_file(path).map_err(StorageError::io("remove blank segment", path))?;
                    report.blank_segments_removed += 1;
                    continue;
                }
                Err(HeaderError::NewerVersion(version)) => {
                    return Err(StorageError::NewerFormat { path: path.clone(), version });
                }
                Err(e) => {
                    report.damaged_headers += 1;
                    report.note(format!("{}: {e}; reading its records anyway", path.display()));
                }
            }
            report.segments += 1;
            let mut st = SegState::new(seg, SEGMENT_HEADER_BYTES);
            let mut tombstone = None;
            let end = {
                let mut scan = Scanner::new(st.seg.bytes());
                for item in &mut scan {
                    match item {
                        Item::Record { offset, len, record } => {
                            report.records += 1;
                            report.bytes += len as u64;
                            let at = Lsn::new(*id, offset as u32);
                            next_seq = apply(record, at, len, now_ms, &mut tombstone, &mut live, &mut accounts, &mut report, next_seq);
                        }
                        Item::Unknown { .. } => report.unknown_records += 1,
                        Item::Skipped { offset, len, error } => {
                            report.skipped_ranges += 1;
                            report.skipped_bytes += len as u64;
                            report.note(format!("{}: skipped {len} bytes at {offset} ({error})", path.display()));
                        }
                    }
                }
                scan.end().expect("scan finished")
            };
            st.tombstone_target = tombstone;
            st.used = end.offset;
            st.sealed = end.sealed || !last;
            if end.torn_bytes > 0 {
                if last {
                    st.seg.bytes_mut()[end.offset..end.offset + end.torn_bytes].fill(0);
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
            segments.push_back(st);
        }
        if segments.back().is_none_or(|s| s.sealed) {
            let id = segments.back().map_or(SegmentId(1), |s| SegmentId(s.seg.id.0 + 1));
            let mut seg = Segment::create(dir, id, config.segment_bytes, false)
                .map_err(StorageError::io("create segment", dir.join(id.file_name())))?;
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
        let index = build_index(live, &accounts, &mut segments, &mut report);
        let log = Log::assemble(dir, config, lock, segments, next_seq, index, accounts)?;
        report.elapsed = started.elapsed();
        Ok((log, report))
    }
}

fn list_segments(dir: &Path) -> Result<Vec<(SegmentId, PathBuf)>, StorageError> {
    let mut files = vec![];
    for entry in std::fs::read_dir(dir).map_err(StorageError::io("read directory", dir))? {
        let entry = entry.map_err(StorageError::io("read directory", dir))?;
        if let Some(id) = entry.file_name().to_str().and_then(SegmentId::from_file_name) {
            files.push((id, entry.path()));
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
        std::fs::remove_file(path).map_err(StorageError::io("remove blank segment", path))?;
        report.blank_segments_removed += 1;
        files.pop();
    }
    Ok(())
}

fn set_aside(path: &Path, why: &io::Error, report: &mut RecoveryReport) -> Result<(), StorageError> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".damaged");
    std::fs::rename(path, &aside).map_err(StorageError::io("set aside damaged segment", path))?;
    report.files_set_aside += 1;
    report.note(format!("{}: {why}; renamed to *.damaged", path.display()));
    Ok(())
}

/// Replays one record; returns the next message sequence number.
#[allow(clippy::too_many_arguments)] // one call site, the recovery loop's state
fn apply(
    record: Record<'_>,
    at: Lsn,
    len: usize,
    now_ms: u64,
    tombstone: &mut Option<SegmentId>,
    live: &mut AHashMap<MsgSeq, LiveMsg>,
    accounts: &mut AHashMap<Box<[u8]>, Account>,
    report: &mut RecoveryReport,
    next_seq: u64,
) -> u64 {
    match record {
        Record::Message(m) => {
            if m.expiry_ms <= now_ms {
                report.expired += 1;
                live.remove(&m.seq);
            } else {
                // A later copy (compaction moved it) replaces the earlier one.
                live.insert(
                    m.seq,
                    LiveMsg {
                        user: m.recipient,
                        at,
                        record_bytes: len as u32,
                        body_bytes: m.body.len() as u32,
                        expiry_ms: m.expiry_ms,
                    },
                );
            }
            return next_seq.max(m.seq.0 + 1);
        }
        Record::Erase { seq, target, .. } => {
            live.remove(&seq);
            *tombstone = (*tombstone).max(Some(target));
        }
        Record::AccountPut { key, value } => {
            accounts.insert(
                key.into(),
                Account {
                    value: value.into(),
                    at,
                    record_bytes: len as u32,
                },
            );
        }
        Record::AccountDelete { key, target } => {
            accounts.remove(key);
            *tombstone = (*tombstone).max(Some(target));
        }
        Record::Seal { .. } => {}
    }
    next_seq
}

fn build_index(
    live: AHashMap<MsgSeq, LiveMsg>,
    accounts: &AHashMap<Box<[u8]>, Account>,
    segments: &mut VecDeque<SegState>,
    report: &mut RecoveryReport,
) -> Index {
    let pos = |segments: &VecDeque<SegState>, id: SegmentId| {
        segments.binary_search_by_key(&id, |s| s.seg.id).expect("record from a known segment")
    };
    let mut per_user: AHashMap<UserId, Vec<(Entry, u64)>> = AHashMap::new();
    report.messages_live = live.len() as u64;
    for (seq, m) in live {
        let i = pos(segments, m.at.segment());
        let s = &mut segments[i];
        s.live_records += 1;
        s.live_bytes += m.record_bytes as u64;
        s.min_expiry_ms = s.min_expiry_ms.min(m.expiry_ms);
        per_user
            .entry(m.user)
            .or_default()
            .push((Entry { seq, at: m.at }, m.body_bytes as u64));
    }
    report.accounts_live = accounts.len() as u64;
    for a in accounts.values() {
        let i = pos(segments, a.at.segment());
        let s = &mut segments[i];
        s.live_records += 1;
        s.live_bytes += a.record_bytes as u64;
    }
    let mut index = Index::default();
    for (user, entries) in per_user {
        index.load(user, entries);
    }
    index
}
