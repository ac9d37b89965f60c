//! Whether one of the log's background threads is starved of CPU.
//!
//! The flusher and the preparer run at a lower priority (nice 10,
//! `LogConfig::background_low_priority`) so that a serving thread does not wait behind
//! them. On a saturated machine they can then wait long for a CPU while the writer
//! needs their work: a segment to append to, records made durable so acknowledgements
//! go out. The writer asks this module whether the thread it waits for is *runnable but
//! not run*: runnable now (`R` in `/proc/self/task/<tid>/stat`) and given less than a
//! quarter of the time it was watched (its CPU time, from `schedstat`). A thread blocked
//! in I/O is not starved (it waits for the disk, and so would the writer), nor is one
//! that runs. (The run-queue delay `schedstat` also reports is no help: the kernel adds
//! a wait to it only when the wait ends, i.e. once the thread runs.)
//!
//! Where the statistics are missing (other systems, or a kernel without them),
//! [`Watch::starved`] answers from time alone: the caller's fallback patience.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the scheduler says of one thread now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sched {
    /// Time on a CPU so far.
    pub run: Duration,
    /// Runnable: running, or waiting for a CPU (not asleep, not blocked in I/O).
    pub runnable: bool,
}

/// The kernel thread id of a background thread, set by the thread when it starts (0
/// until then, and where there is no such id).
#[derive(Clone, Default)]
pub(crate) struct ThreadId(Arc<AtomicI64>);

impl ThreadId {
    /// Records the calling thread's id.
    pub fn set_current(&self) {
        self.0.store(current_tid(), Ordering::Release);
    }

    /// The thread's scheduler time, if the system tells.
    pub fn sched(&self) -> Option<Sched> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            tid => read_sched(tid),
        }
    }
}

#[cfg(target_os = "linux")]
fn current_tid() -> i64 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

#[cfg(not(target_os = "linux"))]
fn current_tid() -> i64 {
    0
}

/// `/proc/self/task/<tid>/schedstat` (nanoseconds run, then others) and the state in
/// `/proc/self/task/<tid>/stat`.
#[cfg(target_os = "linux")]
fn read_sched(tid: i64) -> Option<Sched> {
    let task = format!("/proc/self/task/{tid}");
    let schedstat = std::fs::read_to_string(format!("{task}/schedstat")).ok()?;
    let stat = std::fs::read_to_string(format!("{task}/stat")).ok()?;
    Some(Sched {
        run: parse_run(&schedstat)?,
        runnable: parse_state(&stat)? == 'R',
    })
}

#[cfg(not(target_os = "linux"))]
fn read_sched(_tid: i64) -> Option<Sched> {
    None
}

// Read only on Linux; tested everywhere.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_run(schedstat: &str) -> Option<Duration> {
    let ns = schedstat.split_ascii_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// The state letter of a `stat` line: `tid (comm) S …`, where the name may itself hold
/// spaces and parentheses (so: the first field after the last `)`).
// Read only on Linux; tested everywhere.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_state(stat: &str) -> Option<char> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_ascii_whitespace().next()?.chars().next()
}

/// Watches one thread from a starting moment: has it been kept from a CPU since?
/// Starting a watch costs one clock read; the thread's statistics are read only once
/// the caller's patience has run out.
#[derive(Debug)]
pub(crate) struct Watch {
    since: Instant,
    /// The first reading taken after the patience ran out, and when.
    base: Option<(Instant, Sched)>,
}

impl Watch {
    pub fn start() -> Watch {
        Watch {
            since: Instant::now(),
            base: None,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.since.elapsed()
    }

    /// Whether the thread is starved: `patience` has passed since the watch started,
    /// and over the time since the first reading after that (at least a quarter of
    /// `patience`) the thread ran less than a quarter of the time and is runnable now.
    /// Without scheduler statistics, whether `fallback` has passed.
    pub fn starved(&mut self, thread: &ThreadId, patience: Duration, fallback: Duration) -> bool {
        let elapsed = self.elapsed();
        if elapsed < patience {
            return false;
        }
        let Some(now) = thread.sched() else {
            return elapsed >= fallback;
        };
        match self.base {
            None => {
                self.base = Some((Instant::now(), now));
                false
            }
            Some((at, base)) => {
                let window = at.elapsed();
                window >= patience / 4
                    && now.runnable
                    && now.run.saturating_sub(base.run) * 4 < window
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_and_stat_are_read() {
        assert_eq!(
            parse_run("364003870 636755 34\n"),
            Some(Duration::from_nanos(364_003_870))
        );
        assert_eq!(parse_run(""), None);
        assert_eq!(parse_run("x 1 2"), None);
        assert_eq!(parse_state("27 (log-flusher) R 1 27 27 0 -1"), Some('R'));
        assert_eq!(parse_state("27 (a) b) (c) D 1 27"), Some('D'));
        assert_eq!(parse_state("27 (log-flusher)"), None);
    }

    fn spin(d: Duration) {
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < d {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_running_thread_is_not_starved() {
        let me = ThreadId::default();
        me.set_current();
        let before = me.sched().expect("this kernel keeps scheduler statistics");
        assert!(before.runnable);
        let patience = Duration::from_millis(10);
        let mut watch = Watch::start();
        assert!(!watch.starved(&me, patience, Duration::ZERO), "too early");
        spin(patience);
        assert!(
            !watch.starved(&me, patience, Duration::ZERO),
            "first reading"
        );
        spin(Duration::from_millis(40));
        let after = me.sched().unwrap();
        assert!(after.run > before.run, "{before:?} {after:?}");
        // It ran most of those 40 ms (unless this shared machine gave it under a
        // quarter of a CPU, which it does not).
        assert!(!watch.starved(&me, patience, Duration::ZERO));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_sleeping_thread_is_not_starved() {
        let tid = ThreadId::default();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let its = tid.clone();
        let t = std::thread::spawn(move || {
            its.set_current();
            let _ = rx.recv();
        });
        while tid.sched().is_none_or(|s| s.runnable) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let patience = Duration::from_millis(5);
        let mut watch = Watch::start();
        std::thread::sleep(patience);
        assert!(!watch.starved(&tid, patience, Duration::ZERO));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!watch.starved(&tid, patience, Duration::ZERO));
        tx.send(()).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn without_statistics_time_alone_decides() {
        let unknown = ThreadId::default();
        let mut watch = Watch::start();
        assert!(!watch.starved(&unknown, Duration::ZERO, Duration::from_secs(60)));
        assert!(!watch.starved(&unknown, Duration::from_secs(60), Duration::ZERO));
        assert!(watch.starved(&unknown, Duration::ZERO, Duration::ZERO));
    }
}
