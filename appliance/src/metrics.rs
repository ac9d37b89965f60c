//! The appliance's own figures, described once: each metric's name, type and help
//! beside where its value comes from ([`families`]), which the admin API's `/metrics`,
//! the reporter's averages and alerts, the configuration's check of alert rules and the
//! documentation test all read. Also what the reporter shares with the admin API
//! ([`Activity`]). Nothing here depends on the rest of the appliance.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use gateway::worker::WorkerStats;
use router::ShardReport;

/// The traffic mirror's counters (the tee, when configured).
pub trait TeeFigures: Send + Sync {
    fn sent(&self) -> u64;
    fn dropped(&self) -> u64;
}

/// Where queue lengths come from: the queues' own lengths, read on the admin thread when
/// a figure is asked for (nothing on the sending or receiving path counts for it).
pub trait Queues: Send + Sync {
    /// Messages waiting in each shard's inbox: (shard, length). A message is one
    /// request batch of a gateway worker's loop turn, or one request from a link.
    fn shard_inboxes(&self) -> Vec<(u16, usize)>;
    /// Frames waiting in each link's queue: (link, length), e.g. ("router 1", 12).
    fn links(&self) -> Vec<(String, usize)>;
    /// Replies waiting for each gateway worker: (worker, length).
    fn worker_replies(&self) -> Vec<(usize, usize)> {
        vec![]
    }
}

/// One metric: name, type, help, and a value per label set.
pub struct Family {
    pub name: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
    pub values: Vec<(String, u64)>,
}

fn worker_families(workers: &[WorkerStats]) -> Vec<Family> {
    (WorkerStats::FIGURES.iter())
        .map(|f| Family {
            name: f.name,
            kind: f.kind,
            help: f.help,
            values: (workers.iter().enumerate())
                .map(|(i, w)| (format!("worker=\"{i}\""), (f.get)(w)))
                .collect(),
        })
        .collect()
}

