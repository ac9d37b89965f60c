//! The `switchboard` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "switchboard",
    version,
    about = "Switchboard messaging gateway appliance"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Runs the all-in-one appliance: gateway, router and storage in one process.
    Serve {
        /// TOML configuration (every field optional; see docs and `config.rs`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides `listen` (e.g. 127.0.0.1:0 for any free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Overrides `data_dir`.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Validates the configuration and exits.
        #[arg(long)]
        check: bool,
        /// Upgrade: take the listening sockets over from the `serve` running with the
        /// same data directory (it drains its connections with a reconnect reason at
        /// `upgrade.drain_per_sec`, then releases its logs, which this one then opens).
        #[arg(long)]
        takeover: bool,
    },
    /// Runs a gateway of a split deployment: TLS workers, links to every router.
    Gateway {
        /// This gateway's id in the cluster map (1 to 255).
        #[arg(long)]
        id: u8,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        #[arg(long)]
        data: Option<PathBuf>,
        /// Upgrade: take the listening sockets over from the gateway running with the
        /// same data directory (it drains its connections with a reconnect reason at
        /// `upgrade.drain_per_sec`; both serve their own connections meanwhile).
        #[arg(long)]
        takeover: bool,
    },
    /// Runs a router of a split deployment: one shard and its log, links on its private address.
    Router {
        /// This router's id in the cluster map.
        #[arg(long)]
        id: u16,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// The host against a tuning profile: check, diff, apply, rollback, render.
    #[command(subcommand)]
    Tune(crate::tune::TuneCommand),
    /// The appliance's TLS certificate.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Operator commands on a router shard's storage log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Runtime knobs of a running appliance, through its admin API.
    Knob {
        #[command(subcommand)]
        action: KnobAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// A live, sar-like view of a running appliance: one line per interval with the
    /// chosen figures (counters as rates per second), through its admin API.
    Stat {
        /// Seconds between lines.
        #[arg(long, default_value_t = 1)]
        interval: u64,
        /// Lines to print, then stop (0: until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
        /// Figures: metric names from /metrics (the `switchboard_` prefix may be left
        /// out) or reporter figures from /activity (host_*, process_*).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "gateway_connections,gateway_accepted_total,router_messages_accepted_total,router_messages_delivered_total,storage_pending_messages,gateway_link_blocked,router_waiting_durable,host_cpu_idle,process_rss_kb"
        )]
        columns: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Makes a running appliance read its configuration again (certificate, knobs),
    /// through its admin API (the same as sending it SIGHUP).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Where the admin API is and its token.
#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// The admin API's address.
    #[arg(long, global = true, default_value = crate::config::DEFAULT_LISTEN)]
    pub admin: String,
    /// The file holding the token (default: DATA/admin.token).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// The appliance's data directory, where the token is by default.
    #[arg(long, global = true, default_value = "./data")]
    pub data: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum KnobAction {
    /// Every knob with its value, bounds and meaning (JSON).
    List,
    /// One knob's value.
    Get { name: String },
    /// Sets a knob (applied without restart; logged by the appliance with old and new).
    /// VALUE: a whole number, or a name for `log_level` (error, warn, info, debug, trace).
    Set { name: String, value: String },
}

/// A GET on the admin API: the body of a 2xx answer, or why not.
fn admin_get(a: &AdminArgs, token: &str, path: &str) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(format!("http://{}{path}", a.admin))
        .header("authorization", &format!("Bearer {token}"))
        .call()
        .map_err(|e| format!("admin api at {}: {e}", a.admin))?;
    let text = r.body_mut().read_to_string().unwrap_or_default();
    if r.status().is_success() {
        Ok(text)
    } else {
        Err(format!("{path}: {}: {}", r.status(), text.trim()))
    }
}

