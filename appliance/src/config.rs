//! The appliance configuration: one TOML file, every field optional with a default.
//!
//! ```toml
//! listen = "0.0.0.0:7443"      # public listener (all workers share it, SO_REUSEPORT)
//! data_dir = "./data"          # logs, TLS files, sms.log
//! workers = 0                  # gateway worker threads; 0 = one per core
//! shards = 0                   # router shards (threads, one log each); 0 = one per core
//! [tls]                        # absent: a self-signed certificate in data_dir/tls
//! cert = "/etc/switchboard/cert.pem"
//! key = "/etc/switchboard/key.pem"
//! [sms]
//! kind = "log"                 # "log": PINs go to data_dir/sms.log; "http": POST to url
//! # url = "https://sms.example/send"  timeout_ms = 5000  retries = 3
//! [limits]                     # per connection (gateway::Limits)
//! [gateway]                    # per worker
//! [router]                     # router::RouterConfig
//! [storage]                    # storage::LogConfig
//! [process]                    # realtime_priority, pin_threads, huge_pages, inline_shard, tune_profile
//! [admin]                      # enabled, listen (loopback/private only), token_file
//! [reporter]                   # enabled, interval_s, file_bytes_max
//! [alerts]                     # webhook; [[alerts.rule]] name, metric, above, for_s
//! [tee]                        # enabled, sample_percent, queue; [tee.cluster] the shadow
//! [upgrade]                    # drain_per_sec
//! [log]                        # level: error, warn, info, debug, trace (a knob)
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cluster::ClusterConfig;

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Public listener. Default: `0.0.0.0:7443`.
    pub listen: SocketAddr,
    /// Where logs, TLS files and the SMS log live; created if missing. Default: `./data`.
    pub data_dir: PathBuf,
    /// Gateway worker threads. Default: 0 (one per core). Maximum: 64.
    pub workers: usize,
    /// Router shards. Default: 0 (one per core). Maximum: 64.
    pub shards: usize,
    pub tls: Option<TlsFiles>,
    pub sms: crate::sms::SmsConfig,
    pub limits: LimitsConfig,
    pub gateway: GatewayConfig,
    pub router: router::RouterConfig,
    pub storage: storage::LogConfig,
    pub process: ProcessConfig,
    /// The cluster map, for `switchboard gateway` and `switchboard router`.
    pub cluster: crate::cluster::ClusterConfig,
    /// The admin API (metrics, status).
    pub admin: AdminConfig,
    /// The activity reporter.
    pub reporter: ReporterConfig,
    /// Queue alert rules and their webhook.
    pub alerts: AlertsConfig,
    /// Upgrades: how fast connections are drained when a new process takes over.
    pub upgrade: UpgradeConfig,
    /// The appliance's log lines: their level.
    pub log: crate::logging::LogConfig,
    /// Mirroring a sample of the traffic to a shadow cluster (by gateways).
    pub tee: TeeConfig,
}

/// `[upgrade]` (docs/OPERATIONS.md, "Upgrade").
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpgradeConfig {
    /// Connections closed per second (with `Reconnect`) while draining for a new
    /// process, over all workers. Default: 1,000. Range: 1 to 10,000,000.
    pub drain_per_sec: u64,
}

impl Default for UpgradeConfig {
    fn default() -> Self {
        UpgradeConfig {
            drain_per_sec: 1000,
        }
    }
}

