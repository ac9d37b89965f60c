//! How a gateway worker talks to routers, whatever drives its sockets: the requests go
//! into a [`RouterLink`] (a channel to a shard thread, a shard in the same thread, or a
//! TCP link's queue), the replies come back through [`WorkerLink::replies`] with an
//! eventfd ring; [`SourceLimits`] are the per-address limits every worker of a process
//! shares.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use wire::link::{ConnId, ToClient, ToRouter};

/// Where one worker's requests for routers go. Each worker owns its own (no locks
/// between workers).
pub trait RouterLink: Send {
    /// Offers a request. `Err(req)` hands it back: the link cannot take it now (its
    /// queue is full). The worker then stops reading that connection and offers the
    /// request again shortly (backpressure: the client's bytes stay in the kernel and
    /// TCP slows it down).
    fn send(&mut self, req: ToRouter) -> Result<(), ToRouter>;
    /// Called once after each loop turn's requests were offered: a link that gathers
    /// requests sends them, and wakes its consumer, here (once per turn). `true`: the
    /// link may have put replies in [`WorkerLink::replies`] already (a router running
    /// in this thread): the worker reads them in the same turn, without a wake-up.
    fn flush(&mut self) -> bool {
        false
    }
    /// How often [`RouterLink::tick`] wants to run (a router in this thread keeps its
    /// timers there). `None`: never.
    fn tick_every(&self) -> Option<Duration> {
        None
    }
    /// Periodic work; `true` as for [`RouterLink::flush`].
    fn tick(&mut self) -> bool {
        false
    }
}

/// Limits per client address that hold for the whole process (every worker asks the
/// same one), however many shards and routers own the numbers asked about. Each call
/// counts one request if it is within the limit and says whether it was.
pub trait SourceLimits: Send + Sync {
    /// One more PIN request (`RegisterRequest`) from `source`.
    fn pin_request(&self, source: std::net::IpAddr) -> bool;
    /// One more PIN guess (`Verify`) from `source`.
    fn pin_guess(&self, source: std::net::IpAddr) -> bool;
}

/// Where a worker sends requests for routers, and how it is woken for replies.
pub struct WorkerLink {
    pub to_router: Box<dyn RouterLink>,
    /// Router replies for this worker's connections, in batches.
    pub replies: ReplyRx,
    /// Written (8 bytes) by whoever queues a reply, to wake the worker.
    pub wake: Arc<OwnedFd>,
}

/// A batch of replies for one worker's connections.
pub type Replies = Vec<(ConnId, ToClient)>;

/// The sending side of a worker's replies: shards, link threads and the inline shard
/// queue batches here and ring the worker's eventfd. Counted while they wait (the
/// `switchboard_gateway_reply_queue` gauge). Not bounded by a count of its own: what
/// waits for a worker is bounded already by what its connections may have in flight —
/// their own requests (which the worker reads only as fast as it runs) and, per
/// logged-in user, the delivery window (`router.window`, `router.window_bytes`).
#[derive(Clone)]
pub struct ReplyTx {
    tx: Sender<Replies>,
    waiting: Arc<AtomicUsize>,
    wake: Arc<OwnedFd>,
}

/// The worker's side of [`ReplyTx`].
pub struct ReplyRx {
    rx: Receiver<Replies>,
    waiting: Arc<AtomicUsize>,
}

/// A worker's reply channel; the eventfd `wake` rings it.
pub fn reply_channel(wake: Arc<OwnedFd>) -> (ReplyTx, ReplyRx) {
    let (tx, rx) = mpsc::channel();
    let waiting = Arc::new(AtomicUsize::new(0));
    (
        ReplyTx {
            tx,
            waiting: Arc::clone(&waiting),
            wake,
        },
        ReplyRx { rx, waiting },
    )
}

impl ReplyTx {
    /// Queues `batch` without waking the worker (the inline shard: the worker reads
    /// right after). `false`: the worker is gone.
    pub fn queue(&self, batch: Replies) -> bool {
        let n = batch.len();
        self.waiting.fetch_add(n, Ordering::Relaxed);
        if self.tx.send(batch).is_err() {
            self.waiting.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The worker's eventfd.
    pub fn wake_fd(&self) -> &Arc<OwnedFd> {
        &self.wake
    }

    /// Replies waiting for the worker (read by the admin thread).
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

impl ReplyRx {
    /// The next batch, if any.
    pub fn try_recv(&self) -> Option<Replies> {
        let batch = self.rx.try_recv().ok()?;
        self.waiting.fetch_sub(batch.len(), Ordering::Relaxed);
        Some(batch)
    }
}