/// Figures by name: /metrics summed over label sets (with and without the
/// `switchboard_` prefix; counters flagged), and /activity's last values.
fn stat_sample(
    a: &AdminArgs,
    token: &str,
) -> Result<std::collections::HashMap<String, (f64, bool)>, String> {
    let mut out = std::collections::HashMap::new();
    let metrics = admin_get(a, token, "/metrics")?;
    let mut counters = std::collections::HashSet::new();
    for l in metrics.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(n), Some("counter")) = (it.next(), it.next()) {
                counters.insert(n.to_string());
            }
            continue;
        }
        let Some((series, v)) = l.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        let v: f64 = v.parse().unwrap_or(0.0);
        let counter = counters.contains(name);
        let e = out.entry(name.to_string()).or_insert((0.0, counter));
        e.0 += v;
        if let Some(short) = name.strip_prefix("switchboard_") {
            let e = out.entry(short.to_string()).or_insert((0.0, counter));
            e.0 += v;
        }
    }
    if let Ok(activity) = admin_get(a, token, "/activity") {
        for l in activity.lines().filter(|l| !l.starts_with('#')) {
            let mut it = l.split_whitespace();
            if let (Some(n), Some(v)) = (it.next(), it.next()) {
                if let Ok(v) = v.parse() {
                    out.entry(n.to_string()).or_insert((v, false));
                }
            }
        }
    }
    Ok(out)
}

fn stat(a: &AdminArgs, interval: u64, count: u64, columns: &[String]) -> ExitCode {
    let token = match read_token(a) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let interval = std::time::Duration::from_secs(interval.max(1));
    // The reporter's figures (/activity) appear after its first sample, a second or so
    // after the process starts: a column not there yet is waited for, up to 3 s.
    let patience = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut prev = loop {
        let sample = match stat_sample(a, &token) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("switchboard stat: {e}");
                return ExitCode::from(2);
            }
        };
        let missing = columns.iter().any(|c| !sample.contains_key(c));
        if !missing || std::time::Instant::now() >= patience {
            break sample;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    if let Some(c) = columns.iter().find(|c| !prev.contains_key(*c)) {
        eprintln!("switchboard stat: no figure named {c:?} (see /metrics and /activity)");
        return ExitCode::from(2);
    }
    let width = columns.iter().map(|c| c.len().max(10)).collect::<Vec<_>>();
    let mut printed = 0u64;
    while count == 0 || printed < count {
        std::thread::sleep(interval);
        let now = match stat_sample(a, &token) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("switchboard stat: {e}");
                return ExitCode::from(1);
            }
        };
        if printed % 20 == 0 {
            let mut h = format!("{:<8}", "time");
            for (c, w) in columns.iter().zip(&width) {
                h.push_str(&format!(" {c:>w$}"));
            }
            println!("{h}");
        }
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() % 86_400);
        let mut line = format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60);
        for (c, w) in columns.iter().zip(&width) {
            let (v, counter) = now.get(c).copied().unwrap_or((0.0, false));
            let shown = if counter {
                (v - prev.get(c).map_or(v, |p| p.0)).max(0.0) / interval.as_secs_f64()
            } else {
                v
            };
            line.push_str(&format!(" {shown:>w$.0}"));
        }
        println!("{line}");
        prev = now;
        printed += 1;
    }
    ExitCode::SUCCESS
}

fn read_token(a: &AdminArgs) -> Result<String, ExitCode> {
    let token_file = a
        .token_file
        .clone()
        .unwrap_or_else(|| a.data.join("admin.token"));
    std::fs::read_to_string(&token_file)
        .map(|t| t.trim().to_string())
        .map_err(|e| {
            eprintln!("switchboard: admin token {}: {e}", token_file.display());
            ExitCode::from(2)
        })
}

