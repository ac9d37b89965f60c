//! Changing a running appliance: runtime knobs (admin API, `switchboard knob`) and
//! reloading the configuration (SIGHUP, admin API `POST /reload`).
//!
//! Knobs reach the threads through [`Live`] cells: a worker or shard picks a change up
//! at its next loop turn (workers: at most one sweep, 250 ms, when idle; shards: their
//! next tick). Every change is logged with its old and new value; values outside a
//! knob's bounds are refused with the bounds.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gateway::live::Live;
use gateway::worker::WorkerKnobs;
use rustls::ServerConfig;

use crate::config::Config;

/// The kind of process a knob applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `switchboard serve`: gateway, router and storage in one process.
    Serve,
    /// `switchboard gateway`.
    Gateway,
    /// `switchboard router`.
    Router,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Serve => "serve",
            Role::Gateway => "gateway",
            Role::Router => "router",
        }
    }
}

/// One runtime-adjustable setting.
pub struct KnobDef {
    pub name: &'static str,
    pub min: u64,
    pub max: u64,
    /// The configuration field it starts from (and that a reload sets it back to).
    pub field: &'static str,
    pub doc: &'static str,
    /// The processes it applies to.
    pub roles: &'static [Role],
    /// Names of the values `min..=max`, for a knob that takes names (`log_level`).
    pub names: &'static [&'static str],
}

impl KnobDef {
    /// A value as given by an operator: a whole number, or one of the knob's names.
    pub fn parse(&self, text: &str) -> Result<u64, String> {
        let t = text.trim();
        if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(t)) {
            return Ok(i as u64);
        }
        t.parse::<u64>().map_err(|_| {
            if self.names.is_empty() {
                format!(
                    "knob {}: the value must be a whole number, got {t:?}",
                    self.name
                )
            } else {
                format!(
                    "knob {}: the value must be one of {}, got {t:?}",
                    self.name,
                    self.names.join(", ")
                )
            }
        })
    }

    /// A value as shown to an operator: its name for a named knob.
    pub fn show(&self, v: u64) -> String {
        match self.names.get(v as usize) {
            Some(n) => (*n).to_string(),
            None => v.to_string(),
        }
    }

    fn bounds(&self) -> String {
        format!("{} to {}", self.show(self.min), self.show(self.max))
    }
}

const ALL: &[Role] = &[Role::Serve, Role::Gateway, Role::Router];
const GATEWAYS: &[Role] = &[Role::Serve, Role::Gateway];
const ROUTERS: &[Role] = &[Role::Serve, Role::Router];
const SPLIT: &[Role] = &[Role::Gateway, Role::Router];

pub const KNOBS: [KnobDef; 6] = [
    KnobDef {
        name: "accepts_per_sec",
        min: 1,
        max: 10_000_000,
        field: "gateway.accepts_per_sec",
        doc: "connections each gateway worker accepts per second; more are refused",
        roles: GATEWAYS,
        names: &[],
    },
    KnobDef {
        name: "outbound_bytes_max",
        min: 64 * 1024,
        max: 1 << 30,
        field: "limits.outbound_bytes_max",
        doc: "encrypted bytes a connection may have waiting; over it the client is cut as too slow",
        roles: GATEWAYS,
        names: &[],
    },
    KnobDef {
        name: "flush_interval_us",
        min: 50,
        max: 10_000_000,
        field: "storage.group_interval_us",
        doc: "group-commit interval of every shard's log (durability = \"group\")",
        roles: ROUTERS,
        names: &[],
    },
    KnobDef {
        name: "tee_sample_percent",
        min: 0,
        max: 100,
        field: "tee.sample_percent",
        doc: "percentage of users whose requests are mirrored to the shadow cluster ([tee])",
        roles: GATEWAYS,
        names: &[],
    },
    KnobDef {
        name: "link_batch_bytes",
        min: 1024,
        max: 4 << 20,
        field: "cluster.link_batch_bytes",
        doc: "bytes of frames a link gathers into one write (gateway to router, router to router)",
        roles: SPLIT,
        names: &[],
    },
    KnobDef {
        name: "log_level",
        min: 0,
        max: 4,
        field: "log.level",
        doc: "the process's log lines: error, warn, info, debug (a line per connection closed, login and link write), trace",
        roles: ALL,
        names: &crate::logging::LEVELS,
    },
];

/// The knobs' current values, from a configuration (in [`KNOBS`] order).
fn values_of(c: &Config) -> [u64; 6] {
    [
        c.gateway.accepts_per_sec as u64,
        c.limits.outbound_bytes_max as u64,
        c.storage.group_interval_us,
        tee_percent(c),
        c.cluster.batch_bytes() as u64,
        c.log.index().unwrap_or(2),
    ]
}

fn tee_percent(c: &Config) -> u64 {
    c.tee.sample_percent
}

