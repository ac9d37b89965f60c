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

use crate::segment::{flush_map, Segment};
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
    /// Directory syncs by the flusher (one before the first flush covering new segments).
    pub dir_syncs: AtomicU64,
    /// The group-commit interval the flusher sleeps between flushes (µs); changed at
    /// run time by [`crate::Log::set_group_interval_us`]. `0` until the flusher starts.
    pub interval_us: AtomicU64,
    wait: Mutex<()>,
    cv: Condvar,
}

impl Shared {
    pub fn durable(&self) -> Lsn {
        Lsn(self.durable.load(Ordering::Acquire))
    }

    pub fn set_durable(&self, lsn: Lsn) {
        self.durable.store(lsn.0, Ordering::Release);
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
        idle: bool,
    ) -> std::io::Result<Flusher> {
        let (tx, rx) = mpsc::channel();
        shared
            .interval_us
            .store(interval.as_micros() as u64, Ordering::Relaxed);
        let handle = thread::Builder::new()
            .name("log-flusher".into())
            .spawn(move || {
                background_priority(idle);
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
    /// Whether the directory has been synced since this segment was made.
    dir_synced: bool,
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
                dir_synced: false,
            },
        );
    }
    let durable = shared.durable();
    if written <= durable {
        return Ok(());
    }
    let started = Instant::now();
    // New segments' directory entries first: a machine crash must not lose a file that
    // holds anything reported durable.
    let range = durable.segment()..=written.segment();
    if maps.range(range.clone()).any(|(_, m)| !m.dir_synced) {
        std::fs::File::open(dir)?.sync_all()?;
        shared.dir_syncs.fetch_add(1, Ordering::Relaxed);
        for (_, m) in maps.range_mut(range) {
            m.dir_synced = true;
        }
    }
    for (&id, m) in maps.range(durable.segment()..=written.segment()) {
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
        flush_map(&m.map, from, to)?;
    }
    shared.record_flush(started.elapsed());
    shared.set_durable(written);
    // Segments wholly flushed are no longer ours to keep mapped.
    maps.retain(|&id, _| id >= written.segment());
    Ok(())
}

/// Prepares the next segment file on its own thread.
pub(crate) struct Preparer {
    tx: Option<Sender<SegmentId>>,
    pub rx: Receiver<std::io::Result<Segment>>,
    handle: Option<JoinHandle<()>>,
}

impl Preparer {
    /// `sync_dir`: see [`Segment::create`].
    pub fn start(
        dir: PathBuf,
        bytes: u64,
        prefault: bool,
        sync_dir: bool,
        idle: bool,
    ) -> std::io::Result<Preparer> {
        let (req_tx, req_rx) = mpsc::channel::<SegmentId>();
        let (tx, rx) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("log-preparer".into())
            .spawn(move || {
                background_priority(idle);
                for id in req_rx {
                    let seg = Segment::create(&dir, id, bytes, prefault, sync_dir);
                    if tx.send(seg).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Preparer {
            tx: Some(req_tx),
            rx,
            handle: Some(handle),
        })
    }

    pub fn request(&self, id: SegmentId) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(id);
        }
    }
}

impl Preparer {
    /// Stops the thread and removes the segment files it prepared that were never
    /// started (no header yet, nothing in them), so the next open has no blank tail to
    /// check byte by byte. (After a crash recovery removes them instead.) Called by the
    /// log's shutdown while it still holds the directory's lock; again on drop, then a
    /// no-op.
    pub fn stop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        while let Ok(prepared) = self.rx.try_recv() {
            if let Ok(seg) = prepared {
                let path = seg.path.clone();
                drop(seg);
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Lowers the calling thread to the lowest CPU priority (`LogConfig::background_idle`):
/// `SCHED_IDLE` on Linux; elsewhere left as it is.
pub(crate) fn background_priority(idle: bool) {
    #[cfg(target_os = "linux")]
    if idle {
        let p = libc::sched_param { sched_priority: 0 };
        // SAFETY: a plain system call on the calling thread with a valid parameter.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &p) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = idle;
}