/// Process tuning (docs/TUNING.md).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessConfig {
    /// Realtime FIFO priority for gateway workers (SCHED_FIFO on Linux, rtprio on
    /// FreeBSD). Default: 0 (off). Range: 0 to 99. Refused at start when not permitted.
    pub realtime_priority: u8,
    /// Pin worker and shard threads to CPUs (worker w on CPU w, shards after). Default: false.
    pub pin_threads: bool,
    /// jemalloc with transparent huge pages. Default: true.
    pub huge_pages: bool,
    /// With one gateway worker and one router shard, run the shard in the worker's
    /// thread (no hand-off between threads; the right choice on one core). Default: true.
    pub inline_shard: bool,
    /// Tuning profile the host is checked against at start (each shortfall logged once);
    /// a built-in name or a file; empty: no check. Default: "linux-dev".
    pub tune_profile: String,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            realtime_priority: 0,
            pin_threads: false,
            huge_pages: true,
            inline_shard: true,
            tune_profile: "linux-dev".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:7443".parse().expect("valid"),
            data_dir: PathBuf::from("./data"),
            workers: 0,
            shards: 0,
            tls: None,
            sms: crate::sms::SmsConfig::default(),
            limits: LimitsConfig::default(),
            gateway: GatewayConfig::default(),
            router: router::RouterConfig::default(),
            storage: storage::LogConfig::default(),
            process: ProcessConfig::default(),
            cluster: crate::cluster::ClusterConfig::default(),
            admin: AdminConfig::default(),
            reporter: ReporterConfig::default(),
            alerts: AlertsConfig::default(),
            upgrade: UpgradeConfig::default(),
            log: crate::logging::LogConfig::default(),
            tee: TeeConfig::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain (ECDSA or RSA).
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Per-connection limits (see `gateway::Limits`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Default: 65,536. Range: 1,024 to 1,048,576.
    pub frame_bytes_max: usize,
    /// Default: 1 MiB. Minimum: 64 KiB.
    pub outbound_bytes_max: usize,
    /// Default: 10,000. Minimum: 100.
    pub handshake_timeout_ms: u64,
    /// Default: 60,000. Minimum: 1,000.
    pub login_timeout_ms: u64,
    /// Default: 300,000. Minimum: 2,000.
    pub idle_timeout_ms: u64,
    /// PIN guesses (`Verify`) on one connection before it is closed with
    /// `RateLimited`. Default: 10. Minimum: 1.
    pub pin_guesses_per_connection: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = gateway::Limits::default();
        LimitsConfig {
            frame_bytes_max: d.frame_bytes_max,
            outbound_bytes_max: d.outbound_bytes_max,
            handshake_timeout_ms: d.handshake_timeout_ms,
            login_timeout_ms: d.login_timeout_ms,
            idle_timeout_ms: d.idle_timeout_ms,
            pin_guesses_per_connection: d.pin_guesses_max,
        }
    }
}

