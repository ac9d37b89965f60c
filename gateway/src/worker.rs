//! What a gateway worker is told ([`WorkerConfig`], [`WorkerKnobs`]) and what it reports
//! ([`WorkerStats`]), whatever drives its sockets (the io_uring driver today).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use wire::link::ToRouter;

use crate::conn::{Conn, Limits};
use crate::link::RouterLink;

/// Settings of one worker.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Gateway id, the process's upgrade epoch and this worker's index: what every
    /// `ConnId` of its connections carries (`wire::link::ConnId`).
    pub gateway: u8,
    pub epoch: u8,
    pub worker: u8,
    pub ring_entries: u32,
    /// Buffers in the provided-buffer ring (power of two, ≤ 32,768) and their size.
    pub buffers: u16,
    pub buffer_bytes: u32,
    /// Connections this worker holds at most; more are closed at accept.
    pub conns_max: usize,
    /// New connections per second this worker accepts; more are closed at once, so a
    /// reconnect storm cannot starve established connections.
    pub accepts_per_sec: u32,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            gateway: 0,
            epoch: 0,
            worker: 0,
            ring_entries: 4096,
            buffers: 1024,
            buffer_bytes: 16 * 1024,
            conns_max: 100_000,
            accepts_per_sec: 20_000,
        }
    }
}

/// A figure described once: its metric name, type and help, and where its value is.
/// The admin API's `/metrics`, the reporter and the documentation test read these.
#[derive(Clone, Copy, Debug)]
pub struct Figure<T> {
    pub name: &'static str,
    /// `counter` or `gauge` (Prometheus types).
    pub kind: &'static str,
    pub help: &'static str,
    pub get: fn(&T) -> u64,
}

/// Defines [`WorkerStats`] from one table: each field with its type, how workers add
/// up (`sum`, or `max` for a largest-of), its metric name and help.
macro_rules! worker_stats {
    ($($field:ident: $kind:ident $combine:ident, $name:literal, $help:literal;)*) => {
        /// Worker counters and gauges, kept by the worker alone in plain fields (no
        /// atomics on the hot path) and copied to [`WorkerStats::publish`]'s shared
        /// place every sweep (250 ms) and when the worker stops; readers add the workers
        /// up. Each field is described in [`WorkerStats::FIGURES`].
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct WorkerStats {
            $(#[doc = $help] pub $field: u64,)*
        }

        impl WorkerStats {
            /// Every figure, in the order `/metrics` shows them.
            pub const FIGURES: &'static [Figure<WorkerStats>] = &[
                $(Figure {
                    name: $name,
                    kind: stringify!($kind),
                    help: $help,
                    get: |w| w.$field,
                },)*
            ];

            /// Adds another worker's figures (gauges too: the sum over workers, or the
            /// largest where a figure is a largest-of).
            pub fn add(&mut self, o: &WorkerStats) {
                $(worker_stats!(@combine $combine, self.$field, o.$field);)*
            }
        }
    };
    (@combine sum, $a:expr, $b:expr) => { $a += $b };
    (@combine max, $a:expr, $b:expr) => { $a = $a.max($b) };
}