fn shard_families(shards: &[ShardReport]) -> Vec<Family> {
    type Get = fn(&ShardReport) -> u64;
    let defs: [(&'static str, &'static str, &'static str, Get); 34] = [
        (
            "switchboard_router_sessions",
            "gauge",
            "Logged-in users.",
            |r| r.stats.sessions,
        ),
        (
            "switchboard_router_registrations_total",
            "counter",
            "Registrations completed.",
            |r| r.stats.registrations,
        ),
        (
            "switchboard_router_logins_total",
            "counter",
            "Logins.",
            |r| r.stats.logins,
        ),
        (
            "switchboard_router_auth_failures_total",
            "counter",
            "Failed logins and verifications.",
            |r| r.stats.auth_failures,
        ),
        (
            "switchboard_router_messages_accepted_total",
            "counter",
            "Messages stored for their recipients.",
            |r| r.stats.accepted,
        ),
        (
            "switchboard_router_messages_duplicate_total",
            "counter",
            "Resent messages acknowledged without storing again.",
            |r| r.stats.duplicates,
        ),
        (
            "switchboard_router_messages_pushed_total",
            "counter",
            "Messages and receipts sent towards recipients.",
            |r| r.stats.pushed,
        ),
        (
            "switchboard_router_messages_delivered_total",
            "counter",
            "Messages acknowledged by their recipients (then erased).",
            |r| r.stats.delivered,
        ),
        (
            "switchboard_router_receipts_stored_total",
            "counter",
            "Delivery receipts stored for senders.",
            |r| r.stats.receipts_stored,
        ),
        (
            "switchboard_router_receipts_dropped_total",
            "counter",
            "Delivery receipts dropped (sender's queue full).",
            |r| r.stats.receipts_dropped,
        ),
        (
            "switchboard_router_reads_unmatched_total",
            "counter",
            "Read receipts dropped: the reader never received that message.",
            |r| r.stats.reads_unmatched,
        ),
        (
            "switchboard_router_refused_disk_full_total",
            "counter",
            "Sends refused: the disk is full (DiskFull).",
            |r| r.stats.refused_disk_full,
        ),
        (
            "switchboard_router_ids_reused_total",
            "counter",
            "Sends refused: the message id was used already with another body (IdReused).",
            |r| r.stats.ids_reused,
        ),
        (
            "switchboard_router_refused_full_total",
            "counter",
            "Sends refused: the recipient's or the shard's queue is full.",
            |r| r.stats.refused_full,
        ),
        (
            "switchboard_router_refused_unknown_total",
            "counter",
            "Sends refused: unknown recipient.",
            |r| r.stats.refused_unknown,
        ),
        (
            "switchboard_router_storage_errors_total",
            "counter",
            "Storage errors.",
            |r| r.stats.storage_errors,
        ),
        (
            "switchboard_router_waiting_durable",
            "gauge",
            "Answers waiting for the log to be durable.",
            |r| r.stats.waiting_durable,
        ),
        (
            "switchboard_router_requests_total",
            "counter",
            "Requests handled (from gateways and tees).",
            |r| r.stats.requests,
        ),
        (
            "switchboard_storage_pending_messages",
            "gauge",
            "Messages pending in the log.",
            |r| r.log.pending_messages,
        ),
        (
            "switchboard_storage_pending_bytes",
            "gauge",
            "Body bytes pending in the log.",
            |r| r.log.pending_bytes,
        ),
        (
            "switchboard_storage_users_with_pending",
            "gauge",
            "Users with pending messages.",
            |r| r.log.users_with_pending,
        ),
        (
            "switchboard_storage_disk_full",
            "gauge",
            "1 while the disk holding the log has less free than the reserve kept for acknowledgements (new messages refused with DiskFull).",
            |r| r.log.disk_full as u64,
        ),
        (
            "switchboard_storage_flush_failed",
            "gauge",
            "1 once flushing the log failed (msync or directory fsync): nothing more is acknowledged and writes are refused until a restart.",
            |r| r.log.flush_failed as u64,
        ),
        (
            "switchboard_storage_disk_free_bytes",
            "gauge",
            "Free bytes on the filesystem holding the log (looked at every second).",
            |r| r.log.disk_free_bytes,
        ),
        (
            "switchboard_storage_segments",
            "gauge",
            "Log segments on disk.",
            |r| r.log.segments,
        ),
        (
            "switchboard_storage_disk_bytes",
            "gauge",
            "Bytes of log segments on disk.",
            |r| r.log.disk_bytes,
        ),
        (
            "switchboard_storage_expired_total",
            "counter",
            "Messages dropped at expiry.",
            |r| r.log.expired,
        ),
        (
            "switchboard_storage_flushes_total",
            "counter",
            "Log flushes (msync).",
            |r| r.log.flushes,
        ),
        (
            "switchboard_storage_flush_microseconds_total",
            "counter",
            "Time spent in log flushes, microseconds.",
            |r| r.log.flush_us_total,
        ),
        (
            "switchboard_storage_flush_us_max",
            "gauge",
            "Slowest log flush, microseconds.",
            |r| r.log.flush_us_max,
        ),
        (
            "switchboard_storage_prepare_stalls_total",
            "counter",
            "Segment switches that waited for the next segment to be prepared.",
            |r| r.log.prepare_stalls,
        ),
        (
            "switchboard_storage_prepare_stall_microseconds_total",
            "counter",
            "Time the log's writer waited for the next segment, microseconds.",
            |r| r.log.prepare_stall_us,
        ),
        (
            "switchboard_storage_prepare_takeovers_total",
            "counter",
            "Segments the log's writer made itself because the preparer was starved of CPU.",
            |r| r.log.prepare_takeovers,
        ),
        (
            "switchboard_storage_rescue_flushes_total",
            "counter",
            "Flushes handed to the log's rescue thread because the flusher was starved of CPU.",
            |r| r.log.rescue_flushes,
        ),
    ];
    defs.iter()
        .map(|(name, kind, help, get)| Family {
            name,
            kind,
            help,
            values: shards
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("shard=\"{i}\""), get(r)))
                .collect(),
        })
        .collect()
}

