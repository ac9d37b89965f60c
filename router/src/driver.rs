//! The thread that drives a [`Shard`]: its bounded inbox ([`ShardTx`], [`ShardRx`]),
//! what arrives in it ([`ShardMsg`]), and the loop ([`run`]) that hands requests to the
//! shard, ticks it every millisecond and passes what it produced to a [`Dispatch`]
//! (the all-in-one process's channels, or a router's links). The shard itself stays
//! sans-I/O; this is the one place that reads the clock and parks for it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wire::link::{ConnId, FromRouter, ToRouter};
use wire::Phone;

use crate::{PartitionMap, Shard, Store};

/// A shard's inbox, sending side. The shard never blocks in `recv` (it drains with
/// `try_recv` and parks), so a send is a queue push and an unpark. Senders batch:
/// a gateway worker sends each shard one [`ShardMsg::Batch`] per loop turn, so on a host
/// where worker and shard share a core there is one context switch per turn, not one
/// per request.
///
/// The inbox is bounded in requests (`router.inbox_requests_max`; a batch counts its
/// requests): gateway workers check [`ShardTx::room`] and, when the shard is behind,
/// hand the request back to the worker, which stops reading that client until there is
/// room (backpressure down to TCP); a router's link threads stop reading their link
/// while there is no room (`Link::run_paced`; what one read brought may go past the
/// bound), and the gateway's link queue then fills and pushes back the same way. Shards sending each other receipts
/// never wait (two shards must not wait on each other): that traffic may go past the
/// bound by what one batch of another shard produces.
#[derive(Clone)]
pub struct ShardTx {
    tx: crossbeam_channel::Sender<ShardMsg>,
    thread: Arc<std::sync::OnceLock<std::thread::Thread>>,
    queued: Arc<AtomicUsize>,
    bound: usize,
}

/// A shard's inbox, receiving side (see [`ShardTx`]).
pub struct ShardRx {
    rx: crossbeam_channel::Receiver<ShardMsg>,
    thread: Arc<std::sync::OnceLock<std::thread::Thread>>,
    queued: Arc<AtomicUsize>,
}

/// A shard's inbox holding at most `bound` requests from gateways.
pub fn inbox(bound: usize) -> (ShardTx, ShardRx) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let thread = Arc::new(std::sync::OnceLock::new());
    let queued = Arc::new(AtomicUsize::new(0));
    (
        ShardTx {
            tx,
            thread: Arc::clone(&thread),
            queued: Arc::clone(&queued),
            bound,
        },
        ShardRx { rx, thread, queued },
    )
}

impl ShardMsg {
    /// What a message counts against the inbox's bound.
    fn requests(&self) -> usize {
        match self {
            ShardMsg::Req(_) | ShardMsg::Attach(..) => 1,
            ShardMsg::Batch(b) => b.len(),
            ShardMsg::GatewayGone(_) | ShardMsg::Stop => 0,
        }
    }
}

impl ShardTx {
    /// Queues and wakes the shard (before it has started, it finds the message within
    /// 1 ms), whatever the bound says. `false`: the shard is gone.
    pub fn send(&self, m: ShardMsg) -> bool {
        self.queued.fetch_add(m.requests(), Ordering::Relaxed);
        let sent = self.tx.send(m).is_ok();
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
        sent
    }

    /// Requests the inbox can take before it reaches its bound.
    pub fn room(&self) -> usize {
        self.bound
            .saturating_sub(self.queued.load(Ordering::Relaxed))
    }

    /// Requests waiting in the inbox (for the queue gauges; read by the admin thread).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// Requests gathered per shard, then sent as one [`ShardMsg::Batch`] per shard.
#[derive(Default)]
pub struct ShardBatches(Vec<Vec<ToRouter>>);

impl ShardBatches {
    /// Gathers `req` for the shard that owns its route key.
    pub fn push(&mut self, map: &PartitionMap, req: ToRouter) {
        let s = map.shard_of(req.route_key()) as usize;
        self.push_to(s, req);
    }

    /// Gathers `req` for shard `s`.
    pub fn push_to(&mut self, s: usize, req: ToRouter) {
        if self.0.len() <= s {
            self.0.resize_with(s + 1, Vec::new);
        }
        self.0[s].push(req);
    }

    /// Requests gathered for shard `s` so far.
    pub fn gathered(&self, s: usize) -> usize {
        self.0.get(s).map_or(0, Vec::len)
    }

    /// Sends each shard what was gathered for it, as one batch.
    pub fn send(&mut self, shards: &[ShardTx]) {
        for (s, batch) in self.0.iter_mut().enumerate() {
            if !batch.is_empty() {
                let next = Vec::with_capacity(batch.len());
                shards[s].send(ShardMsg::Batch(std::mem::replace(batch, next)));
            }
        }
    }
}

pub enum ShardMsg {
    Req(ToRouter),
    /// Requests in the order given (see [`ShardBatches`]).
    Batch(Vec<ToRouter>),
    /// A gateway re-attaches a logged-in connection after its link came back.
    Attach(ConnId, Phone),
    /// A gateway process's link is gone: drop its sessions (by `ConnId::origin`).
    GatewayGone(u16),
    Stop,
}

/// Where a shard's output goes.
pub trait Dispatch: Send + Sync + 'static {
    fn dispatch(&self, out: &mut Vec<FromRouter>);
}

