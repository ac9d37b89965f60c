//! The admin listener: Prometheus `/metrics` and a JSON `/status`, token-authenticated,
//! on a loopback or private address only (`[admin]` in the configuration).
//!
//! The figures come from the places gateway workers and router shards publish their
//! own counters to (every 250 ms and 100 ms); nothing here touches the hot path.
//! Requests are served one at a time on one thread (tiny_http): the API is for
//! operators and scrapers, not for load.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::worker::{StatsCell, WorkerStats};

use crate::config::AdminConfig;
use crate::error::Error;
use crate::metrics::{families, Activity, ActivityCell, Family, Queues, TeeFigures};
use router::{ReportCell, ShardReport};

/// Reads the token, or creates the file with a new random one.
pub fn load_or_make_token(path: &Path) -> Result<String, Error> {
    match std::fs::read_to_string(path) {
        Ok(t) => {
            let t = t.trim().to_string();
            if t.len() < 16 {
                return Err(Error::Config(format!(
                    "{}: the admin token must be at least 16 characters",
                    path.display()
                )));
            }
            Ok(t)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut raw = [0u8; 24];
            rustls::crypto::aws_lc_rs::default_provider()
                .secure_random
                .fill(&mut raw)
                .map_err(|_| Error::from("no random numbers for the admin token"))?;
            let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode_0600()
                .open(path)
                .map_err(Error::io(path.display()))?;
            writeln!(f, "{token}").map_err(Error::io(path.display()))?;
            Ok(token)
        }
        Err(e) => Err(Error::io(path.display())(e)),
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
    pub activity: Option<ActivityCell>,
    /// The traffic mirror, when configured.
    pub tee: Option<Arc<dyn TeeFigures>>,
    /// The queues between threads and over links, measured when asked.
    pub queues: Option<Arc<dyn Queues>>,
}

impl Sources {
    /// A running process's sources (the reporter adds `activity` when it runs).
    pub fn new(
        workers: Vec<StatsCell>,
        shards: Vec<ReportCell>,
        control: &Arc<crate::control::Control>,
        tee: Option<Arc<dyn TeeFigures>>,
        queues: Arc<dyn Queues>,
    ) -> Sources {
        Sources {
            workers,
            shards,
            started: Instant::now(),
            control: Some(Arc::clone(control)),
            activity: None,
            tee,
            queues: Some(queues),
        }
    }

    /// Every metric, as published now.
    fn families(&self) -> Vec<Family> {
        let workers: Vec<WorkerStats> = (self.workers.iter())
            .map(|w| w.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect();
        families(
            &workers,
            &self.shard_reports(),
            self.tee.as_deref(),
            self.queues.as_deref(),
        )
    }

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

/// Each metric summed over its label sets: (name, value, is a counter).
pub fn metric_values(src: &Sources) -> Vec<(&'static str, f64, bool)> {
    src.families()
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
    for f in src.families() {
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
pub fn render_activity(a: &Activity) -> String {
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
pub fn start(config: &AdminConfig, token: String, src: Arc<Sources>) -> Result<Admin, Error> {
    config.validate().map_err(Error::Config)?;
    let server = tiny_http::Server::http(config.addr()).map_err(|e| Error::AdminBind {
        addr: config.addr(),
        why: e.to_string(),
    })?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or(Error::from("admin listener has no IP address"))?;
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
        (Method::Post, "/reload") => match crate::control::reload_logged(c) {
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
    fn only_a_taken_address_is_an_admin_bind_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config = AdminConfig {
            listen: Some(taken.local_addr().unwrap()),
            ..AdminConfig::default()
        };
        let src = Arc::new(Sources {
            workers: vec![],
            shards: vec![],
            started: Instant::now(),
            control: None,
            activity: None,
            tee: None,
            queues: None,
        });
        let e = start(&config, "x".repeat(16), Arc::clone(&src))
            .err()
            .unwrap();
        assert!(matches!(e, Error::AdminBind { .. }), "{e:?}");
        let public = AdminConfig {
            listen: Some("8.8.8.8:7480".parse().unwrap()),
            ..AdminConfig::default()
        };
        let e = start(&public, "x".repeat(16), src).err().unwrap();
        assert!(
            matches!(e, Error::Config(_)),
            "a refused address is not a taken one: {e:?}"
        );
    }

    #[test]
    fn a_token_is_made_once_then_reread() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        let a = load_or_make_token(&p).unwrap();
        assert_eq!(a.len(), 48);
        assert_eq!(load_or_make_token(&p).unwrap(), a);
        let missing_dir = dir.path().join("no/such/dir/t");
        let e = load_or_make_token(&missing_dir).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("no/such/dir"), "{e}");
    }
}