worker_stats! {
    accepted: counter sum, "switchboard_gateway_accepted_total",
        "Connections accepted and set up.";
    refused_rate: counter sum, "switchboard_gateway_refused_rate_total",
        "Connections refused over the accept rate.";
    refused_full: counter sum, "switchboard_gateway_refused_full_total",
        "Connections refused at conns_per_worker.";
    refused_stopping: counter sum, "switchboard_gateway_refused_stopping_total",
        "Connections refused while stopping.";
    closed: counter sum, "switchboard_gateway_closed_total",
        "Connections closed.";
    open: gauge sum, "switchboard_gateway_connections",
        "Connections open.";
    handshakes_full: counter sum, "switchboard_gateway_handshakes_full_total",
        "Full TLS handshakes completed.";
    handshakes_resumed: counter sum, "switchboard_gateway_handshakes_resumed_total",
        "Resumed TLS handshakes completed.";
    handshakes_failed: counter sum, "switchboard_gateway_handshakes_failed_total",
        "Connections that ended during the TLS handshake.";
    bytes_in: counter sum, "switchboard_gateway_bytes_in_total",
        "Bytes received from client sockets.";
    bytes_out: counter sum, "switchboard_gateway_bytes_out_total",
        "Bytes sent to client sockets.";
    requests: counter sum, "switchboard_gateway_requests_total",
        "Requests handed to the router link.";
    replies: counter sum, "switchboard_gateway_replies_total",
        "Router replies for live connections.";
    link_blocked: gauge sum, "switchboard_gateway_link_blocked",
        "Requests held back by a full router link (measured at each sweep).";
    backlog_bytes_sum: gauge sum, "switchboard_gateway_backlog_bytes",
        "Bytes waiting to be sent, all connections (measured at each sweep).";
    backlog_bytes_max: gauge max, "switchboard_gateway_backlog_bytes_max",
        "Bytes waiting to be sent, largest connection (measured at each sweep).";
}

/// Where a worker publishes its counters for readers on other threads.
pub type StatsCell = Arc<std::sync::Mutex<WorkerStats>>;

impl WorkerStats {
    /// Copies the figures to their shared place.
    pub fn publish(&self, cell: &Option<StatsCell>) {
        if let Some(c) = cell {
            *c.lock().unwrap_or_else(|e| e.into_inner()) = self.clone();
        }
    }
}

/// What a worker takes from the runtime knobs.
#[derive(Clone, Debug)]
pub struct WorkerKnobs {
    pub accepts_per_sec: u32,
    pub limits: Arc<Limits>,
}

/// Whether a connection just accepted is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// The worker is stopping or draining for an upgrade.
    Stopping,
    /// Over `accepts_per_sec` in the current second.
    Rate,
    /// At `conns_max`.
    Full,
}

/// The accept gate: at most `accepts_per_sec` new connections per one-second window (a
/// reconnect storm cannot starve established connections), none while stopping, none
/// past `conns_max`. Sans-I/O: the time is passed in.
#[derive(Debug, Default)]
pub struct AcceptGate {
    window_started_ms: u64,
    in_window: u32,
}

impl AcceptGate {
    /// Decides for one accepted connection at `now_ms` (it counts against the rate
    /// whatever the answer, as the kernel made it).
    pub fn admit(&mut self, now_ms: u64, stopping: bool, open: u64, cfg: &WorkerConfig) -> Admit {
        if now_ms >= self.window_started_ms + 1000 {
            self.window_started_ms = now_ms;
            self.in_window = 0;
        }
        self.in_window += 1;
        if stopping {
            Admit::Stopping
        } else if self.in_window > cfg.accepts_per_sec {
            Admit::Rate
        } else if open as usize >= cfg.conns_max {
            Admit::Full
        } else {
            Admit::Yes
        }
    }
}

/// Draining for an upgrade: connections are asked to reconnect at `per_sec` from the
/// start (one at once), visiting the slots round-robin. Sans-I/O: the time is passed in
/// and the caller closes what [`Drain::next`] picks.
#[derive(Debug)]
pub struct Drain {
    per_sec: u32,
    started_ms: u64,
    drained: u64,
    cursor: usize,
}

impl Drain {
    pub fn start(per_sec: u32, now_ms: u64) -> Drain {
        Drain {
            per_sec,
            started_ms: now_ms,
            drained: 0,
            cursor: 0,
        }
    }

