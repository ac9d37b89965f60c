//! What a gateway worker is told ([`WorkerConfig`], [`WorkerKnobs`]) and what it reports
//! ([`WorkerStats`]), whatever drives its sockets (the io_uring driver today).

use std::sync::Arc;

use crate::conn::Limits;

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
}
