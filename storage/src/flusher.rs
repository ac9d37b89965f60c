//! The two helper threads of a log: the flusher (group commit) and the preparer (next
//! segment). The writer talks to them through atomics and channels; neither takes a
//! lock the writer waits on while appending.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use memmap2::MmapRaw;

use crate::segment::{flush_map, sync_directory, Segment};
use crate::starve::ThreadId;
use crate::types::{Lsn, SegmentId};

/// State the writer publishes and the flusher and readers of positions observe.
#[derive(Default)]
pub(crate) struct Shared {
    /// End of the last appended record (Release-stored by the writer).
    pub written: AtomicU64,
    /// Everything before this is flushed.
    pub durable: AtomicU64,
    pub failed: AtomicBool,
    pub failure: Mutex<Option<String>>,
    pub stop: AtomicBool,
    pub flushes: AtomicU64,
    pub flush_ns_max: AtomicU64,
    pub flush_ns_total: AtomicU64,
    /// Directory syncs before a flush (one before the first flush covering new segments).
    pub dir_syncs: AtomicU64,
    /// The highest segment id whose directory entry is known durable: a flush that
    /// reaches a later segment syncs the directory first (the flusher's or the writer's).
    pub dir_synced: AtomicU64,
    /// The group-commit interval the flusher sleeps between flushes (µs); changed at
    /// run time by [`crate::Log::set_group_interval_us`]. `0` until the flusher starts.
    pub interval_us: AtomicU64,
    /// The flusher thread, watched by the writer when durability is late.
    pub flusher_tid: ThreadId,
    wait: Mutex<()>,
    cv: Condvar,
}

impl Shared {
    pub fn durable(&self) -> Lsn {
        Lsn(self.durable.load(Ordering::Acquire))
    }

    /// Raises the durable position to `lsn` (never lowers it: the flusher and the writer
    /// may both flush, and the one that finishes last may have started first).
    pub fn set_durable(&self, lsn: Lsn) {
        self.durable.fetch_max(lsn.0, Ordering::AcqRel);
        let _guard = self.wait.lock().unwrap_or_else(|p| p.into_inner());
        self.cv.notify_all();
    }

    pub fn wait_durable(&self, lsn: Lsn, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.wait.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.durable() >= lsn {
                return true;
            }
            if self.failed.load(Ordering::Acquire) {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = self
                .cv
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub fn fail(&self, why: String) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        self.failed.store(true, Ordering::Release);
        let _guard = self.wait.lock().unwrap_or_else(|p| p.into_inner());
        self.cv.notify_all();
    }

    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Syncs the log's directory unless every segment up to `through` is known to have
    /// its entry durable already.
    pub fn sync_dir_through(&self, dir: &Path, through: SegmentId) -> std::io::Result<()> {
        let through = u64::from(through.0);
        if self.dir_synced.load(Ordering::Acquire) < through {
            sync_directory(dir)?;
            self.dir_syncs.fetch_add(1, Ordering::Relaxed);
            self.dir_synced.fetch_max(through, Ordering::AcqRel);
        }
        Ok(())
    }

    /// One flush, the flusher's or the rescue thread's: the directory first (a machine
    /// crash must not lose a file that holds anything reported durable), then `ranges`
    /// (mapping, from, to), after which everything before `through` is durable.
    fn flush<'a>(
        &self,
        dir: &Path,
        through: Lsn,
        ranges: impl IntoIterator<Item = (&'a MmapRaw, usize, usize)>,
    ) -> std::io::Result<()> {
        let started = Instant::now();
        self.sync_dir_through(dir, through.segment())?;
        crate::fault::check(crate::fault::Op::Msync, dir)?;
        for (map, from, to) in ranges {
            flush_map(map, from, to)?;
        }
        self.record_flush(started.elapsed());
        self.set_durable(through);
        Ok(())
    }

    fn record_flush(&self, took: Duration) {
        let ns = took.as_nanos() as u64;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.flush_ns_total.fetch_add(ns, Ordering::Relaxed);
        self.flush_ns_max.fetch_max(ns, Ordering::Relaxed);
    }
}

/// Sent by the writer when it starts a segment, before any position in it is published.
pub(crate) struct Activation {
    pub id: SegmentId,
    pub map: Arc<MmapRaw>,
    /// Where the previous segment's data ended (after its seal).
    pub prev_end: Option<(SegmentId, usize)>,
}

pub(crate) struct Flusher {
    pub tx: Sender<Activation>,
    handle: JoinHandle<()>,
}

impl Flusher {
    /// `dir`: the log's directory, synced before a new segment's first flush reports
    /// anything in it durable (the preparer does not sync it in `group` mode).
    pub fn start(
        shared: Arc<Shared>,
        interval: Duration,
        dir: PathBuf,
        low_priority: bool,
    ) -> std::io::Result<Flusher> {
        let (tx, rx) = mpsc::channel();
        shared
            .interval_us
            .store(interval.as_micros() as u64, Ordering::Relaxed);
        let handle = thread::Builder::new()
            .name("log-flusher".into())
            .spawn(move || {
                shared.flusher_tid.set_current();
                background_priority(low_priority);
                flusher_loop(&shared, &rx, &dir)
            })?;
        Ok(Flusher { tx, handle })
    }