    /// Connections that may have been asked to leave by `now_ms`.
    pub fn allowed(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.started_ms) * u64::from(self.per_sec) / 1000 + 1
    }

    /// Visits at most `slots` slots from where the last call stopped, while fewer than
    /// [`Drain::allowed`] were asked; `close(i)` asks slot `i`'s connection to leave and
    /// says whether there was a live one. Returns how many were asked now.
    pub fn next(&mut self, now_ms: u64, slots: usize, mut close: impl FnMut(usize) -> bool) -> u64 {
        let allowed = self.allowed(now_ms);
        let (before, mut visited) = (self.drained, 0);
        while self.drained < allowed && visited < slots {
            if self.cursor >= slots {
                self.cursor = 0;
            }
            let i = self.cursor;
            self.cursor += 1;
            visited += 1;
            if close(i) {
                self.drained += 1;
            }
        }
        self.drained - before
    }
}

/// The worker slot a request came from (its `ConnId`'s slot), if any.
pub fn slot_of(req: &ToRouter) -> Option<u32> {
    match req {
        ToRouter::Register { conn, .. }
        | ToRouter::Verify { conn, .. }
        | ToRouter::Login { conn, .. }
        | ToRouter::Send { conn, .. }
        | ToRouter::Ack { conn, .. }
        | ToRouter::Read { conn, .. }
        | ToRouter::Closed { conn, .. } => Some(conn.slot()),
        ToRouter::Receipt { .. } => None,
    }
}

/// Requests on their way to the router link, and the connections paused behind a full
/// one. Sans-I/O: the driver pauses and resumes reading the slots it is told to.
#[derive(Debug, Default)]
pub struct Backpressure {
    /// Requests the link handed back, oldest first.
    blocked: VecDeque<ToRouter>,
    /// Slots with a request in `blocked`.
    paused: Vec<u32>,
}

/// What one [`Backpressure::forward`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// Requests the link took.
    pub sent: u64,
    /// Slots with a request held back now: stop reading them (if not already).
    pub pause: Vec<u32>,
    /// Slots held back before and not now: read them again (if paused).
    pub resume: Vec<u32>,
}

impl Backpressure {
    /// Offers held-back requests (oldest first), then `new` ones, to the link. A slot
    /// with a request handed back has its later requests held behind it, in order.
    pub fn forward(&mut self, new: &mut Vec<ToRouter>, link: &mut dyn RouterLink) -> Forwarded {
        let mut done = Forwarded::default();
        if self.blocked.is_empty() && new.is_empty() {
            return done;
        }
        let mut stuck = BTreeSet::new();
        let mut still = VecDeque::new();
        let pending: Vec<ToRouter> = self.blocked.drain(..).chain(new.drain(..)).collect();
        for req in pending {
            let slot = slot_of(&req);
            if slot.is_some_and(|s| stuck.contains(&s)) {
                still.push_back(req);
                continue;
            }
            match link.send(req) {
                Ok(()) => done.sent += 1,
                Err(req) => {
                    if let Some(s) = slot {
                        stuck.insert(s);
                    }
                    still.push_back(req);
                }
            }
        }
        self.blocked = still;
        // Only the slots stuck now or paused before change (not every slot: this runs
        // every loop turn, with up to a hundred thousand connections).
        done.resume = (self.paused.drain(..))
            .filter(|s| !stuck.contains(s))
            .collect();
        done.resume.sort_unstable();
        done.resume.dedup();
        done.pause = stuck.into_iter().collect();
        self.paused = done.pause.clone();
        done
    }

    /// Requests held back by a full link.
    pub fn blocked(&self) -> usize {
        self.blocked.len()
    }
}

/// What a timer sweep found: the connections whose timers ran (the driver then sends
/// or closes for them) and the bytes waiting to be sent.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub touched: Vec<u32>,
    /// Bytes waiting to be sent, summed over connections and the largest.
    pub backlog_sum: u64,
    pub backlog_max: u64,
}

