//! The admin listener: Prometheus `/metrics` and a JSON `/status`, token-authenticated,
//! on a loopback or private address only (`[admin]` in the configuration).
//!
//! The figures come from the places gateway workers and router shards publish their
//! own counters to (every 250 ms and 100 ms); nothing here touches the hot path.
//! Requests are served one at a time on one thread (tiny_http): the API is for
//! operators and scrapers, not for load.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::uring::{StatsCell, WorkerStats};
use router::{ReportCell, ShardReport};
use serde::Deserialize;

/// `[admin]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve the admin API. Default: true.
    pub enabled: bool,
    /// Where: a loopback or private (RFC 1918, ULA) address; port 0 picks one.
    /// Default: `127.0.0.1:7480`, and then only a warning if that port is taken (a
    /// second appliance on the host); an address given here that cannot be bound stops
    /// the start.
    pub listen: Option<SocketAddr>,
    /// File holding the bearer token (one line). Default: `data_dir/admin.token`,
    /// created with a random token (mode 0600) when missing.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: None,
            token_file: None,
        }
    }
}

/// The admin address when none is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7480";

impl AdminConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.enabled && !is_private(self.addr().ip()) {
            return Err(format!(
                "admin.listen: {} is not a loopback or private address (the admin API must not face the public network)",
                self.addr()
            ));
        }
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid"))
    }
}

/// Loopback, RFC 1918, link-local, or IPv6 unique-local.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Reads the token, or creates the file with a new random one.
pub fn load_or_make_token(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => {
            let t = t.trim().to_string();
            if t.len() < 16 {
                return Err(format!(
                    "{}: the admin token must be at least 16 characters",
                    path.display()
                ));
            }
            Ok(t)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut raw = [0u8; 24];
            rustls::crypto::aws_lc_rs::default_provider()
                .secure_random
                .fill(&mut raw)
                .map_err(|_| "no random numbers for the admin token".to_string())?;
            let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode_0600()
                .open(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            writeln!(f, "{token}").map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(token)
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            self.mode(0o600)
        }
        #[cfg(not(unix))]
        self
    }
}

/// Where the admin API reads its figures.
pub struct Sources {
    pub workers: Vec<StatsCell>,
    pub shards: Vec<ReportCell>,
    pub started: Instant,
    /// Knobs and reload (`serve`; `None` in the split roles so far).
    pub control: Option<Arc<crate::control::Control>>,
    /// The activity reporter's averages and firing alerts, when it runs.
    pub activity: Option<crate::reporter::ActivityCell>,
    /// The traffic mirror, when configured.
    #[cfg(target_os = "linux")]
    pub tee: Option<Arc<crate::tee::Tee>>,
    /// The queues between threads and over links, measured when asked.
    pub queues: Option<Arc<dyn Queues>>,
}

/// Where queue lengths come from: the queues' own lengths, read on the admin thread when
/// a figure is asked for (nothing on the sending or receiving path counts for it).
pub trait Queues: Send + Sync {
    /// Messages waiting in each shard's inbox: (shard, length). A message is one
    /// request batch of a gateway worker's loop turn, or one request from a link.
    fn shard_inboxes(&self) -> Vec<(u16, usize)>;
    /// Frames waiting in each link's queue: (link, length), e.g. ("router 1", 12).
    fn links(&self) -> Vec<(String, usize)>;
}

impl Sources {
    pub fn workers_total(&self) -> WorkerStats {
        let mut t = WorkerStats::default();
        for w in &self.workers {
            t.add(&w.lock().unwrap_or_else(|e| e.into_inner()));
        }
        t
    }

    fn shard_reports(&self) -> Vec<ShardReport> {
        self.shards
            .iter()
            .map(|c| c.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }
}

/// One metric: name, type, help, and a value per label set.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    values: Vec<(String, u64)>,
}

