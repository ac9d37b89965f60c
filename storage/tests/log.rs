//! Behaviour of the log through its public API: appends, reads, erases, accounts,
//! limits, durability, reopen, deletion, compaction, expiry.

mod common;

use std::time::Duration;

use common::*;
use storage::{Durability, Limit, Log, LogConfig, MsgSeq, NewMessage, StorageError};

#[test]
fn messages_survive_reopen_in_order_in_every_durability() {
    for d in [Durability::None, Durability::Group, Durability::Always] {
        let dir = tempfile::tempdir().unwrap();
        let config = small(d);
        let mut expect = vec![];
        {
            let mut log = open(dir.path(), &config);
            for i in 0..300u64 {
                let body = format!("message {i} {}", "x".repeat((i % 400) as usize));
                let a = log
                    .append_message(&msg(2, 1 + i % 3, i, body.as_bytes()))
                    .unwrap();
                assert!(a.lsn <= log.written());
                expect.push((1 + i % 3, i, body.into_bytes()));
            }
            assert_eq!(pending(&log, 2), expect);
            assert_eq!(log.pending_count(user(2)).0, 300);
            log.close().unwrap();
        }
        let log = open(dir.path(), &config);
        assert_eq!(pending(&log, 2), expect, "{d:?}");
        assert!(
            log.stats().segments > 1,
            "300 messages span segments of 64 KiB"
        );
    }
}

#[test]
fn pending_after_and_get_find_by_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), &small(Durability::None));
    let seqs: Vec<_> = (0..10)
        .map(|i| log.append_message(&msg(2, 1, i, b"x")).unwrap().seq)
        .collect();
    log.erase(user(2), seqs[4]).unwrap();
    let after: Vec<u64> = log
        .pending_after(user(2), seqs[2], NOW)
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(after, vec![3, 5, 6, 7, 8, 9]);
    assert_eq!(log.pending_after(user(2), seqs[9], NOW).count(), 0);
    assert_eq!(
        log.pending_after(user(9), storage::MsgSeq(0), NOW).count(),
        0
    );
    assert_eq!(log.get(user(2), seqs[3], NOW).unwrap().msg_id, 3);
    assert!(log.get(user(2), seqs[4], NOW).is_none(), "erased");
    assert!(log.get(user(3), seqs[3], NOW).is_none(), "another user's");
    assert_eq!(log.users_with_pending().collect::<Vec<_>>(), vec![user(2)]);
}

#[test]
fn durable_position_follows_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), &small(Durability::Always));
    let a = log.append_message(&msg(2, 1, 1, b"now")).unwrap();
    assert!(
        log.durable() >= a.lsn,
        "always: durable before the append returns"
    );
    drop(log);

    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), &small(Durability::Group));
    let a = log.append_message(&msg(2, 1, 1, b"soon")).unwrap();
    assert!(
        log.wait_durable(a.lsn, Duration::from_secs(10)),
        "group: the flusher catches up"
    );
    assert!(log.stats().flushes >= 1);
}

#[test]
fn erase_removes_one_message_and_stays_erased_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = small(Durability::None);
    let mut log = open(dir.path(), &config);
    let a = log.append_message(&msg(2, 1, 10, b"first")).unwrap();
    let b = log.append_message(&msg(2, 1, 11, b"second")).unwrap();
    assert!(log.erase(user(2), a.seq).unwrap().is_some());
    assert_eq!(
        log.erase(user(2), a.seq).unwrap(),
        None,
        "second erase writes nothing"
    );
    assert_eq!(
        log.erase(user(3), b.seq).unwrap(),
        None,
        "not that user's message"
    );
    assert_eq!(pending(&log, 2), vec![(1, 11, b"second".to_vec())]);
    drop(log);
    let mut log = open(dir.path(), &config);
    assert_eq!(pending(&log, 2), vec![(1, 11, b"second".to_vec())]);
    log.erase(user(2), b.seq).unwrap();
    assert_eq!(log.pending_total(), (0, 0));
}

