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

/// Worker counters and gauges, kept by the worker alone in plain fields (no atomics on
/// the hot path) and copied to [`WorkerStats::publish`]'s shared place every sweep
/// (250 ms) and when the worker stops; readers add the workers up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Connections accepted and set up.
    pub accepted: u64,
    /// Connections refused at accept: over the accept rate, at `conns_max`, stopping.
    pub refused_rate: u64,
    pub refused_full: u64,
    pub refused_stopping: u64,
    pub closed: u64,
    /// Gauge: connections open.
    pub open: u64,
    /// TLS handshakes completed (full, resumed) and connections that ended during one.
    pub handshakes_full: u64,
    pub handshakes_resumed: u64,
    pub handshakes_failed: u64,
    /// Bytes received from and sent to sockets (TLS records).
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Requests handed to the router link, and replies from it for a live connection.
    pub requests: u64,
    pub replies: u64,
    /// Gauges, measured at each sweep: requests held back by a full link; bytes waiting
    /// to be sent, summed over connections and the largest.
    pub link_blocked: u64,
    pub backlog_bytes_sum: u64,
    pub backlog_bytes_max: u64,
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

    /// Adds another worker's figures (gauges too: the sum over workers; the maximum for
    /// `backlog_bytes_max`).
    pub fn add(&mut self, o: &WorkerStats) {
        self.accepted += o.accepted;
        self.refused_rate += o.refused_rate;
        self.refused_full += o.refused_full;
        self.refused_stopping += o.refused_stopping;
        self.closed += o.closed;
        self.open += o.open;
        self.handshakes_full += o.handshakes_full;
        self.handshakes_resumed += o.handshakes_resumed;
        self.handshakes_failed += o.handshakes_failed;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.requests += o.requests;
        self.replies += o.replies;
        self.link_blocked += o.link_blocked;
        self.backlog_bytes_sum += o.backlog_bytes_sum;
        self.backlog_bytes_max = self.backlog_bytes_max.max(o.backlog_bytes_max);
    }
}

/// What a worker takes from the runtime knobs.
#[derive(Clone, Debug)]
pub struct WorkerKnobs {
    pub accepts_per_sec: u32,
    pub limits: Arc<Limits>,
}