/// Per-worker settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Connections per worker. Default: 100,000. Minimum: 1.
    pub conns_per_worker: usize,
    /// New connections per second per worker. Default: 20,000. Minimum: 1.
    pub accepts_per_sec: u32,
    /// Receive buffers in each worker's ring (power of two, ≤ 32,768). Default: 1,024.
    pub buffers: u16,
    /// Size of each receive buffer. Default: 16,384. Range: 1,024 to 1,048,576.
    pub buffer_bytes: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        let d = gateway::worker::WorkerConfig::default();
        GatewayConfig {
            conns_per_worker: d.conns_max,
            accepts_per_sec: d.accepts_per_sec,
            buffers: d.buffers,
            buffer_bytes: d.buffer_bytes,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Checks every value; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        let g = &self.gateway;
        let checks: [(bool, &str); 12] = [
            (self.workers <= 64, "workers: at most 64"),
            (self.shards <= 64, "shards: at most 64"),
            (
                (1024..=wire::FRAME_BYTES_LIMIT).contains(&l.frame_bytes_max),
                "limits.frame_bytes_max: from 1,024 to 1,048,576",
            ),
            (
                l.outbound_bytes_max >= 64 * 1024,
                "limits.outbound_bytes_max: at least 65,536",
            ),
            (
                l.handshake_timeout_ms >= 100,
                "limits.handshake_timeout_ms: at least 100",
            ),
            (
                l.login_timeout_ms >= 1000,
                "limits.login_timeout_ms: at least 1,000",
            ),
            (
                l.idle_timeout_ms >= 2000,
                "limits.idle_timeout_ms: at least 2,000",
            ),
            (
                l.pin_guesses_per_connection >= 1,
                "limits.pin_guesses_per_connection: at least 1",
            ),
            (
                g.conns_per_worker >= 1,
                "gateway.conns_per_worker: at least 1",
            ),
            (
                g.accepts_per_sec >= 1,
                "gateway.accepts_per_sec: at least 1",
            ),
            (
                g.buffers.is_power_of_two() && g.buffers <= 32_768,
                "gateway.buffers: a power of two up to 32,768",
            ),
            (
                (1024..=1 << 20).contains(&g.buffer_bytes),
                "gateway.buffer_bytes: from 1,024 to 1,048,576",
            ),
        ];
        if let Some((_, why)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(format!("config: {why}"));
        }
        self.sms.validate()?;
        self.log.index().map_err(|e| format!("config: {e}"))?;
        if !(1..=10_000_000).contains(&self.upgrade.drain_per_sec) {
            return Err("config: upgrade.drain_per_sec: from 1 to 10,000,000".into());
        }
        self.admin.validate().map_err(|e| format!("config: {e}"))?;
        self.reporter
            .validate(&self.alerts)
            .map_err(|e| format!("config: {e}"))?;
        self.tee
            .validate(self.router.partitions)
            .map_err(|e| format!("config: {e}"))?;
        if self.process.realtime_priority > 99 {
            return Err("config: process.realtime_priority: from 0 (off) to 99".into());
        }
        self.router.validate().map_err(|e| e.to_string())?;
        self.storage.validate().map_err(|e| e.to_string())?;
        self.window_fits()?;
        if self.storage.record_bytes_max() < l.frame_bytes_max + 128 {
            return Err(
                "config: storage.segment_bytes is too small for limits.frame_bytes_max".into(),
            );
        }
        Ok(())
    }

    /// The delivery window must fit in what a connection may have waiting: the router
    /// pushes up to `router.window_bytes` (plus one frame) to a client that has not
    /// acknowledged yet, and the client's own answers (ticks, pongs) need room beside.
    /// Otherwise a client that is reading could be cut as a slow reader for what the
    /// server itself chose to send.
    pub fn window_fits(&self) -> Result<(), String> {
        let need = self.router.window_bytes as usize + self.limits.frame_bytes_max + OUTBOUND_SLACK;
        if self.limits.outbound_bytes_max < need {
            return Err(format!(
                "config: limits.outbound_bytes_max = {} is below what the delivery window can push: \
                 router.window_bytes ({}) + limits.frame_bytes_max ({}) + {} = {need}; raise the \
                 first or lower the others",
                self.limits.outbound_bytes_max,
                self.router.window_bytes,
                self.limits.frame_bytes_max,
                OUTBOUND_SLACK
            ));
        }
        Ok(())
    }

    pub fn workers(&self) -> usize {
        if self.workers == 0 {
            cores()
        } else {
            self.workers
        }
    }

    pub fn shards(&self) -> usize {
        if self.shards == 0 {
            cores()
        } else {
            self.shards
        }
    }

    pub fn limits(&self) -> gateway::Limits {
        let l = &self.limits;
        gateway::Limits {
            frame_bytes_max: l.frame_bytes_max,
            outbound_bytes_max: l.outbound_bytes_max,
            handshake_timeout_ms: l.handshake_timeout_ms,
            login_timeout_ms: l.login_timeout_ms,
            idle_timeout_ms: l.idle_timeout_ms,
            pin_guesses_max: l.pin_guesses_per_connection,
        }
    }
}

/// Room in `limits.outbound_bytes_max` beside the delivery window: a connection's own
/// ticks, pongs and close.
pub const OUTBOUND_SLACK: usize = 64 * 1024;

fn cores() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(64)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn defaults_validate_and_bad_values_are_named() {
        Config::default().validate().unwrap();
        let c: Config = toml::from_str("[limits]\nframe_bytes_max = 10").unwrap();
        assert!(c.validate().unwrap_err().contains("frame_bytes_max"));
        let e = toml::from_str::<Config>("listen = \"nope\"").unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        let e = toml::from_str::<Config>("lisen = \"1.2.3.4:5\"").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let c: Config = toml::from_str("[storage]\nsegment_bytes = 65536").unwrap();
        assert!(c.validate().unwrap_err().contains("segment_bytes"));
        let c: Config = toml::from_str("[router]\nwindow_bytes = 1048576").unwrap();
        let e = c.validate().unwrap_err();
        assert!(
            e.contains("outbound_bytes_max") && e.contains("window_bytes"),
            "{e}"
        );
    }
}

