//! How a gateway worker talks to routers, whatever drives its sockets: the requests go
//! into a [`RouterLink`] (a channel to a shard thread, a shard in the same thread, or a
//! TCP link's queue), the replies come back through [`WorkerLink::replies`] with an
//! eventfd ring; [`SourceLimits`] are the per-address limits every worker of a process
//! shares.

use std::os::fd::OwnedFd;
use std::sync::mpsc::Receiver;
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
    pub replies: Receiver<Vec<(ConnId, ToClient)>>,
    /// Written (8 bytes) by whoever queues a reply, to wake the worker.
    pub wake: Arc<OwnedFd>,
}