#[test]
fn sequence_numbers_never_repeat_even_when_everything_was_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let config = small(Durability::None);
    let mut log = open(dir.path(), &config);
    let mut last = MsgSeq(0);
    for i in 0..2000u64 {
        let a = log.append_message(&msg(2, 1, i, &[7u8; 100])).unwrap();
        log.erase(user(2), a.seq).unwrap();
        last = a.seq;
    }
    while log.maintain(NOW, 1 << 20).unwrap().more {}
    drop(log);
    let mut log = open(dir.path(), &config);
    let a = log.append_message(&msg(2, 1, 0, b"after")).unwrap();
    assert!(a.seq > last, "{:?} after {:?}", a.seq, last);
}

#[test]
fn segments_of_delivered_messages_are_deleted_and_their_bytes_gone() {
    let dir = tempfile::tempdir().unwrap();
    let config = small(Durability::Group);
    let mut log = open(dir.path(), &config);
    let mut seqs = vec![];
    for i in 0..3000u64 {
        let body = format!("SECRET-{i:06}-{}", "p".repeat(80));
        seqs.push(
            log.append_message(&msg(2, 1, i, body.as_bytes()))
                .unwrap()
                .seq,
        );
    }
    let before = segment_files(dir.path());
    assert!(before >= 5, "{before} segments");
    assert!(on_disk(dir.path(), b"SECRET-000001-"));
    for s in seqs {
        log.erase(user(2), s).unwrap();
    }
    log.flush().unwrap();
    let mut deleted = 0;
    for _ in 0..100 {
        let r = log.maintain(NOW, 1 << 20).unwrap();
        deleted += r.segments_deleted;
        if !r.more {
            break;
        }
        log.flush().unwrap();
    }
    assert!(
        deleted as usize >= before - 2,
        "deleted {deleted} of {before}"
    );
    assert!(segment_files(dir.path()) <= 2);
    assert!(
        !on_disk(dir.path(), b"SECRET-000001-"),
        "a delivered message's bytes are still on disk"
    );
    drop(log);
    let log = open(dir.path(), &config);
    assert_eq!(log.pending_total(), (0, 0));
}

/// Runs maintenance until it has nothing left to do (bounded).
fn maintain_all(log: &mut Log) {
    for _ in 0..1000 {
        let r = log.maintain(NOW, 256 * 1024).unwrap();
        log.flush().unwrap();
        if !r.more {
            return;
        }
    }
    panic!("maintenance never finished");
}

/// Appends messages for user 7 (90-byte bodies of `w`, ids from 0) until one opens
/// the second segment; returns their sequence numbers, that last one included.
fn fill_first_segment(log: &mut Log) -> Vec<MsgSeq> {
    let mut seqs = vec![];
    while log.stats().segments < 2 {
        let i = seqs.len() as u64;
        seqs.push(log.append_message(&msg(7, 1, i, &[b'w'; 90])).unwrap().seq);
    }
    seqs
}

/// A message pending for a long time in an old segment must not keep every later
/// erase on disk: an erase is needed only while a segment that may hold a copy of the
/// message it killed exists, and segments written before that message was appended
/// cannot. (Before this rule the log grew without bound under steady traffic while one
/// old message waited.)
#[test]
fn an_old_pending_message_does_not_keep_later_erases_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = small(Durability::Group);
    let mut log = open(dir.path(), &config);
    // Segment 1 is full of messages for a user who never comes back.
    let waiting: Vec<_> = (0..fill_first_segment(&mut log).len() as u64)
        .map(|i| (1, i, vec![b'w'; 90]))
        .collect();
    // Then steady traffic, each message delivered soon: ~60 segments' worth.
    let mut recent = std::collections::VecDeque::new();
    for i in 0..40_000u64 {
        let a = log.append_message(&msg(2, 1, i, &[b'x'; 60])).unwrap();
        recent.push_back(a.seq);
        if recent.len() > 100 {
            log.erase(user(2), recent.pop_front().unwrap()).unwrap();
        }
        if i % 500 == 0 {
            log.maintain(NOW, 256 * 1024).unwrap();
        }
    }
    maintain_all(&mut log);
    let segments = segment_files(dir.path());
    assert!(
        segments <= 5,
        "{segments} segments on disk for 2 segments of live data"
    );
    drop(log);
    let log = open(dir.path(), &config);
    assert_eq!(pending(&log, 7), waiting);
    assert_eq!(pending(&log, 2).len(), 100);
}

