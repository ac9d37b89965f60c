//! The log's background threads run at low priority; on a saturated CPU they get little
//! of it. The writer must not wait on them for long: it makes the next segment itself
//! and hands flushing to its rescue thread when they are starved. Here the CPU is
//! saturated for real: the test, the log's threads (which inherit the test thread's CPU
//! set) and a spinning thread at normal priority all share one CPU, and the flusher and
//! preparer are moved to the idle class so that they are starved every time.
#![cfg(target_os = "linux")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{msg, pending, small, threads_named, NOW};
use storage::{Durability, Log, LogStats};

/// Pins the calling thread (and the threads it starts from now on) to one CPU.
fn pin_to_first_cpu() {
    // SAFETY: plain libc calls on a zeroed cpu_set_t for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, size_of_val(&set), &mut set), 0);
        let first = (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &set))
            .expect("some CPU");
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(first, &mut set);
        assert_eq!(libc::sched_setaffinity(0, size_of_val(&set), &set), 0);
    }
}

/// A thread at normal priority that keeps the CPU busy until dropped (at most 60 s).
struct Spinner(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);

impl Spinner {
    fn start() -> Spinner {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let h = std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(60);
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                std::hint::spin_loop();
            }
        });
        Spinner(stop, Some(h))
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        if let Some(h) = self.1.take() {
            let _ = h.join();
        }
    }
}

/// Moves this process's log flusher and preparer threads to the idle class (waiting
/// until both have started and named themselves).
fn starve_log_threads() {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (f, p) = (threads_named("log-flusher"), threads_named("log-preparer"));
        if !f.is_empty() && !p.is_empty() {
            for tid in f.into_iter().chain(p) {
                let param = libc::sched_param { sched_priority: 0 };
                // SAFETY: lowering the priority of a thread of this process.
                unsafe { libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) };
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "log threads not found: flusher {f:?}, preparer {p:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One saturated CPU at a time: the two tests would otherwise share it (both pin to the
/// first CPU) and each change what the other's threads get of it.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `work` on a thread pinned to one CPU beside a spinning thread, with a log opened
/// there whose flusher and preparer are starved.
fn on_a_saturated_cpu<T: Send>(dir: &std::path::Path, work: impl FnOnce(Log) -> T + Send) -> T {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to_first_cpu();
            let _spin = Spinner::start();
            let (log, _) = Log::open(dir, small(Durability::Group), NOW).unwrap();
            starve_log_threads();
            work(log)
        })
        .join()
        .unwrap()
    })
}

/// Appends `per_turn` messages a turn and runs `maintain` as the router's tick does,
/// sleeping 1 ms between turns, until `done` says so (at most 10 s); returns the stats
/// and how many messages went in.
fn run_until(log: &mut Log, per_turn: u64, done: impl Fn(&LogStats) -> bool) -> (LogStats, u64) {
    let body = [0x5a; 200];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        let s = log.stats();
        if done(&s) || Instant::now() > deadline {
            return (s, n);
        }
        for _ in 0..per_turn {
            n += 1;
            log.append_message(&msg(1 + n % 5, 9, n, &body)).unwrap();
        }
        log.maintain(NOW, 64 * 1024).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_starved_preparer_does_not_hold_up_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut sent, stats) = on_a_saturated_cpu(dir.path(), |mut log| {
        // A third of a segment a turn: the preparer must keep up with a rollover every
        // few milliseconds, which a starved one cannot however fast the disk (at a
        // twentieth, an idle-class preparer on a fast disk kept up for 10 s once).
        let (stats, sent) = run_until(&mut log, 100, |s| s.prepare_takeovers >= 2);
        (log, sent, stats)
    });
    assert!(stats.prepare_takeovers >= 2, "{stats:?}");
    // Every message is there, in a log that reopens cleanly, without staged leftovers.
    let body = [0x5a; 200];
    sent += 1;
    log.append_message(&msg(1, 9, sent, &body)).unwrap();
    log.close().unwrap();
    let staged = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".prep"))
        .count();
    assert_eq!(staged, 0);
    let (log, report) = Log::open(dir.path(), small(Durability::Group), NOW).unwrap();
    assert!(report.clean(), "{report:?}");
    assert_eq!(report.blank_segments_removed, 0, "{report:?}");
    let got: u64 = (1..=5).map(|u| pending(&log, u).len() as u64).sum();
    assert_eq!(got, sent);
}

#[test]
fn a_starved_flusher_does_not_hold_up_durability() {
    let dir = tempfile::tempdir().unwrap();
    on_a_saturated_cpu(dir.path(), |mut log| {
        let (stats, _) = run_until(&mut log, 20, |s| s.rescue_flushes >= 3);
        assert!(stats.rescue_flushes >= 3, "{stats:?}");
        // What the rescue thread flushed is reported durable like the flusher's work.
        let written = log.written();
        log.maintain(NOW, 0).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.durable() < written && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
            log.maintain(NOW, 0).unwrap();
        }
        assert!(log.durable() >= written, "{:?}", log.stats());
        log.close().unwrap();
    });
}