fn worker_families(workers: &[WorkerStats]) -> Vec<Family> {
    type Get = fn(&WorkerStats) -> u64;
    let defs: [(&'static str, &'static str, &'static str, Get); 16] = [
        (
            "switchboard_gateway_accepted_total",
            "counter",
            "Connections accepted and set up.",
            |w| w.accepted,
        ),
        (
            "switchboard_gateway_refused_rate_total",
            "counter",
            "Connections refused over the accept rate.",
            |w| w.refused_rate,
        ),
        (
            "switchboard_gateway_refused_full_total",
            "counter",
            "Connections refused at conns_per_worker.",
            |w| w.refused_full,
        ),
        (
            "switchboard_gateway_refused_stopping_total",
            "counter",
            "Connections refused while stopping.",
            |w| w.refused_stopping,
        ),
        (
            "switchboard_gateway_closed_total",
            "counter",
            "Connections closed.",
            |w| w.closed,
        ),
        (
            "switchboard_gateway_connections",
            "gauge",
            "Connections open.",
            |w| w.open,
        ),
        (
            "switchboard_gateway_handshakes_full_total",
            "counter",
            "Full TLS handshakes completed.",
            |w| w.handshakes_full,
        ),
        (
            "switchboard_gateway_handshakes_resumed_total",
            "counter",
            "Resumed TLS handshakes completed.",
            |w| w.handshakes_resumed,
        ),
        (
            "switchboard_gateway_handshakes_failed_total",
            "counter",
            "Connections that ended during the TLS handshake.",
            |w| w.handshakes_failed,
        ),
        (
            "switchboard_gateway_bytes_in_total",
            "counter",
            "Bytes received from client sockets.",
            |w| w.bytes_in,
        ),
        (
            "switchboard_gateway_bytes_out_total",
            "counter",
            "Bytes sent to client sockets.",
            |w| w.bytes_out,
        ),
        (
            "switchboard_gateway_requests_total",
            "counter",
            "Requests handed to the router link.",
            |w| w.requests,
        ),
        (
            "switchboard_gateway_replies_total",
            "counter",
            "Router replies for live connections.",
            |w| w.replies,
        ),
        (
            "switchboard_gateway_link_blocked",
            "gauge",
            "Requests held back by a full router link.",
            |w| w.link_blocked,
        ),
        (
            "switchboard_gateway_backlog_bytes",
            "gauge",
            "Bytes waiting to be sent, all connections.",
            |w| w.backlog_bytes_sum,
        ),
        (
            "switchboard_gateway_backlog_bytes_max",
            "gauge",
            "Bytes waiting to be sent, largest connection.",
            |w| w.backlog_bytes_max,
        ),
    ];
    defs.iter()
        .map(|(name, kind, help, get)| Family {
            name,
            kind,
            help,
            values: workers
                .iter()
                .enumerate()
                .map(|(i, w)| (format!("worker=\"{i}\""), get(w)))
                .collect(),
        })
        .collect()
}

fn shard_families(shards: &[ShardReport]) -> Vec<Family> {
    type Get = fn(&ShardReport) -> u64;
    let defs: [(&'static str, &'static str, &'static str, Get); 33] = [
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

fn families(src: &Sources) -> Vec<Family> {
    let workers: Vec<WorkerStats> = src
        .workers
        .iter()
        .map(|w| w.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .collect();
    let shards = src.shard_reports();
    let mut all = worker_families(&workers);
    all.extend(shard_families(&shards));
    #[cfg(target_os = "linux")]
    {
        let get =
            |f: fn(&crate::tee::Tee) -> u64| vec![(String::new(), src.tee.as_deref().map_or(0, f))];
        all.push(Family {
            name: "switchboard_tee_sent_total",
            kind: "counter",
            help: "Requests mirrored to the shadow cluster.",
            values: get(|t| t.sent.load(Ordering::Relaxed)),
        });
        all.push(Family {
            name: "switchboard_tee_dropped_total",
            kind: "counter",
            help: "Mirrored requests dropped: the shadow's queue was full (slow or down).",
            values: get(|t| t.dropped.load(Ordering::Relaxed)),
        });
    }
    let q = src.queues.as_deref();
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
    all
}

/// Every metric name of the appliance's own figures (alert rules name one of these).
pub fn metric_names() -> Vec<&'static str> {
    let src = Sources {
        workers: vec![],
        shards: vec![],
        started: Instant::now(),
        control: None,
        activity: None,
        #[cfg(target_os = "linux")]
        tee: None,
        queues: None,
    };
    families(&src).iter().map(|f| f.name).collect()
}

/// Each metric summed over its label sets: (name, value, is a counter).
pub fn metric_values(src: &Sources) -> Vec<(&'static str, f64, bool)> {
    families(src)
        .into_iter()
        .map(|f| {
            let sum: u64 = f.values.iter().map(|(_, v)| v).sum();
            (f.name, sum as f64, f.kind == "counter")
        })
        .collect()
}

/// The Prometheus text exposition of every figure.
pub fn render_metrics(src: &Sources) -> String {
    let mut out = String::new();
    for f in families(src) {
        out.push_str(&format!(
            "# HELP {} {}\n# TYPE {} {}\n",
            f.name, f.help, f.name, f.kind
        ));
        for (labels, v) in f.values {
            out.push_str(&format!("{}{{{labels}}} {v}\n", f.name));
        }
    }
    out.push_str(&format!(
        "# HELP switchboard_uptime_seconds Seconds since start.\n# TYPE switchboard_uptime_seconds gauge\nswitchboard_uptime_seconds {}\n",
        src.started.elapsed().as_secs()
    ));
    if let Some(a) = &src.activity {
        let a = a.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str(&format!(
            "# HELP switchboard_alerts_firing Alert rules firing now.\n# TYPE switchboard_alerts_firing gauge\nswitchboard_alerts_firing {}\n",
            a.firing.len()
        ));
    }
    if let Some(rss) = rss_bytes() {
        out.push_str(&format!(
            "# HELP switchboard_process_resident_bytes Resident memory.\n# TYPE switchboard_process_resident_bytes gauge\nswitchboard_process_resident_bytes {rss}\n"
        ));
    }
    out
}

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// A JSON summary: totals over workers and shards.
pub fn render_status(src: &Sources) -> String {
    let w = src.workers_total();
    let shards = src.shard_reports();
    let sum = |f: fn(&ShardReport) -> u64| shards.iter().map(f).sum::<u64>();
    format!(
        concat!(
            "{{\"version\":\"{}\",\"uptime_s\":{},\"workers\":{},\"shards\":{},",
            "\"connections\":{},\"accepted\":{},\"closed\":{},\"handshakes_full\":{},\"handshakes_resumed\":{},\"handshakes_failed\":{},",
            "\"sessions\":{},\"messages_accepted\":{},\"messages_delivered\":{},\"pending_messages\":{},\"pending_bytes\":{},",
            "\"link_blocked\":{},\"backlog_bytes\":{},\"waiting_durable\":{},\"alerts_firing\":[{}]}}\n"
        ),
        env!("CARGO_PKG_VERSION"),
        src.started.elapsed().as_secs(),
        src.workers.len(),
        shards.len(),
        w.open,
        w.accepted,
        w.closed,
        w.handshakes_full,
        w.handshakes_resumed,
        w.handshakes_failed,
        sum(|r| r.stats.sessions),
        sum(|r| r.stats.accepted),
        sum(|r| r.stats.delivered),
        sum(|r| r.log.pending_messages),
        sum(|r| r.log.pending_bytes),
        w.link_blocked,
        w.backlog_bytes_sum,
        sum(|r| r.stats.waiting_durable),
        src.activity.as_ref().map_or(String::new(), |a| {
            let a = a.lock().unwrap_or_else(|e| e.into_inner());
            let names: Vec<String> = a.firing.keys().map(|n| format!("\"{}\"", n.replace('"', "'"))).collect();
            names.join(",")
        }),
    )
}

/// The reporter's figures: `name last avg10s avg100s` per line (counters as rates per
/// second), then the firing alerts.
pub fn render_activity(a: &crate::reporter::Activity) -> String {
    let mut out = String::from("# figure last avg_10s avg_100s (counters: per second)\n");
    for (name, v) in &a.figures {
        out.push_str(&format!(
            "{name} {:.1} {:.1} {:.1}\n",
            v.last, v.s10, v.s100
        ));
    }
    for (name, since) in &a.firing {
        out.push_str(&format!("alert_firing {name} since_uptime_s={since}\n"));
    }
    out
}

/// A running admin listener; stops when dropped.
pub struct Admin {
    pub addr: SocketAddr,
    _task: crate::task::Task,
}

/// Binds the admin listener and serves it on its own thread.
pub fn start(config: &AdminConfig, token: String, src: Arc<Sources>) -> Result<Admin, String> {
    config.validate()?;
    let server = tiny_http::Server::http(config.addr())
        .map_err(|e| format!("admin.listen {}: {e}", config.addr()))?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or("admin listener has no IP address")?;
    let task = crate::task::Task::spawn("admin", move |stop| {
        while !stop.load(Ordering::Acquire) {
            match server.recv_timeout(Duration::from_millis(200)) {
                Ok(Some(req)) => answer(req, &token, &src),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("admin: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    })?;
    Ok(Admin { addr, _task: task })
}

fn authorized(req: &tiny_http::Request, token: &str) -> bool {
    req.headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .and_then(|h| h.value.as_str().strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The knobs as JSON: name → value, bounds, configuration field, meaning (a knob that
/// takes names shows them, and its value and bounds as names).
fn knobs_json(c: &crate::control::Control) -> String {
    let items: Vec<String> = c
        .knobs()
        .into_iter()
        .map(|(k, v)| {
            let show = |v: u64| {
                if k.names.is_empty() {
                    v.to_string()
                } else {
                    format!("\"{}\"", k.show(v))
                }
            };
            format!(
                "\"{}\":{{\"value\":{},\"min\":{},\"max\":{},\"field\":\"{}\",\"doc\":\"{}\"}}",
                k.name,
                show(v),
                show(k.min),
                show(k.max),
                k.field,
                k.doc.replace('"', "\\\"")
            )
        })
        .collect();
    format!("{{{}}}\n", items.join(","))
}

/// Knob and reload endpoints: (status, body).
fn control_endpoint(
    method: &tiny_http::Method,
    path: &str,
    body: &str,
    src: &Sources,
) -> Option<(u16, String)> {
    use tiny_http::Method;
    if path != "/knobs" && !path.starts_with("/knobs/") && path != "/reload" {
        return None;
    }
    let Some(c) = &src.control else {
        return Some((
            404,
            "knobs and reload are not available in this process\n".into(),
        ));
    };
    Some(match (method, path) {
        (Method::Get, "/knobs") => (200, knobs_json(c)),
        (Method::Post, "/reload") => match crate::serve::reload_logged(c) {
            Ok(summary) => (200, format!("reloaded: {summary}\n")),
            Err(e) => (
                422,
                format!("reload refused, the running configuration stays: {e}\n"),
            ),
        },
        (Method::Get, p) if p.starts_with("/knobs/") => match c.def(&p[7..]) {
            Ok(def) => (200, format!("{}\n", def.show(c.get(def.name).unwrap_or(0)))),
            Err(e) => (404, format!("{e}\n")),
        },
        (Method::Put, p) if p.starts_with("/knobs/") => {
            let def = match c.def(&p[7..]) {
                Ok(d) => d,
                Err(e) => return Some((404, format!("{e}\n"))),
            };
            match def.parse(body).and_then(|v| c.set(def.name, v)) {
                Ok((old, new)) => (
                    200,
                    format!("{}: {} -> {}\n", def.name, def.show(old), def.show(new)),
                ),
                Err(e) => (400, format!("{e}\n")),
            }
        }
        _ => (
            405,
            "method not allowed: GET /knobs, GET or PUT /knobs/NAME, POST /reload\n".into(),
        ),
    })
}

fn answer(mut req: tiny_http::Request, token: &str, src: &Sources) {
    let text = |code: u16, body: String, ctype: &str| {
        let header = tiny_http::Header::from_bytes("Content-Type", ctype).expect("valid header");
        tiny_http::Response::from_string(body)
            .with_status_code(code)
            .with_header(header)
    };
    let path = req.url().split('?').next().unwrap_or("").to_string();
    let mut body = String::new();
    {
        use std::io::Read as _;
        let _ = req.as_reader().take(256).read_to_string(&mut body);
    }
    let response = if !authorized(&req, token) {
        text(
            401,
            "unauthorized: send Authorization: Bearer <token> (the token is in admin.token_file)\n"
                .into(),
            "text/plain",
        )
    } else if let Some((code, text_body)) = control_endpoint(req.method(), &path, &body, src) {
        text(code, text_body, "text/plain")
    } else if *req.method() != tiny_http::Method::Get {
        text(405, "method not allowed: use GET\n".into(), "text/plain")
    } else {
        match path.as_str() {
            "/metrics" => text(200, render_metrics(src), "text/plain; version=0.0.4"),
            "/status" => text(200, render_status(src), "application/json"),
            "/activity" => match &src.activity {
                Some(a) => {
                    let a = a.lock().unwrap_or_else(|e| e.into_inner());
                    text(200, render_activity(&a), "text/plain")
                }
                None => text(
                    404,
                    "the activity reporter is off ([reporter] enabled = false)\n".into(),
                    "text/plain",
                ),
            },
            _ => text(
                404,
                format!("no such endpoint: {path} (try /metrics or /status)\n"),
                "text/plain",
            ),
        }
    };
    let _ = req.respond(response);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_documented() {
        let docs = include_str!("../../docs/OPERATIONS.md");
        let src = Sources {
            workers: vec![StatsCell::default()],
            shards: vec![ReportCell::default()],
            started: Instant::now(),
            control: None,
            activity: Some(Default::default()),
            tee: None,
            queues: None,
        };
        let text = render_metrics(&src);
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(names.len() > 30, "{text}");
        for n in names {
            assert!(
                docs.contains(&format!("`{n}`")),
                "{n} is not in docs/OPERATIONS.md"
            );
        }
    }

    #[test]
    fn only_loopback_and_private_addresses_are_admin_addresses() {
        for ok in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_private(ok.parse().unwrap()), "{ok}");
        }
        for bad in ["0.0.0.0", "8.8.8.8", "172.32.0.1", "::", "2001:db8::1"] {
            assert!(!is_private(bad.parse().unwrap()), "{bad}");
        }
    }

    #[test]
    fn a_token_is_made_once_then_reread() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        let a = load_or_make_token(&p).unwrap();
        assert_eq!(a.len(), 48);
        assert_eq!(load_or_make_token(&p).unwrap(), a);
        let missing_dir = dir.path().join("no/such/dir/t");
        assert!(load_or_make_token(&missing_dir)
            .unwrap_err()
            .contains("no/such/dir"));
    }
}