// The sections of the appliance's own features (each module reads its section from
// here, so the configuration depends on none of them).

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

/// `[reporter]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReporterConfig {
    /// Run the reporter (and the alerts). Default: true.
    pub enabled: bool,
    /// Seconds between lines in the activity log while no alert fires. Default: 60.
    pub interval_s: u64,
    /// The activity log rolls over at this size. Default: 16 MiB.
    pub file_bytes_max: u64,
}

impl Default for ReporterConfig {
    fn default() -> Self {
        ReporterConfig {
            enabled: true,
            interval_s: 60,
            file_bytes_max: 16 << 20,
        }
    }
}

/// `[alerts]`: where firing and resolving alerts are POSTed, and the rules.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// `http://` URL that receives a JSON POST per firing and resolving. Default: none.
    pub webhook: Option<String>,
    #[serde(rename = "rule")]
    pub rules: Vec<AlertRule>,
}

/// `[[alerts.rule]]`: a queue (any figure of `/metrics`, summed over its label sets)
/// above `above` for `for_s` seconds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    pub name: String,
    pub metric: String,
    pub above: f64,
    #[serde(default)]
    pub for_s: u64,
}

impl ReporterConfig {
    pub fn validate(&self, alerts: &AlertsConfig) -> Result<(), String> {
        if !(1..=3600).contains(&self.interval_s) {
            return Err("reporter.interval_s: from 1 to 3,600".into());
        }
        if self.file_bytes_max < 4096 {
            return Err("reporter.file_bytes_max: at least 4,096".into());
        }
        if let Some(w) = &alerts.webhook {
            if !w.starts_with("http://") && !w.starts_with("https://") {
                return Err(format!(
                    "alerts.webhook: {w:?} is not an http:// or https:// URL"
                ));
            }
        }
        let known = crate::metrics::metric_names();
        let mut names = std::collections::HashSet::new();
        for r in &alerts.rules {
            if !known.iter().any(|k| *k == r.metric) {
                return Err(format!(
                    "alerts.rule {:?}: no metric named {:?} (see docs/OPERATIONS.md for the list)",
                    r.name, r.metric
                ));
            }
            if !names.insert(&r.name) {
                return Err(format!("alerts.rule {:?}: the name is used twice", r.name));
            }
            if r.for_s > 86_400 {
                return Err(format!("alerts.rule {:?}: for_s at most 86,400", r.name));
            }
        }
        Ok(())
    }
}

/// `[tee]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeeConfig {
    /// Mirror traffic. Default: false.
    pub enabled: bool,
    /// Percentage of users whose requests are mirrored (0 to 100). Default: 0.
    pub sample_percent: u64,
    /// Frames queued per shadow router; past it copies are dropped. Default: 10,000.
    pub queue: usize,
    /// The shadow cluster (secret, routers and their partitions).
    pub cluster: ClusterConfig,
}

impl Default for TeeConfig {
    fn default() -> Self {
        TeeConfig {
            enabled: false,
            sample_percent: 0,
            queue: 10_000,
            cluster: ClusterConfig::default(),
        }
    }
}

impl TeeConfig {
    pub fn validate(&self, partitions: u32) -> Result<(), String> {
        if self.sample_percent > 100 {
            return Err("tee.sample_percent: from 0 to 100".into());
        }
        if !self.enabled {
            return Ok(());
        }
        if !(16..=10_000_000).contains(&self.queue) {
            return Err("tee.queue: from 16 to 10,000,000".into());
        }
        self.cluster
            .validate(partitions)
            .map(|_| ())
            .map_err(|e| format!("tee.{e}"))
    }
}
