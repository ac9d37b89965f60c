//! Torn and damaged segments: truncate, flip or zero bytes at random places; recovery
//! keeps every intact record, reports the damage, and the log stays usable.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use storage::record::{align8, MESSAGE_FIXED_BYTES, RECORD_HEADER_BYTES};
use storage::{Durability, Log, LogConfig, Lsn};

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn config() -> LogConfig {
    small(Durability::None)
}

/// Writes a log of messages; returns, per message id, its recipient, where its record
/// lies (segment file, byte range of the checksummed part) and its body.
fn build(dir: &Path) -> BTreeMap<u64, (u64, String, std::ops::Range<usize>, Vec<u8>)> {
    let mut log = open(dir, &config());
    let mut out = BTreeMap::new();
    for id in 1..=1500u64 {
        let body: Vec<u8> = (0..(id * 37 % 200) as usize)
            .map(|i| (i as u64 ^ id) as u8 | 1)
            .collect();
        let to = 1 + id % 4;
        let a = log.append_message(&msg(to, 9, id, &body)).unwrap();
        let framed = RECORD_HEADER_BYTES + MESSAGE_FIXED_BYTES + body.len();
        let end = a.lsn.offset() as usize;
        let start = end - align8(framed);
        let file = storage::SegmentId(a.lsn.segment().0).file_name();
        out.insert(id, (to, file, start..start + framed, body));
    }
    log.close().unwrap();
    out
}

fn recovered(log: &Log) -> BTreeMap<u64, Vec<u8>> {
    (1..=4)
        .flat_map(|to| {
            log.pending(user(to), NOW)
                .map(|m| (m.msg_id, m.body.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Flip { at: usize },
    Zero { at: usize, len: usize },
    Truncate { at: usize },
}

#[test]
fn random_damage_keeps_every_intact_record_and_is_reported() {
    let pristine = tempfile::tempdir().unwrap();
    let records = build(pristine.path());
    let mut files: Vec<String> = records.values().map(|r| r.1.clone()).collect();
    files.sort();
    files.dedup();
    assert!(files.len() >= 3, "{} segments", files.len());
    let mut rng = Rng(0x5EED_1234_ABCD);
    for trial in 0..60 {
        let dir = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(pristine.path()).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
        }
        // Damage 1–3 places of one segment (the last one for truncation).
        let mut damage = vec![];
        let file = files[rng.below(files.len() as u64) as usize].clone();
        let path = dir.path().join(&file);
        let mut bytes = std::fs::read(&path).unwrap();
        let used = records
            .values()
            .filter(|r| r.1 == file)
            .map(|r| r.2.end)
            .max()
            .unwrap();
        for _ in 0..1 + rng.below(3) {
            let at = 64 + rng.below((used.min(bytes.len()) - 64) as u64) as usize;
            let d = match rng.below(3) {
                0 => Damage::Flip { at },
                1 => Damage::Zero {
                    at,
                    len: 1 + rng.below(300) as usize,
                },
                _ if file == *files.last().unwrap() => Damage::Truncate { at },
                _ => Damage::Flip { at },
            };
            match d {
                Damage::Flip { at } => bytes[at] ^= 1 << rng.below(8),
                Damage::Zero { at, len } => {
                    let end = (at + len).min(bytes.len());
                    bytes[at..end].fill(0)
                }
                Damage::Truncate { at } => bytes.truncate(at),
            }
            damage.push(d);
        }
        std::fs::write(&path, &bytes).unwrap();
        let pristine_bytes = std::fs::read(pristine.path().join(&file)).unwrap();

        let (mut log, report) = Log::open(dir.path(), config(), NOW)
            .unwrap_or_else(|e| panic!("trial {trial}: {damage:?}: refused to open: {e}"));
        let got = recovered(&log);
        let cut = damage.iter().find_map(|d| match d {
            Damage::Truncate { at } => Some(*at),
            _ => None,
        });
        let mut damaged_records = 0;
        for (id, (_to, f, range, body)) in &records {
            let intact = *f != file
                || (pristine_bytes[range.clone()] == bytes.get(range.clone()).unwrap_or(&[])[..]
                    && cut.is_none_or(|c| range.end <= c));
            if intact {
                assert_eq!(
                    got.get(id),
                    Some(body),
                    "trial {trial}: {damage:?}: intact message {id} lost; {report:?}"
                );
            } else {
                damaged_records += 1;
                if let Some(b) = got.get(id) {
                    assert_eq!(b, body, "trial {trial}: a damaged record came back altered");
                }
            }
        }
        if damaged_records > 0 {
            assert!(!report.clean(), "trial {trial}: {damage:?} damaged {damaged_records} records, report is clean: {report:?}");
            assert!(!report.notes.is_empty());
        }
        // The log stays usable after recovery: append, reopen, read back.
        let a = log
            .append_message(&msg(1, 9, 99_999, b"after damage"))
            .unwrap();
        assert!(a.lsn > Lsn::default());
        drop(log);
        let (log, _) = Log::open(dir.path(), config(), NOW).unwrap();
        assert!(
            log.pending(user(1), NOW).any(|m| m.msg_id == 99_999),
            "trial {trial}"
        );
    }
}

#[test]
fn a_damaged_segment_header_is_reported_and_its_records_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let records = build(dir.path());
    let path = dir.path().join("00000001.seg");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let (log, report) = Log::open(dir.path(), config(), NOW).unwrap();
    assert_eq!(report.damaged_headers, 1, "{report:?}");
    assert_eq!(recovered(&log).len(), records.len());
}

#[test]
fn a_torn_last_record_is_cut_and_overwritten_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let records = build(dir.path());
    let (_, (_, file, range, _)) = records.iter().next_back().unwrap();
    let path = dir.path().join(file);
    let mut bytes = std::fs::read(&path).unwrap();
    // The last record half written: its second half never reached the page cache.
    let mid = range.start + (range.end - range.start) / 2;
    bytes[mid..range.end].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let (mut log, report) = Log::open(dir.path(), config(), NOW).unwrap();
    assert!(
        report.torn_bytes_cut > 0 && report.skipped_ranges == 0,
        "{report:?}"
    );
    assert_eq!(recovered(&log).len(), records.len() - 1);
    log.append_message(&msg(2, 9, 77_777, b"x")).unwrap();
    drop(log);
    let (log, report) = Log::open(dir.path(), config(), NOW).unwrap();
    assert!(
        report.clean(),
        "the cut tail was zeroed, so nothing stale follows: {report:?}"
    );
    assert_eq!(recovered(&log).len(), records.len());
}

#[test]
fn a_segment_file_cut_to_a_few_bytes_does_not_stop_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let records = build(dir.path());
    let first = dir.path().join("00000001.seg");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .set_len(13)
        .unwrap();
    let (log, report) = Log::open(dir.path(), config(), NOW).unwrap();
    assert!(!report.clean(), "{report:?}");
    let kept = recovered(&log).len();
    let in_first = records.values().filter(|r| r.1 == "00000001.seg").count();
    assert_eq!(kept, records.len() - in_first);
}