/// Writes knob `name`'s value into the configuration.
fn set_field(c: &mut Config, name: &str, v: u64) {
    match name {
        "accepts_per_sec" => c.gateway.accepts_per_sec = v as u32,
        "outbound_bytes_max" => c.limits.outbound_bytes_max = v as usize,
        "flush_interval_us" => c.storage.group_interval_us = v,
        "tee_sample_percent" => c.tee.sample_percent = v,
        "link_batch_bytes" => c.cluster.link_batch_bytes = v as usize,
        "log_level" => c.log.level = crate::logging::LEVELS[v as usize].to_string(),
        _ => {}
    }
}

/// Where to read the configuration again on reload, with the command line's
/// overrides.
#[derive(Clone, Debug, Default)]
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    pub listen: Option<std::net::SocketAddr>,
    pub data: Option<PathBuf>,
    /// `serve --takeover`: take the listeners over from the running process.
    pub takeover: bool,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, String> {
        let mut c = match &self.path {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        if let Some(l) = self.listen {
            c.listen = l;
        }
        if let Some(d) = &self.data {
            c.data_dir = d.clone();
        }
        c.validate()?;
        Ok(c)
    }
}

/// The running appliance's changeable state.
pub struct Control {
    role: Role,
    /// The configuration in force (knob changes are written into it).
    config: Mutex<Config>,
    source: ConfigSource,
    /// The client-facing certificate (processes with gateway workers).
    pub tls: Option<Arc<Live<Arc<ServerConfig>>>>,
    pub workers: Arc<Live<WorkerKnobs>>,
    pub flush_interval_us: Arc<Live<u64>>,
    /// Read by the tee for every request (a plain relaxed load).
    pub tee_sample_percent: Arc<AtomicU64>,
    /// Read by every link thread once per write.
    pub link_batch_bytes: Arc<AtomicUsize>,
}

impl Control {
    pub fn new(
        role: Role,
        config: &Config,
        source: ConfigSource,
        tls: Option<Arc<ServerConfig>>,
    ) -> Arc<Control> {
        Arc::new(Control {
            role,
            workers: Live::new(WorkerKnobs {
                accepts_per_sec: config.gateway.accepts_per_sec,
                limits: Arc::new(config.limits()),
            }),
            flush_interval_us: Live::new(config.storage.group_interval_us),
            tee_sample_percent: Arc::new(tee_percent(config).into()),
            link_batch_bytes: Arc::new(config.cluster.batch_bytes().into()),
            tls: tls.map(Live::new),
            config: Mutex::new(config.clone()),
            source,
        })
    }

    fn config(&self) -> std::sync::MutexGuard<'_, Config> {
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The alert rules in force (a reload replaces them).
    pub fn alerts(&self) -> crate::config::AlertsConfig {
        self.config().alerts.clone()
    }

    /// This process's knobs: (definition, value).
    pub fn knobs(&self) -> Vec<(&'static KnobDef, u64)> {
        let v = values_of(&self.config());
        KNOBS
            .iter()
            .zip(v)
            .filter(|(k, _)| k.roles.contains(&self.role))
            .collect()
    }

