//! Helpers shared by the storage integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;

use storage::{Durability, Log, LogConfig, NewMessage, UserId};

pub const NOW: u64 = 1_800_000_000_000;

pub fn user(n: u64) -> UserId {
    UserId::new(n).expect("valid user")
}

pub fn small(durability: Durability) -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        durability,
        group_interval_us: 200,
        prefault: false,
        ..LogConfig::default()
    }
}

pub fn open(dir: &Path, config: &LogConfig) -> Log {
    let (log, report) = Log::open(dir, config.clone(), NOW).expect("open");
    assert!(report.clean(), "unexpected damage: {report:?}");
    log
}

pub fn msg<'a>(to: u64, from: u64, id: u64, body: &'a [u8]) -> NewMessage<'a> {
    NewMessage {
        recipient: user(to),
        sender: user(from),
        msg_id: id,
        timestamp_ms: NOW,
        expiry_ms: None,
        body,
    }
}

/// (sender, msg_id, body) of a user's pending messages, in order.
pub fn pending(log: &Log, to: u64) -> Vec<(u64, u64, Vec<u8>)> {
    log.pending(user(to), NOW)
        .map(|m| (m.sender.get(), m.msg_id, m.body.to_vec()))
        .collect()
}

/// Started segment files in a directory (the preparer's blank next segment, which may or
/// may not exist yet, is not counted).
pub fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".seg"))
        .filter(|p| {
            std::fs::read(p)
                .unwrap()
                .starts_with(&storage::record::SEGMENT_MAGIC)
        })
        .count()
}

/// Whether any file in `dir` contains `needle`.
pub fn on_disk(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        bytes.windows(needle.len()).any(|w| w == needle)
    })
}

/// The kernel thread ids of this process's threads named `name` (Linux).
pub fn threads_named(name: &str) -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .map(|t| t.file_name().to_string_lossy().parse().unwrap())
        .collect()
}