/// An erase stays as long as the segment holding the erased message does, even when
/// that message is the last one written into it (the rule compares the segment's
/// highest sequence number with the erased one: `>=`, not `>`).
#[test]
fn an_erase_outlives_nothing_that_holds_a_copy_of_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = small(Durability::Group);
    let mut log = open(dir.path(), &config);
    // Segment 1: messages for a user who never comes back; m is the last one written
    // into it (the append after it opened segment 2).
    let mut seqs = fill_first_segment(&mut log);
    let opener = seqs.pop().unwrap();
    let m_seq = seqs.pop().unwrap();
    log.erase(user(7), opener).unwrap();
    // Erase m now: its tombstone lands in segment 2. Then fill segment 2 and more
    // with traffic that is delivered, so segment 2 holds nothing else live.
    log.erase(user(7), m_seq).unwrap();
    for k in 0..3000u64 {
        let a = log.append_message(&msg(2, 1, k, &[b'x'; 60])).unwrap();
        log.erase(user(2), a.seq).unwrap();
    }
    maintain_all(&mut log);
    drop(log);
    let log = open(dir.path(), &config);
    let got: Vec<_> = log.pending(user(7), NOW).map(|p| p.seq).collect();
    assert!(!got.contains(&m_seq), "an erased message came back");
    assert_eq!(got, seqs);
}

#[test]
fn sparse_segments_are_compacted_and_their_live_messages_kept_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = small(Durability::None);
    let mut log = open(dir.path(), &config);
    let mut keep = vec![];
    for i in 0..4000u64 {
        let body = format!("m{i}-{}", "z".repeat(90));
        if i % 10 == 0 {
            log.append_message(&msg(3, 1, i, body.as_bytes())).unwrap();
            keep.push((1, i, body.into_bytes()));
        } else {
            let a = log.append_message(&msg(2, 1, i, body.as_bytes())).unwrap();
            log.erase(user(2), a.seq).unwrap();
        }
    }
    log.put_account(b"acct", b"v1").unwrap();
    let before = segment_files(dir.path());
    let mut copied = 0;
    for _ in 0..1000 {
        let r = log.maintain(NOW, 256 * 1024).unwrap();
        copied += r.compacted_records;
        if !r.more {
            break;
        }
    }
    let after = segment_files(dir.path());
    assert!(copied > 0, "nothing was compacted");
    assert!(
        after * 3 < before,
        "{before} segments before, {after} after"
    );
    assert_eq!(pending(&log, 3), keep);
    assert_eq!(log.account(b"acct"), Some(&b"v1"[..]));
    drop(log);
    let log = open(dir.path(), &config);
    assert_eq!(
        pending(&log, 3),
        keep,
        "order and content survive compaction and reopen"
    );
    assert_eq!(
        pending(&log, 2),
        vec![],
        "erased messages stay erased after compaction"
    );
}

#[test]
fn expired_messages_are_dropped_and_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = small(Durability::None);
    let mut log = open(dir.path(), &config);
    log.append_message(&NewMessage {
        expiry_ms: Some(NOW + 1000),
        ..msg(2, 1, 1, b"short-lived")
    })
    .unwrap();
    log.append_message(&msg(2, 1, 2, b"default ttl")).unwrap();
    assert_eq!(
        log.pending(user(2), NOW + 1000).count(),
        1,
        "expired is not read"
    );
    let r = log.maintain(NOW + 1000, 1 << 20).unwrap();
    assert_eq!(r.expired, 1);
    assert_eq!(log.pending_count(user(2)).0, 1);
    drop(log);
    // 30 days later the other one has expired too.
    let (log, report) = Log::open(dir.path(), config, NOW + 30 * 24 * 3600 * 1000).unwrap();
    assert_eq!(report.expired, 2);
    assert_eq!(log.pending_total(), (0, 0));
}