/// One admin API call; prints the answer. Exit 0 on 2xx, 1 otherwise.
fn admin_call(a: &AdminArgs, method: &str, path: &str, body: &str) -> ExitCode {
    let token = match read_token(a) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://{}{path}", a.admin);
    let auth = format!("Bearer {token}");
    let r = match method {
        "GET" => agent.get(&url).header("authorization", &auth).call(),
        "PUT" => agent.put(&url).header("authorization", &auth).send(body),
        _ => agent.post(&url).header("authorization", &auth).send(body),
    };
    match r {
        Ok(mut r) => {
            let ok = r.status().is_success();
            let text = r.body_mut().read_to_string().unwrap_or_default();
            if ok {
                print!("{text}");
                ExitCode::SUCCESS
            } else {
                eprint!("switchboard: {}: {text}", r.status());
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("switchboard: admin api at {}: {e}", a.admin);
            ExitCode::from(2)
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum TlsCommand {
    /// Prints the SHA-256 fingerprint clients pin; generates the self-signed certificate
    /// in DATA/tls first if there is none (as `serve` would on first start).
    Fingerprint {
        #[arg(long, default_value = "./data")]
        data: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum LogCommand {
    /// Opens a log (recovering it: a torn tail is cut), prints the recovery report and
    /// the log's figures. Exits 1 when damage was found, 2 when it cannot be opened.
    Inspect {
        /// The log directory (one per shard, e.g. data/log-0).
        dir: PathBuf,
        /// Storage settings (a TOML file with the fields of `[storage]`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the report as JSON-like `key = value` lines only.
        #[arg(long)]
        quiet: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Tls(TlsCommand::Fingerprint { data }) => {
            let dir = data.join("tls");
            let made = std::fs::create_dir_all(&dir)
                .map_err(|e| format!("{}: {e}", dir.display()))
                .and_then(|()| {
                    gateway::tls::Identity::self_signed_in(&dir, &[]).map_err(|e| e.to_string())
                });
            match made {
                Ok((id, _)) => {
                    println!("{}", id.fingerprint());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("switchboard tls fingerprint: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Gateway {
            id,
            config,
            listen,
            data,
            takeover,
        } => role(&config, listen, data, takeover, |c, s| {
            run_gateway(c, id, s)
        }),
        Command::Router { id, config, data } => {
            role(&config, None, data, false, |c, s| run_router(c, id, s))
        }
        Command::Tune(t) => crate::tune::run(t),
        Command::Serve {
            config,
            listen,
            data,
            check,
            takeover,
        } => {
            let source = crate::control::ConfigSource {
                path: config.clone(),
                listen,
                data: data.clone(),
                takeover,
            };
            let mut c = match config
                .as_deref()
                .map(crate::config::Config::load)
                .transpose()
            {
                Ok(c) => c.unwrap_or_default(),
                Err(e) => {
                    eprintln!("switchboard serve: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Some(l) = listen {
                c.listen = l;
            }
            if let Some(d) = data {
                c.data_dir = d;
            }
            if check {
                return match c.validate() {
                    Ok(()) => {
                        println!("configuration is valid");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("switchboard serve: {e}");
                        ExitCode::from(2)
                    }
                };
            }
            match crate::serve::serve(c, source) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchboard serve: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Command::Knob { action, admin } => match action {
            KnobAction::List => admin_call(&admin, "GET", "/knobs", ""),
            KnobAction::Get { name } => admin_call(&admin, "GET", &format!("/knobs/{name}"), ""),
            KnobAction::Set { name, value } => {
                admin_call(&admin, "PUT", &format!("/knobs/{name}"), &value)
            }
        },
        Command::Reload { admin } => admin_call(&admin, "POST", "/reload", ""),
        Command::Stat {
            interval,
            count,
            columns,
            admin,
        } => stat(&admin, interval, count, &columns),
        Command::Log(LogCommand::Inspect { dir, config, quiet }) => {
            crate::logcmd::inspect(&dir, config.as_deref(), quiet)
        }
    }
}

/// Runs a role of the split deployment with its configuration (read again on reload).
fn role(
    path: &std::path::Path,
    listen: Option<std::net::SocketAddr>,
    data: Option<PathBuf>,
    takeover: bool,
    run: impl FnOnce(
        crate::config::Config,
        crate::control::ConfigSource,
    ) -> Result<(), crate::error::Error>,
) -> ExitCode {
    let source = crate::control::ConfigSource {
        path: Some(path.to_path_buf()),
        listen,
        data,
        takeover,
    };
    let c = match source.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return ExitCode::from(2);
        }
    };
    match run(c, source) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(target_os = "linux")]
fn run_gateway(
    c: crate::config::Config,
    id: u8,
    s: crate::control::ConfigSource,
) -> Result<(), crate::error::Error> {
    crate::roles::gateway(c, id, s)
}

fn run_router(
    c: crate::config::Config,
    id: u16,
    s: crate::control::ConfigSource,
) -> Result<(), crate::error::Error> {
    crate::roles::router(c, id, s)
}

#[cfg(not(target_os = "linux"))]
fn run_gateway(
    _c: crate::config::Config,
    _id: u8,
    _s: crate::control::ConfigSource,
) -> Result<(), crate::error::Error> {
    Err("gateway needs the io_uring driver (Linux)".into())
}
