//! The log's background threads run at the lowest CPU priority unless told otherwise
//! (`LogConfig::background_idle`).
#![cfg(target_os = "linux")]

use storage::{Durability, Log, LogConfig};

/// The scheduling policy of every thread of this process named `name`.
fn policies(name: &str) -> Vec<i32> {
    let mut out = vec![];
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let tid: i32 = t.file_name().to_string_lossy().parse().unwrap();
            // SAFETY: a query about a thread of this process.
            out.push(unsafe { libc::sched_getscheduler(tid) });
        }
    }
    out
}

#[test]
fn the_flusher_and_the_preparer_run_idle_by_default_and_normal_when_asked() {
    for (idle, policy) in [(true, libc::SCHED_IDLE), (false, libc::SCHED_OTHER)] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 1 << 20,
            durability: Durability::Group,
            prefault: false,
            background_idle: idle,
            ..LogConfig::default()
        };
        let (log, _) = Log::open(dir.path(), config, 1_700_000_000_000).unwrap();
        // The threads set their policy first thing: wait until both have started.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (f, p) = (policies("log-flusher"), policies("log-preparer"));
            if f == [policy] && p == [policy] {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "idle {idle}: flusher {f:?}, preparer {p:?}, want {policy}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        log.close().unwrap();
    }
}

#[test]
fn in_group_mode_the_flusher_syncs_the_directory_of_new_segments_before_they_are_durable() {
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
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 256 << 10,
        durability: Durability::Group,
        prefault: false,
        ..LogConfig::default()
    };
    let (log, _) = Log::open(dir.path(), config.clone(), 1_700_000_000_000).unwrap();
    // The preparer makes the next segment at once; wait until it is on disk.
    let seg_files = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while seg_files() < 2 {
        assert!(std::time::Instant::now() < deadline, "nothing prepared");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    log.close().unwrap();
    assert_eq!(
        seg_files(),
        1,
        "the prepared, never started segment is removed"
    );
    let (_log, report) = Log::open(dir.path(), config, 1_700_000_000_000).unwrap();
    assert_eq!(report.blank_segments_removed, 0, "{report:?}");
}