/// Every metric of the appliance's own figures, from what workers and shards published
/// and the queues' lengths now.
pub fn families(
    workers: &[WorkerStats],
    shards: &[ShardReport],
    tee: Option<&dyn TeeFigures>,
    queues: Option<&dyn Queues>,
) -> Vec<Family> {
    let mut all = worker_families(workers);
    all.extend(shard_families(shards));
    let tee_figure = |f: fn(&dyn TeeFigures) -> u64| vec![(String::new(), tee.map_or(0, f))];
    all.push(Family {
        name: "switchboard_tee_sent_total",
        kind: "counter",
        help: "Requests mirrored to the shadow cluster.",
        values: tee_figure(|t| t.sent()),
    });
    all.push(Family {
        name: "switchboard_tee_dropped_total",
        kind: "counter",
        help: "Mirrored requests dropped: the shadow's queue was full (slow or down).",
        values: tee_figure(|t| t.dropped()),
    });
    let q = queues;
    all.push(Family {
        name: "switchboard_shard_inbox",
        kind: "gauge",
        help: "Requests waiting in a router shard's inbox (at most router.inbox_requests_max from gateways).",
        values: q.map_or(vec![], |q| {
            q.shard_inboxes()
                .into_iter()
                .map(|(s, n)| (format!("shard=\"{s}\""), n as u64))
                .collect()
        }),
    });
    all.push(Family {
        name: "switchboard_link_queue",
        kind: "gauge",
        help: "Frames waiting to go out on a link to another node (or the tee's shadow).",
        values: q.map_or(vec![], |q| {
            q.links()
                .into_iter()
                .map(|(l, n)| (format!("link=\"{l}\""), n as u64))
                .collect()
        }),
    });
    all.push(Family {
        name: "switchboard_gateway_reply_queue",
        kind: "gauge",
        help: "Router replies waiting for a gateway worker (bounded by its connections' requests and delivery windows).",
        values: q.map_or(vec![], |q| {
            q.worker_replies()
                .into_iter()
                .map(|(w, n)| (format!("worker=\"{w}\""), n as u64))
                .collect()
        }),
    });
    all
}

/// Every metric name of the appliance's own figures (alert rules name one of these).
pub fn metric_names() -> Vec<&'static str> {
    families(&[], &[], None, None)
        .iter()
        .map(|f| f.name)
        .collect()
}

/// A value kept as exponentially decaying averages over about 1, 10 and 100 samples
/// (one sample a second).
#[derive(Clone, Copy, Debug, Default)]
pub struct Avg {
    pub last: f64,
    pub s1: f64,
    pub s10: f64,
    pub s100: f64,
    started: bool,
}

impl Avg {
    pub fn add(&mut self, v: f64) {
        if !self.started {
            *self = Avg {
                last: v,
                s1: v,
                s10: v,
                s100: v,
                started: true,
            };
            return;
        }
        self.last = v;
        self.s1 = v;
        self.s10 += (v - self.s10) / 10.0;
        self.s100 += (v - self.s100) / 100.0;
    }
}

/// What the reporter shares with the admin API.
#[derive(Default)]
pub struct Activity {
    /// Figure → averages; counters as rates per second, gauges as values.
    pub figures: BTreeMap<String, Avg>,
    /// Alert name → since when it fires.
    pub firing: BTreeMap<String, u64>,
}

pub type ActivityCell = Arc<Mutex<Activity>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_decay_towards_new_values() {
        let mut a = Avg::default();
        a.add(100.0);
        assert_eq!((a.s1, a.s10, a.s100), (100.0, 100.0, 100.0));
        for _ in 0..10 {
            a.add(0.0);
        }
        assert_eq!(a.s1, 0.0);
        assert!(a.s10 < 40.0 && a.s10 > 30.0, "{}", a.s10); // 100 × 0.9^10 ≈ 34.9
        assert!(a.s100 > 90.0, "{}", a.s100);
    }

    #[test]
    fn every_figure_has_one_name_and_a_known_kind() {
        let names = metric_names();
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "a name twice: {names:?}");
        for f in families(&[], &[], None, None) {
            assert!(
                matches!(f.kind, "counter" | "gauge"),
                "{}: {}",
                f.name,
                f.kind
            );
            assert!(f.name.starts_with("switchboard_"), "{}", f.name);
            assert!(!f.help.is_empty(), "{}", f.name);
        }
    }
}
