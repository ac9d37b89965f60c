//! Changing a running appliance: runtime knobs (admin API, `switchboard knob`) and
//! reloading the configuration (SIGHUP, admin API `POST /reload`).
//!
//! Knobs reach the threads through [`Live`] cells: a worker or shard picks a change up
//! at its next loop turn (workers: at most one sweep, 250 ms, when idle; shards: their
//! next tick). Every change is logged with its old and new value; values outside a
//! knob's bounds are refused with the bounds.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use gateway::live::Live;
use gateway::uring::WorkerKnobs;
use rustls::ServerConfig;

use crate::config::Config;

/// One runtime-adjustable setting.
pub struct KnobDef {
    pub name: &'static str,
    pub min: u64,
    pub max: u64,
    /// The configuration field it starts from (and that a reload sets it back to).
    pub field: &'static str,
    pub doc: &'static str,
}

pub const KNOBS: [KnobDef; 4] = [
    KnobDef {
        name: "accepts_per_sec",
        min: 1,
        max: 10_000_000,
        field: "gateway.accepts_per_sec",
        doc: "connections each gateway worker accepts per second; more are refused",
    },
    KnobDef {
        name: "outbound_bytes_max",
        min: 64 * 1024,
        max: 1 << 30,
        field: "limits.outbound_bytes_max",
        doc: "encrypted bytes a connection may have waiting; over it the client is cut as too slow",
    },
    KnobDef {
        name: "flush_interval_us",
        min: 50,
        max: 10_000_000,
        field: "storage.group_interval_us",
        doc: "group-commit interval of every shard's log (durability = \"group\")",
    },
    KnobDef {
        name: "tee_sample_percent",
        min: 0,
        max: 100,
        field: "tee.sample_percent",
        doc: "percentage of users whose requests are mirrored to the shadow cluster ([tee])",
    },
];

/// The knobs' current values, from a configuration.
fn values_of(c: &Config) -> [u64; 4] {
    [
        c.gateway.accepts_per_sec as u64,
        c.limits.outbound_bytes_max as u64,
        c.storage.group_interval_us,
        c.tee.sample_percent,
    ]
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
    /// The configuration in force (knob changes are written into it).
    config: Mutex<Config>,
    source: ConfigSource,
    pub tls: Arc<Live<Arc<ServerConfig>>>,
    pub workers: Arc<Live<WorkerKnobs>>,
    pub flush_interval_us: Arc<Live<u64>>,
    /// Read by the tee for every request (a plain relaxed load).
    pub tee_sample_percent: Arc<std::sync::atomic::AtomicU64>,
}

impl Control {
    pub fn new(config: &Config, source: ConfigSource, tls: Arc<ServerConfig>) -> Arc<Control> {
        Arc::new(Control {
            workers: Live::new(WorkerKnobs {
                accepts_per_sec: config.gateway.accepts_per_sec,
                limits: Arc::new(config.limits()),
            }),
            flush_interval_us: Live::new(config.storage.group_interval_us),
            tee_sample_percent: Arc::new(config.tee.sample_percent.into()),
            tls: Live::new(tls),
            config: Mutex::new(config.clone()),
            source,
        })
    }

    fn config(&self) -> std::sync::MutexGuard<'_, Config> {
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every knob: (definition, value).
    pub fn knobs(&self) -> Vec<(&'static KnobDef, u64)> {
        let v = values_of(&self.config());
        KNOBS.iter().zip(v).collect()
    }

    pub fn get(&self, name: &str) -> Result<u64, String> {
        self.knobs()
            .into_iter()
            .find(|(k, _)| k.name == name)
            .map(|(_, v)| v)
            .ok_or_else(|| unknown(name))
    }

    /// Sets a knob; (old, new). Logged.
    pub fn set(&self, name: &str, value: u64) -> Result<(u64, u64), String> {
        let def = KNOBS
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| unknown(name))?;
        if !(def.min..=def.max).contains(&value) {
            return Err(format!(
                "knob {name}: {value} is out of bounds ({} to {})",
                def.min, def.max
            ));
        }
        let mut c = self.config();
        let old = self.get_locked(&c, name);
        match name {
            "accepts_per_sec" => c.gateway.accepts_per_sec = value as u32,
            "outbound_bytes_max" => c.limits.outbound_bytes_max = value as usize,
            "flush_interval_us" => c.storage.group_interval_us = value,
            "tee_sample_percent" => c.tee.sample_percent = value,
            _ => unreachable!("every knob is handled"),
        }
        self.apply(&c);
        drop(c);
        println!("switchboard: knob {name}: {old} -> {value}");
        Ok((old, value))
    }

    fn get_locked(&self, c: &Config, name: &str) -> u64 {
        KNOBS
            .iter()
            .zip(values_of(c))
            .find(|(k, _)| k.name == name)
            .map_or(0, |(_, v)| v)
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
            .store(c.tee.sample_percent, std::sync::atomic::Ordering::Relaxed);
    }

    /// Reads the configuration again (SIGHUP, `POST /reload`): certificate, knobs.
    /// A configuration that does not load or validate, or a certificate that does not
    /// load, is refused with the reason and the running one stays. Settings that need
    /// a restart (addresses, threads, data directory) are named and left as they are.
    pub fn reload(
        &self,
        make_tls: impl Fn(&Config) -> Result<Arc<ServerConfig>, String>,
    ) -> Result<String, String> {
        let new = self.source.load()?;
        let tls = make_tls(&new)?;
        let mut c = self.config();
        let mut restart = vec![];
        if new.listen != c.listen {
            restart.push("listen");
        }
        if new.data_dir != c.data_dir {
            restart.push("data_dir");
        }
        if new.workers != c.workers || new.shards != c.shards {
            restart.push("workers/shards");
        }
        if new.admin.listen != c.admin.listen {
            restart.push("admin.listen");
        }
        if new.tee.enabled != c.tee.enabled {
            restart.push("tee.enabled");
        }
        let mut changes = vec![];
        for ((k, old), new_v) in KNOBS.iter().zip(values_of(&c)).zip(values_of(&new)) {
            if old != new_v {
                changes.push(format!("{} {old} -> {new_v}", k.name));
            }
        }
        c.gateway.accepts_per_sec = new.gateway.accepts_per_sec;
        c.limits.outbound_bytes_max = new.limits.outbound_bytes_max;
        c.storage.group_interval_us = new.storage.group_interval_us;
        c.tee.sample_percent = new.tee.sample_percent;
        c.tls = new.tls.clone();
        self.apply(&c);
        drop(c);
        self.tls.set(tls);
        let mut summary = String::from("certificate reloaded");
        if !changes.is_empty() {
            summary.push_str(&format!("; knobs: {}", changes.join(", ")));
        }
        if !restart.is_empty() {
            summary.push_str(&format!(
                "; needs a restart to change (kept as running): {}",
                restart.join(", ")
            ));
        }
        Ok(summary)
    }
}

fn unknown(name: &str) -> String {
    let names: Vec<&str> = KNOBS.iter().map(|k| k.name).collect();
    format!("no knob named {name:?} (knobs: {})", names.join(", "))
}
