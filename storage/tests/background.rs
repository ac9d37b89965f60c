//! The log's background threads run at a lower CPU priority unless told otherwise
//! (`LogConfig::background_low_priority`).
#![cfg(target_os = "linux")]

mod common;

use common::threads_named;
use storage::{Durability, Log, LogConfig};

/// The tests of this file take turns: the first counts the log threads of the whole
/// process, and another test's log would be counted too.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// The scheduling policy and nice value of every thread of this process named `name`.
fn priorities(name: &str) -> Vec<(i32, i32)> {
    threads_named(name)
        .into_iter()
        .map(|tid| {
            // SAFETY: queries about a thread of this process.
            let policy = unsafe { libc::sched_getscheduler(tid) };
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) };
            (policy, nice)
        })
        .collect()
}

#[test]
fn the_flusher_and_the_preparer_run_at_nice_10_by_default_and_normal_when_asked() {
    let _turn = turn();
    for (low, nice) in [(true, 10), (false, 0)] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 1 << 20,
            durability: Durability::Group,
            prefault: false,
            background_low_priority: low,
            ..LogConfig::default()
        };
        let (log, _) = Log::open(dir.path(), config, 1_700_000_000_000).unwrap();
        // The threads set their priority first thing: wait until both have started. The
        // rescue thread, which stands in for a starved flusher, stays at normal priority.
        let want = [(libc::SCHED_OTHER, nice)];
        let normal = [(libc::SCHED_OTHER, 0)];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (f, p) = (priorities("log-flusher"), priorities("log-preparer"));
            // The rescue thread too names itself once started: waited for like the others
            // (it was read once, and was sometimes not there yet).
            let r = priorities("log-rescue");
            if f == want && p == want && r == normal {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "low {low}: flusher {f:?}, preparer {p:?}, want {want:?}; rescue {r:?}, want {normal:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        log.close().unwrap();
    }
    // The setting's name before: still read.
    let c: LogConfig = toml::from_str("background_idle = false").unwrap();
    assert!(!c.background_low_priority);
}

#[test]
fn in_group_mode_the_flusher_syncs_the_directory_of_new_segments_before_they_are_durable() {
    let _turn = turn();
    use storage::{NewMessage, UserId};
    for (durability, syncs) in [(Durability::Group, true), (Durability::None, false)] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 256 << 10,
            durability,
            prefault: false,
            ..LogConfig::default()
        };
        let (mut log, _) = Log::open(dir.path(), config, 1_700_000_000_000).unwrap();
        let to = UserId::new(7).unwrap();
        let mut last = None;
        for i in 0..10_000u64 {
            let m = NewMessage {
                recipient: to,
                sender: to,
                msg_id: i,
                timestamp_ms: 1_700_000_000_000,
                expiry_ms: None,
                body: &[0x42; 36],
            };
            last = Some(log.append_message(&m).unwrap().lsn);
        }
        assert!(log.wait_durable(last.unwrap(), std::time::Duration::from_secs(10)));
        let s = log.stats();
        assert!(s.rollovers >= 2, "{s:?}");
        if syncs {
            // At least one sync, and never more than one per segment.
            assert!(
                (1..=s.rollovers + 1).contains(&s.dir_syncs),
                "{durability:?}: {s:?}"
            );
        } else {
            assert_eq!(s.dir_syncs, 0, "{durability:?}: {s:?}");
        }
        log.close().unwrap();
    }
}

#[test]
fn a_clean_close_leaves_no_prepared_segment_behind() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 256 << 10,
        durability: Durability::Group,
        prefault: false,
        ..LogConfig::default()
    };
    let (log, _) = Log::open(dir.path(), config.clone(), 1_700_000_000_000).unwrap();
    // The preparer makes the next segment at once (staged, `*.seg.prep`); wait until
    // it is on disk.
    let files = |suffix: &str| {
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while files(".seg.prep") < 1 {
        assert!(std::time::Instant::now() < deadline, "nothing prepared");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    log.close().unwrap();
    assert_eq!(
        (files(".seg"), files(".seg.prep")),
        (1, 0),
        "the prepared, never started segment is removed"
    );
    let (_log, report) = Log::open(dir.path(), config, 1_700_000_000_000).unwrap();
    assert_eq!(report.blank_segments_removed, 0, "{report:?}");
}