    pub fn wake(&self) {
        self.handle.thread().unpark();
    }

    /// Flushes what is written and stops.
    pub fn stop(self, shared: &Shared) {
        shared.stop.store(true, Ordering::Release);
        self.handle.thread().unpark();
        let _ = self.handle.join();
    }
}

struct Mapped {
    map: Arc<MmapRaw>,
    end: Option<usize>,
}

fn flusher_loop(shared: &Shared, rx: &Receiver<Activation>, dir: &Path) {
    let mut maps: BTreeMap<SegmentId, Mapped> = BTreeMap::new();
    loop {
        let stopping = shared.stop.load(Ordering::Acquire);
        if !stopping {
            let us = shared.interval_us.load(Ordering::Relaxed);
            thread::park_timeout(Duration::from_micros(us));
        }
        if !shared.failed.load(Ordering::Acquire) {
            if let Err(e) = flush_once(shared, rx, &mut maps, dir) {
                shared.fail(format!("msync: {e}"));
            }
        }
        if stopping {
            return;
        }
    }
}

fn flush_once(
    shared: &Shared,
    rx: &Receiver<Activation>,
    maps: &mut BTreeMap<SegmentId, Mapped>,
    dir: &Path,
) -> std::io::Result<()> {
    // Load the position first: every activation sent before it was stored is now in
    // the channel.
    let written = Lsn(shared.written.load(Ordering::Acquire));
    while let Ok(a) = rx.try_recv() {
        if let Some((prev, end)) = a.prev_end {
            if let Some(m) = maps.get_mut(&prev) {
                m.end = Some(end);
            }
        }
        maps.insert(
            a.id,
            Mapped {
                map: a.map,
                end: None,
            },
        );
    }
    let durable = shared.durable();
    if written <= durable {
        return Ok(());
    }
    let ranges = maps
        .range(durable.segment()..=written.segment())
        .map(|(&id, m)| {
            let from = if id == durable.segment() {
                durable.offset() as usize
            } else {
                0
            };
            let to = if id == written.segment() {
                written.offset() as usize
            } else {
                m.end.unwrap_or(m.map.len())
            };
            (&*m.map, from, to)
        });
    shared.flush(dir, written, ranges)?;
    // Segments wholly flushed are no longer ours to keep mapped.
    maps.retain(|&id, _| id >= written.segment());
    Ok(())
}

/// Work the writer hands to the rescue thread when the flusher is starved of CPU: the
/// unflushed ranges of the mapped segments, to make durable up to `through`.
pub(crate) struct FlushJob {
    pub ranges: Vec<(Arc<MmapRaw>, usize, usize)>,
    pub through: Lsn,
}

/// A flusher at normal priority that runs only when the writer asks ([`FlushJob`]): the
/// low-priority flusher's stand-in on a saturated CPU, so that acknowledgements do not
/// wait for it to get a turn, and the writer (a serving thread) never blocks in `msync`.
pub(crate) struct Rescuer {
    tx: Option<Sender<FlushJob>>,
    handle: Option<JoinHandle<()>>,
}

impl Rescuer {
    pub fn start(shared: Arc<Shared>, dir: PathBuf) -> std::io::Result<Rescuer> {
        let (tx, rx) = mpsc::channel::<FlushJob>();
        let handle = thread::Builder::new()
            .name("log-rescue".into())
            .spawn(move || {
                for job in rx {
                    if shared.failed.load(Ordering::Acquire) {
                        continue;
                    }
                    let ranges = job
                        .ranges
                        .iter()
                        .map(|(map, from, to)| (&**map, *from, *to));
                    if let Err(e) = shared.flush(&dir, job.through, ranges) {
                        shared.fail(format!("msync: {e}"));
                    }
                }
            })?;
        Ok(Rescuer {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    pub fn hand(&self, job: FlushJob) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(job);
        }
    }

    /// Finishes what was handed over and stops.
    pub fn stop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Rescuer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the preparer sends back: the segment it was asked for, staged, or why not.
pub(crate) type Prepared = (SegmentId, std::io::Result<Segment>);

/// Prepares the next segment file on its own thread, under its staging name
/// ([`Segment::stage`]); the writer installs it when it starts it.
pub(crate) struct Preparer {
    tx: Option<Sender<SegmentId>>,
    pub rx: Receiver<Prepared>,
    handle: Option<JoinHandle<()>>,
    /// The thread, watched by the writer when it waits for a segment.
    pub tid: ThreadId,
}

impl Preparer {
    pub fn start(
        dir: PathBuf,
        bytes: u64,
        prefault: bool,
        low_priority: bool,
    ) -> std::io::Result<Preparer> {
        let (req_tx, req_rx) = mpsc::channel::<SegmentId>();
        let (tx, rx) = mpsc::channel();
        let tid = ThreadId::default();
        let its_tid = tid.clone();
        let handle = thread::Builder::new()
            .name("log-preparer".into())
            .spawn(move || {
                its_tid.set_current();
                background_priority(low_priority);
                for id in req_rx {
                    let seg = Segment::stage(&dir, id, bytes, prefault);
                    if tx.send((id, seg)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Preparer {
            tx: Some(req_tx),
            rx,
            handle: Some(handle),
            tid,
        })
    }

    /// A preparer with no thread, for tests: the test answers requests (or never does)
    /// through the returned ends.
    #[cfg(test)]
    pub fn by_hand() -> (Preparer, Receiver<SegmentId>, Sender<Prepared>) {
        let (req_tx, req_rx) = mpsc::channel();
        let (tx, rx) = mpsc::channel();
        let p = Preparer {
            tx: Some(req_tx),
            rx,
            handle: None,
            tid: ThreadId::default(),
        };
        (p, req_rx, tx)
    }

    pub fn request(&self, id: SegmentId) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(id);
        }
    }

    /// Stops the thread and removes the segment files it prepared that were never
    /// started (staged, nothing in them), so they do not outlive the log. (After a crash
    /// recovery removes them instead.) Called by the log's shutdown while it still holds
    /// the directory's lock; again on drop, then a no-op.
    pub fn stop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        while let Ok((_, prepared)) = self.rx.try_recv() {
            if let Ok(seg) = prepared {
                seg.discard();
            }
        }
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The nice value of the log's background threads when `LogConfig::background_low_priority`.
#[cfg(target_os = "linux")]
pub(crate) const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority to nice [`BACKGROUND_NICE`]
/// (`LogConfig::background_low_priority`) on Linux, where the nice value is the
/// thread's own; elsewhere (FreeBSD's is the whole process's) leaves it as it is.
pub(crate) fn background_priority(low: bool) {
    #[cfg(target_os = "linux")]
    if low {
        // SAFETY: plain system calls about the calling thread. Raising one's own nice
        // value needs no privilege; a failure leaves the thread at normal priority.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = low;
}