#[test]
fn limits_refuse_with_a_clear_error_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        user_messages_max: 3,
        shard_messages_max: 5,
        user_bytes_max: 1 << 20,
        ..small(Durability::None)
    };
    let mut log = open(dir.path(), &config);
    for i in 0..3 {
        log.append_message(&msg(2, 1, i, b"ok")).unwrap();
    }
    let e = log.append_message(&msg(2, 1, 9, b"over")).unwrap_err();
    assert!(
        matches!(
            e,
            StorageError::Full {
                limit: Limit::UserMessages,
                max: 3
            }
        ),
        "{e}"
    );
    assert!(e.is_retryable());
    log.append_message(&msg(4, 1, 0, b"ok")).unwrap();
    log.append_message(&msg(4, 1, 1, b"ok")).unwrap();
    let e = log.append_message(&msg(5, 1, 0, b"over")).unwrap_err();
    assert!(
        matches!(
            e,
            StorageError::Full {
                limit: Limit::ShardMessages,
                ..
            }
        ),
        "{e}"
    );
    let big = vec![0u8; (1 << 20) + 1];
    let e = log.append_message(&msg(6, 1, 0, &big)).unwrap_err();
    assert!(
        e.to_string().contains("limit") || e.to_string().contains("fit"),
        "{e}"
    );
    assert_eq!(log.pending_total().0, 5, "refused appends stored nothing");
    let first = log.pending(user(2), NOW).next().unwrap().seq;
    log.erase(user(2), first).unwrap();
    log.append_message(&msg(2, 1, 9, b"now fits")).unwrap();
    drop(log);
    let log = open(dir.path(), &config);
    assert_eq!(log.pending_total().0, 5);
}

#[test]
fn per_user_bytes_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        user_bytes_max: 1 << 20,
        ..small(Durability::None)
    };
    let mut log = open(dir.path(), &config);
    let chunk = vec![1u8; 16 * 1024];
    for i in 0..64 {
        log.append_message(&msg(2, 1, i, &chunk)).unwrap();
    }
    let e = log.append_message(&msg(2, 1, 99, b"x")).unwrap_err();
    assert!(
        matches!(
            e,
            StorageError::Full {
                limit: Limit::UserBytes,
                ..
            }
        ),
        "{e}"
    );
    log.append_message(&msg(3, 1, 99, b"other user is fine"))
        .unwrap();
}

#[test]
fn accounts_latest_wins_and_deletes_stick() {
    let dir = tempfile::tempdir().unwrap();
    let config = small(Durability::Group);
    let mut log = open(dir.path(), &config);
    log.put_account(b"+1555", b"key-1").unwrap();
    log.put_account(b"+1666", b"key-a").unwrap();
    log.put_account(b"+1555", b"key-2").unwrap();
    assert!(log.delete_account(b"+1666").unwrap().is_some());
    assert_eq!(log.delete_account(b"+1777").unwrap(), None);
    assert_eq!(log.account(b"+1555"), Some(&b"key-2"[..]));
    // Push the accounts into old segments, then compact them forward.
    for i in 0..2000u64 {
        let a = log.append_message(&msg(2, 1, i, &[0u8; 100])).unwrap();
        log.erase(user(2), a.seq).unwrap();
    }
    log.flush().unwrap();
    for _ in 0..200 {
        if !log.maintain(NOW, 1 << 20).unwrap().more {
            break;
        }
        log.flush().unwrap();
    }
    drop(log);
    let log = open(dir.path(), &config);
    assert_eq!(log.account(b"+1555"), Some(&b"key-2"[..]));
    assert_eq!(log.account(b"+1666"), None, "a deleted account came back");
    assert_eq!(log.accounts().count(), 1);
    assert!(segment_files(dir.path()) <= 3);
}

