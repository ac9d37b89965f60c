//! The disk failing under the log, through the fault seam (`storage::fault`): a failed
//! `msync` or directory `fsync` stops durability and every write, saying why; no room
//! for the next segment is a full disk that passes by itself when room returns.
//! Acknowledged (durable) records survive each.

mod common;

use std::time::{Duration, Instant};

use common::{msg, open, small, user, NOW};
use storage::fault::{self, Op};
use storage::{Durability, StorageError};

/// Waits (at most 10 s) for `cond`.
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

const BODY: &[u8] = &[7u8; 1000];

#[test]
fn a_failed_msync_in_the_writer_stops_durability_and_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), &small(Durability::Group));
    let a = log.append_message(&msg(1, 2, 1, b"acknowledged")).unwrap();
    log.flush().unwrap();
    assert!(log.durable() >= a.lsn);
    fault::inject(dir.path(), Op::Msync, libc::EIO, None);
    let b = log
        .append_message(&msg(1, 2, 2, b"not yet durable"))
        .unwrap();
    let e = log.flush().unwrap_err();
    assert!(e.to_string().contains("msync"), "{e}");
    assert!(
        log.durable() < b.lsn,
        "nothing after the fault is reported durable"
    );
    assert!(log.stats().flush_failed);
    assert!(log.flush_failure().unwrap().contains("Input/output error"));
    // Every write is refused now, sends and acknowledgements alike.
    assert!(matches!(
        log.append_message(&msg(1, 2, 3, b"more")),
        Err(StorageError::FlushFailed(_))
    ));
    assert!(matches!(
        log.erase(user(1), a.seq),
        Err(StorageError::FlushFailed(_))
    ));
    assert!(!StorageError::FlushFailed(String::new()).is_retryable());
    assert!(matches!(log.close(), Err(StorageError::FlushFailed(_))));
    // The disk repaired, a restart finds what was acknowledged.
    fault::clear(dir.path());
    let log = open(dir.path(), &small(Durability::Group));
    let pending: Vec<u64> = log.pending(user(1), NOW).map(|m| m.msg_id).collect();
    assert!(pending.contains(&1), "{pending:?}");
}

#[test]
fn a_failed_msync_in_the_flusher_thread_is_seen_by_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), &small(Durability::Group));
    let a = log.append_message(&msg(1, 2, 1, b"acknowledged")).unwrap();
    until("the flusher's first flush", || log.durable() >= a.lsn);
    fault::inject(dir.path(), Op::Msync, libc::EIO, None);
    let b = log.append_message(&msg(1, 2, 2, b"x")).unwrap();
    until("the flusher to fail", || log.flush_failure().is_some());
    assert!(log.durable() < b.lsn);
    assert!(log.stats().flush_failed);
    assert!(matches!(
        log.append_message(&msg(1, 2, 3, b"y")),
        Err(StorageError::FlushFailed(_))
    ));
    fault::clear(dir.path());
}

#[test]
fn a_failed_directory_sync_is_a_failed_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), &small(Durability::Group));
    log.flush().unwrap();
    fault::inject(dir.path(), Op::SyncDir, libc::EIO, None);
    // Into a new segment: its directory entry must be made durable before anything in
    // it is reported durable.
    let first = log.stats().rollovers;
    let mut n = 0;
    while log.stats().rollovers == first {
        n += 1;
        assert!(n < 1000, "no new segment");
        log.append_message(&msg(1, 2, n, BODY)).unwrap();
    }
    let e = log.flush().unwrap_err();
    assert!(e.to_string().contains("sync directory"), "{e}");
    assert!(log.stats().flush_failed);
    assert!(matches!(
        log.append_message(&msg(1, 2, 5000, b"z")),
        Err(StorageError::FlushFailed(_))
    ));
    fault::clear(dir.path());
}

#[test]
fn no_room_for_the_next_segment_is_a_full_disk_until_room_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), &small(Durability::Group));
    let a = log.append_message(&msg(1, 2, 0, b"before")).unwrap();
    fault::inject(dir.path(), Op::CreateSegment, libc::ENOSPC, None);
    // Sends go on until the log learns that the next segment cannot be made: from the
    // preparer's report (`maintain`, each tick of a shard), or, when the active segment
    // fills first, before a message cuts into the last `erase_reserve` bytes. Either
    // way, that room is left for acknowledgements.
    let mut now = NOW;
    let mut n = 1;
    let e = loop {
        assert!(
            n < 5000,
            "every append taken although no segment can be made"
        );
        if n % 7 == 0 {
            log.maintain(now, 1 << 20).unwrap();
        }
        match log.append_message(&msg(1, 2, n, BODY)) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
        now += 1;
    };
    assert!(matches!(e, StorageError::DiskFull { .. }), "{e}");
    assert!(e.is_retryable());
    assert!(log.stats().disk_full && log.disk().full);
    assert!(
        log.put_account(b"k", b"v").is_err(),
        "accounts are refused too"
    );
    // The active segment's room is kept for acknowledgements: recipients read and
    // free space.
    let seqs: Vec<_> = log.pending(user(1), now).map(|m| m.seq).collect();
    assert!(!seqs.is_empty());
    for s in &seqs {
        log.erase(user(1), *s).unwrap();
    }
    log.flush().unwrap();
    // Still no room a second later: still refused, the preparer asked again.
    now += 1_000;
    log.maintain(now, 1 << 20).unwrap();
    assert!(log.disk().full);
    // Room again: within a second of `maintain` new messages are taken, no restart.
    fault::clear(dir.path());
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.disk().full {
        assert!(Instant::now() < deadline, "the log never saw the room");
        now += 100;
        log.maintain(now, 1 << 20).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let before = log.stats().rollovers;
    while log.stats().rollovers < before + 2 {
        n += 1;
        assert!(n < 10_000);
        log.maintain(now, 1 << 20).unwrap();
        log.append_message(&msg(1, 2, n, BODY)).unwrap();
    }
    log.flush().unwrap();
    let _ = a;
    log.close().unwrap();
}
