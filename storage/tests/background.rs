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