#[test]
fn accounts_limit_and_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        accounts_max: 2,
        ..small(Durability::None)
    };
    let mut log = open(dir.path(), &config);
    log.put_account(b"a", b"1").unwrap();
    log.put_account(b"b", b"1").unwrap();
    log.put_account(b"a", b"2").unwrap(); // replacing is fine at the limit
    let e = log.put_account(b"c", b"1").unwrap_err();
    assert!(matches!(
        e,
        StorageError::Full {
            limit: Limit::Accounts,
            ..
        }
    ));
    assert!(log.put_account(b"", b"1").is_err());
    assert!(log.put_account(b"d", &vec![0u8; 5000]).is_err());
    assert_eq!(log.accounts().count(), 2);
}

#[test]
fn a_second_process_cannot_open_the_same_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = small(Durability::None);
    let _log = open(dir.path(), &config);
    match Log::open(dir.path(), config, NOW) {
        Err(StorageError::Locked(p)) => assert_eq!(p, dir.path()),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened twice"),
    }
}

#[test]
fn a_segment_from_a_newer_format_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let config = small(Durability::None);
    drop(open(dir.path(), &config));
    let path = dir.path().join("00000001.seg");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8] = 9; // format version 9
    let crc = crc32c_of(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    match Log::open(dir.path(), config, NOW) {
        Err(e @ StorageError::NewerFormat { version: 9, .. }) => {
            assert!(e.to_string().contains("upgrade"), "{e}")
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened a newer format"),
    }
}

fn crc32c_of(b: &[u8]) -> u32 {
    // The header checksum is CRC32C; recompute it the slow, independent way.
    let mut crc = !0u32;
    for &byte in b {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn bad_config_is_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1000,
        ..LogConfig::default()
    };
    let e = Log::open(dir.path(), config, NOW).unwrap_err();
    assert!(e.to_string().contains("segment_bytes"), "{e}");
}

#[test]
fn a_changed_segment_size_reads_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small(Durability::None);
    let mut log = open(dir.path(), &config);
    for i in 0..50 {
        log.append_message(&msg(2, 1, i, &[3u8; 200])).unwrap();
    }
    drop(log);
    config.segment_bytes = 128 * 1024;
    let mut log = open(dir.path(), &config);
    for i in 50..1000 {
        log.append_message(&msg(2, 1, i, &[3u8; 200])).unwrap();
    }
    drop(log);
    let log = open(dir.path(), &config);
    assert_eq!(log.pending_count(user(2)).0, 1000);
}

#[test]
fn account_put_after_delete_and_reopen_is_kept() {
    // Found by the model test: put, reopen, delete, reopen, put again.
    let dir = tempfile::tempdir().unwrap();
    let config = small(Durability::Group);
    let mut log = open(dir.path(), &config);
    log.put_account(b"k", b"1").unwrap();
    drop(log);
    let mut log = open(dir.path(), &config);
    log.delete_account(b"k").unwrap();
    drop(log);
    let mut log = open(dir.path(), &config);
    log.put_account(b"k", b"2").unwrap();
    assert_eq!(log.account(b"k"), Some(&b"2"[..]));
    log.maintain(NOW, 1).unwrap();
    assert_eq!(log.account(b"k"), Some(&b"2"[..]));
    drop(log);
    let log = open(dir.path(), &config);
    assert_eq!(log.account(b"k"), Some(&b"2"[..]));
}

#[test]
fn reopening_keeps_appending_to_the_same_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = small(Durability::Group);
    for i in 0..5 {
        let mut log = open(dir.path(), &config);
        log.append_message(&msg(2, 1, i, b"one")).unwrap();
    }
    let log = open(dir.path(), &config);
    assert_eq!(log.stats().segments, 1, "each reopen started a new segment");
    assert_eq!(log.pending_count(user(2)).0, 5);
}