    /// A knob of this process.
    pub fn def(&self, name: &str) -> Result<&'static KnobDef, String> {
        let def = KNOBS
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| self.unknown(name))?;
        if !def.roles.contains(&self.role) {
            return Err(format!(
                "knob {name} does not apply to a {} process (it applies to: {}); {}",
                self.role.name(),
                def.roles
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.names()
            ));
        }
        Ok(def)
    }

    pub fn get(&self, name: &str) -> Result<u64, String> {
        self.def(name)?;
        Ok(get_in(&self.config(), name))
    }

    /// Sets a knob; (old, new). Logged.
    pub fn set(&self, name: &str, value: u64) -> Result<(u64, u64), String> {
        let def = self.def(name)?;
        if !(def.min..=def.max).contains(&value) {
            return Err(format!(
                "knob {name}: {} is out of bounds ({})",
                def.show(value),
                def.bounds()
            ));
        }
        let mut c = self.config();
        let old = get_in(&c, name);
        set_field(&mut c, name, value);
        if let Err(e) = c.window_fits() {
            set_field(&mut c, name, old);
            return Err(format!("knob {name}: {} refused: {e}", def.show(value)));
        }
        self.apply(&c);
        drop(c);
        tracing::info!("knob {name}: {} -> {}", def.show(old), def.show(value));
        Ok((old, value))
    }

    /// Pushes the knob values of `c` to the threads (only what changed).
    fn apply(&self, c: &Config) {
        let w = self.workers.get();
        if w.accepts_per_sec != c.gateway.accepts_per_sec
            || w.limits.outbound_bytes_max != c.limits.outbound_bytes_max
        {
            self.workers.set(WorkerKnobs {
                accepts_per_sec: c.gateway.accepts_per_sec,
                limits: Arc::new(c.limits()),
            });
        }
        if self.flush_interval_us.get() != c.storage.group_interval_us {
            self.flush_interval_us.set(c.storage.group_interval_us);
        }
        self.tee_sample_percent
            .store(tee_percent(c), Ordering::Relaxed);
        self.link_batch_bytes
            .store(c.cluster.batch_bytes(), Ordering::Relaxed);
        crate::logging::set_level(c.log.index().unwrap_or(2));
    }

    /// Reads the configuration again (SIGHUP, `POST /reload`): certificate, knobs,
    /// alert rules. A configuration that does not load or validate, or a certificate
    /// that does not load, is refused with the reason and the running one stays.
    /// Settings that need a restart (addresses, threads, data directory, ...) are named
    /// and left as they are.
    pub fn reload(
        &self,
        make_tls: impl Fn(&Config) -> Result<Arc<ServerConfig>, String>,
    ) -> Result<String, String> {
        let new = self.source.load()?;
        let tls = match &self.tls {
            Some(_) => Some(make_tls(&new)?),
            None => None,
        };
        let mut c = self.config();
        // Settings that need a restart: named when the file changes them, kept as running.
        let restart: Vec<&str> = [
            (new.listen != c.listen, "listen"),
            (new.data_dir != c.data_dir, "data_dir"),
            (
                new.workers != c.workers || new.shards != c.shards,
                "workers/shards",
            ),
            (new.admin.listen != c.admin.listen, "admin.listen"),
            (new.alerts.webhook != c.alerts.webhook, "alerts.webhook"),
            (new.tee.enabled != c.tee.enabled, "tee.enabled"),
        ]
        .into_iter()
        .filter_map(|(changed, name)| changed.then_some(name))
        .collect();
        let mut changes = vec![];
        for (k, new_v) in KNOBS.iter().zip(values_of(&new)) {
            if !k.roles.contains(&self.role) {
                continue;
            }
            let old = get_in(&c, k.name);
            if old != new_v {
                changes.push(format!("{} {} -> {}", k.name, k.show(old), k.show(new_v)));
                set_field(&mut c, k.name, new_v);
            }
        }
        let rules = |a: &crate::config::AlertsConfig| format!("{:?}", a.rules);
        let alerts_changed = rules(&new.alerts) != rules(&c.alerts);
        c.alerts.rules = new.alerts.rules.clone();
        c.tls = new.tls.clone();
        self.apply(&c);
        drop(c);
        let mut summary = vec![];
        if let (Some(live), Some(tls)) = (&self.tls, tls) {
            live.set(tls);
            summary.push("certificate reloaded".to_string());
        }
        if !changes.is_empty() {
            summary.push(format!("knobs: {}", changes.join(", ")));
        }
        if alerts_changed {
            summary.push(format!("alert rules: {} in force", new.alerts.rules.len()));
        }
        if summary.is_empty() {
            summary.push("nothing changed".into());
        }
        if !restart.is_empty() {
            summary.push(format!(
                "needs a restart to change (kept as running): {}",
                restart.join(", ")
            ));
        }
        Ok(summary.join("; "))
    }

    fn names(&self) -> String {
        let names: Vec<&str> = KNOBS
            .iter()
            .filter(|k| k.roles.contains(&self.role))
            .map(|k| k.name)
            .collect();
        format!("the knobs of this process: {}", names.join(", "))
    }

    fn unknown(&self, name: &str) -> String {
        format!("no knob named {name:?} ({})", self.names())
    }
}

fn get_in(c: &Config, name: &str) -> u64 {
    KNOBS
        .iter()
        .zip(values_of(c))
        .find(|(k, _)| k.name == name)
        .map_or(0, |(_, v)| v)
}

/// The TLS server configuration: the configured certificate and key, or a self-signed
/// pair in `data_dir/tls` (made on first use).
pub fn load_tls(config: &Config) -> Result<Arc<rustls::ServerConfig>, String> {
    let identity = match &config.tls {
        Some(t) => {
            gateway::tls::Identity::from_pem_files(&t.cert, &t.key).map_err(|e| e.to_string())?
        }
        None => {
            let dir = config.data_dir.join("tls");
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let (id, made) =
                gateway::tls::Identity::self_signed_in(&dir, &[]).map_err(|e| e.to_string())?;
            if made {
                tracing::info!("generated a self-signed certificate in {}", dir.display());
            }
            id
        }
    };
    tracing::info!("certificate sha256 fingerprint {}", identity.fingerprint());
    gateway::tls::server_config(identity).map_err(|e| e.to_string())
}

/// Reloads the configuration and says what happened (SIGHUP, `POST /reload`).
pub fn reload_logged(control: &Control) -> Result<String, String> {
    match control.reload(load_tls) {
        Ok(summary) => {
            tracing::info!("reloaded: {summary}");
            Ok(summary)
        }
        Err(e) => {
            tracing::warn!("reload refused, the running configuration stays: {e}");
            Err(e)
        }
    }
}