/// The worker's periodic sweep over its connections, given as (slot, connection, bytes
/// the driver holds for it): runs the timers that are due at `now_ms` (handshake, login
/// and idle timeouts, pings) and measures what waits to be sent. Sans-I/O.
pub fn sweep<'a>(
    conns: impl Iterator<Item = (u32, &'a mut Conn, usize)>,
    now_ms: u64,
    to_router: &mut Vec<ToRouter>,
) -> Swept {
    let mut s = Swept::default();
    for (slot, conn, held) in conns {
        if conn.deadline_ms() <= now_ms {
            conn.timer(now_ms, to_router);
            s.touched.push(slot);
        }
        let b = (held + conn.buffered_bytes()) as u64;
        s.backlog_sum += b;
        s.backlog_max = s.backlog_max.max(b);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_add_up_by_the_table_and_every_figure_is_described() {
        let a = WorkerStats {
            accepted: 3,
            open: 2,
            backlog_bytes_max: 10,
            ..WorkerStats::default()
        };
        let b = WorkerStats {
            accepted: 4,
            open: 1,
            backlog_bytes_max: 7,
            ..WorkerStats::default()
        };
        let mut t = a.clone();
        t.add(&b);
        assert_eq!((t.accepted, t.open, t.backlog_bytes_max), (7, 3, 10));
        let names: std::collections::BTreeSet<_> =
            WorkerStats::FIGURES.iter().map(|f| f.name).collect();
        assert_eq!(names.len(), WorkerStats::FIGURES.len(), "one name each");
        for f in WorkerStats::FIGURES {
            assert!(matches!(f.kind, "counter" | "gauge"), "{}", f.name);
            assert_eq!(
                f.kind == "counter",
                f.name.ends_with("_total"),
                "{}",
                f.name
            );
        }
        let accepted = WorkerStats::FIGURES
            .iter()
            .find(|f| f.name == "switchboard_gateway_accepted_total")
            .unwrap();
        assert_eq!((accepted.get)(&t), 7);
    }

    #[test]
    fn the_accept_gate_holds_the_rate_per_second_then_opens_again() {
        let cfg = WorkerConfig {
            accepts_per_sec: 3,
            conns_max: 10,
            ..WorkerConfig::default()
        };
        let mut g = AcceptGate::default();
        let t = 1_000_000;
        let got: Vec<Admit> = (0..5).map(|i| g.admit(t + i, false, 0, &cfg)).collect();
        assert_eq!(
            got,
            [Admit::Yes, Admit::Yes, Admit::Yes, Admit::Rate, Admit::Rate]
        );
        assert_eq!(g.admit(t + 999, false, 0, &cfg), Admit::Rate);
        assert_eq!(
            g.admit(t + 1000, false, 0, &cfg),
            Admit::Yes,
            "a new second"
        );
        assert_eq!(g.admit(t + 1001, false, 10, &cfg), Admit::Full);
        assert_eq!(g.admit(t + 1002, true, 0, &cfg), Admit::Stopping);
        // Refused ones counted: the window is full now.
        assert_eq!(g.admit(t + 1003, false, 0, &cfg), Admit::Rate);
    }

    #[test]
    fn a_drain_asks_connections_to_leave_at_its_pace_round_robin() {
        let mut live = [true, false, true, true, true, false, true];
        let mut d = Drain::start(2, 10_000); // two a second, one at once
        let close = |live: &mut [bool], i: usize| std::mem::replace(&mut live[i], false);
        assert_eq!(d.next(10_000, live.len(), |i| close(&mut live, i)), 1);
        assert_eq!(live, [false, false, true, true, true, false, true]);
        assert_eq!(d.next(10_400, live.len(), |i| close(&mut live, i)), 0);
        assert_eq!(d.next(10_500, live.len(), |i| close(&mut live, i)), 1);
        assert!(!live[2], "the next live slot, skipping the empty one");
        assert_eq!(d.next(12_000, live.len(), |i| close(&mut live, i)), 3);
        assert!(live.iter().all(|l| !l));
        // Nothing left: it visits each slot once and stops.
        assert_eq!(d.next(60_000, live.len(), |i| close(&mut live, i)), 0);
    }

    /// A link that takes `room` requests, then hands them back.
    struct Link {
        room: usize,
        got: Vec<ToRouter>,
    }

    impl RouterLink for Link {
        fn send(&mut self, req: ToRouter) -> Result<(), ToRouter> {
            if self.room == 0 {
                return Err(req);
            }
            self.room -= 1;
            self.got.push(req);
            Ok(())
        }
        fn flush(&mut self) -> bool {
            false
        }
    }

    fn ack(slot: u32, seq: u64) -> ToRouter {
        ToRouter::Ack {
            conn: wire::link::ConnId::new(0, 0, 0, 1, slot),
            user: wire::Phone::new(15550001).unwrap(),
            seq,
        }
    }

    fn seq_of(r: &ToRouter) -> u64 {
        match r {
            ToRouter::Ack { seq, .. } => *seq,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_full_link_pauses_the_slots_it_refused_and_keeps_their_order() {
        let mut bp = Backpressure::default();
        let mut link = Link {
            room: 2,
            got: vec![],
        };
        // Slot 1: seq 1, 2, 3; slot 2: seq 10. Room for two.
        let mut new = vec![ack(1, 1), ack(2, 10), ack(1, 2), ack(1, 3)];
        let f = bp.forward(&mut new, &mut link);
        assert_eq!(f.sent, 2);
        assert_eq!((f.pause, f.resume), (vec![1], vec![]));
        assert_eq!(bp.blocked(), 2, "slot 1's 2 and 3 wait, in order");
        // Slot 2 goes on while slot 1 waits; slot 1's new request waits behind its own.
        link.room = 1;
        let mut new = vec![ack(1, 4)];
        let f = bp.forward(&mut new, &mut link);
        assert_eq!(f.sent, 1);
        assert_eq!((f.pause, f.resume), (vec![1], vec![]));
        link.room = 10;
        let f = bp.forward(&mut vec![], &mut link);
        assert_eq!(f.sent, 2);
        assert_eq!((f.pause, f.resume), (vec![], vec![1]), "read again");
        assert_eq!(bp.blocked(), 0);
        let slot1: Vec<u64> = (link.got.iter())
            .filter(|r| slot_of(r) == Some(1))
            .map(seq_of)
            .collect();
        assert_eq!(slot1, [1, 2, 3, 4]);
        // Nothing to do: nothing changes.
        assert_eq!(bp.forward(&mut vec![], &mut link), Forwarded::default());
    }

    #[test]
    fn a_sweep_runs_the_timers_that_are_due_and_measures_the_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let (id, _) = crate::tls::Identity::self_signed_in(dir.path(), &[]).unwrap();
        let tls = crate::tls::server_config(id).unwrap();
        let limits = Arc::new(Limits {
            handshake_timeout_ms: 100,
            ..Limits::default()
        });
        let peer = std::net::IpAddr::from([127, 0, 0, 1]);
        let conn = |t0: u64, n: u32| {
            let id = wire::link::ConnId::new(0, 0, 0, 1, n);
            Conn::new(Arc::clone(&tls), Arc::clone(&limits), id, peer, t0).unwrap()
        };
        // Slot 3 started at 0 (due at 100), slot 5 at 50 (due at 150).
        let (mut old, mut young) = (conn(0, 3), conn(50, 5));
        let mut to_router = vec![];
        let swept = sweep(
            [(3, &mut old, 10), (5, &mut young, 30)].into_iter(),
            120,
            &mut to_router,
        );
        assert_eq!(swept.touched, [3], "only the due timer ran");
        assert!(old.ended().is_some(), "the handshake took too long");
        assert!(young.ended().is_none());
        assert_eq!((swept.backlog_sum, swept.backlog_max), (40, 30));
        let swept = sweep([(5, &mut young, 0)].into_iter(), 150, &mut to_router);
        assert_eq!(swept.touched, [5]);
    }
}