/// Milliseconds since the Unix epoch: the `now` a shard is driven with.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs `shard` on this thread until [`ShardMsg::Stop`] or every sender is gone, then
/// closes its log.
pub fn run<S: Store, D: Dispatch>(mut shard: Shard<S>, inbox: ShardRx, d: Arc<D>) {
    let _ = inbox.thread.set(std::thread::current());
    let (rx, queued) = (inbox.rx, inbox.queued);
    let mut out = Vec::new();
    let mut last_tick = Instant::now();
    // The clock is read once per batch: a batch takes well under a millisecond.
    let on = |shard: &mut Shard<S>, m: ShardMsg, now: u64, out: &mut Vec<FromRouter>| -> bool {
        match m {
            ShardMsg::Req(r) => shard.handle(now, r, out),
            ShardMsg::Batch(rs) => {
                for r in rs {
                    shard.handle(now, r, out);
                }
            }
            ShardMsg::Attach(conn, user) => shard.attach(conn, user, now, out),
            ShardMsg::GatewayGone(g) => shard.gateway_gone(g),
            ShardMsg::Stop => return false,
        }
        true
    };
    'run: loop {
        let mut got = 0;
        let now = unix_ms();
        while got < 4096 {
            match rx.try_recv() {
                Ok(m) => {
                    got += 1;
                    queued.fetch_sub(m.requests(), Ordering::Relaxed);
                    if !on(&mut shard, m, now, &mut out) {
                        d.dispatch(&mut out);
                        break 'run;
                    }
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => break 'run,
            }
        }
        if last_tick.elapsed() >= Duration::from_millis(1) {
            shard.tick(unix_ms(), &mut out);
            last_tick = Instant::now();
        }
        d.dispatch(&mut out);
        if got == 0 {
            // Woken by `ShardTx::send`; the timeout keeps the tick (and a message sent
            // before this thread was known) at most 1 ms late.
            std::thread::park_timeout(Duration::from_millis(1));
        }
    }
    shard.tick(unix_ms(), &mut out);
    d.dispatch(&mut out);
    let id = shard.id();
    if let Err(e) = shard.close() {
        tracing::warn!("shard {id}: closing its log: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Mutex;

    use super::*;
    use crate::{MemStore, RouterConfig};

    #[derive(Default)]
    struct Collect(Mutex<Vec<FromRouter>>);

    impl Dispatch for Collect {
        fn dispatch(&self, out: &mut Vec<FromRouter>) {
            self.0.lock().unwrap().append(out);
        }
    }

    fn register(conn: u64, phone: u64) -> ToRouter {
        ToRouter::Register {
            conn: ConnId(conn),
            phone: Phone::new(phone).unwrap(),
            source: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    #[test]
    fn the_inbox_counts_requests_against_its_bound() {
        let (tx, rx) = inbox(3);
        assert_eq!((tx.room(), tx.queued()), (3, 0));
        assert!(tx.send(ShardMsg::Batch(vec![
            register(1, 15550001),
            register(2, 15550002)
        ])));
        assert_eq!((tx.room(), tx.queued()), (1, 2));
        // Going past the bound is the sender's choice (receipts between shards do).
        assert!(tx.send(ShardMsg::Req(register(3, 15550003))));
        assert!(tx.send(ShardMsg::Req(register(4, 15550004))));
        assert_eq!((tx.room(), tx.queued()), (0, 4));
        // Control messages count nothing.
        assert!(tx.send(ShardMsg::GatewayGone(1)));
        assert_eq!(tx.queued(), 4);
        drop(rx);
        assert!(!tx.send(ShardMsg::Stop), "a send to a gone shard says so");
    }

    #[test]
    fn run_hands_requests_to_the_shard_dispatches_and_stops() {
        let config = RouterConfig::default();
        let map = PartitionMap::even(config.partitions, 1);
        let random: crate::Random = Box::new(|b: &mut [u8]| {
            b.fill(7);
            true
        });
        let shard = Shard::with_store(0, map, config, MemStore::new(), random, unix_ms());
        let (tx, rx) = inbox(16);
        let out = Arc::new(Collect::default());
        let thread = {
            let out = Arc::clone(&out);
            std::thread::spawn(move || run(shard, rx, out))
        };
        assert!(tx.send(ShardMsg::Batch(vec![
            register(1, 15550001),
            register(2, 15550002)
        ])));
        assert!(tx.send(ShardMsg::Stop));
        thread.join().unwrap();
        assert_eq!(tx.queued(), 0, "what the shard took is no longer counted");
        let out = out.0.lock().unwrap();
        let sms = out
            .iter()
            .filter(|o| matches!(o, FromRouter::Sms { .. }))
            .count();
        assert_eq!(sms, 2, "each registration sent its PIN: {out:?}");
    }
}
