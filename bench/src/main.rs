//! `switchboard-bench`: the load generator that measures Switchboard.
//!
//! Scenarios: `connect` (N idle logged-in TLS clients, spread over child processes and
//! source addresses), `pairs` (P sender→receiver pairs with a window), `offline`
//! (queue M messages for offline users, then drain them), `storm` (N clients drop and
//! reconnect at once while pairs run). Each result carries the server's own cost,
//! sampled from `/proc` before and after. See BENCHMARKS.md for the figures.
//!
//! # Layout
//! - [`engine`]: many non-blocking TLS clients in one thread (mio + rustls).
//! - [`login`]: bringing clients up (rate, in-flight bound, registration, retries).
//! - [`pairs`]: the pairs workload.
//! - [`scenarios`]: the four scenarios and the child-process protocol of `connect`.
//! - [`server`]: starting the server, `/proc` sampling, the host description.
//! - [`report`]: table, JSON, SVG.

mod engine;
mod login;
mod pairs;
mod report;
mod scenarios;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "switchboard-bench",
    version,
    about = "Load generator for Switchboard"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

/// Where the server is: started here (default) or given.
#[derive(Args, Clone, Debug)]
pub struct ServerArgs {
    /// A running server's public address (otherwise the bench starts one).
    #[arg(long, requires = "fingerprint")]
    pub addr: Option<SocketAddr>,
    /// The running server's certificate fingerprint (SHA-256 hex, as it prints it).
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// The running server's SMS log(s) (`sms.kind = "log"`), for registration PINs.
    #[arg(long = "sms-log")]
    pub sms_logs: Vec<PathBuf>,
    /// Pids of the running server's processes, for its memory and CPU.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// The `switchboard` binary to start (default: next to this one).
    #[arg(long)]
    pub switchboard: Option<PathBuf>,
    /// Started server: 0 = all in one (`serve`); N = one router and N gateway
    /// processes sharing the port.
    #[arg(long, default_value_t = 0)]
    pub gateways: u32,
    /// Started server: gateway workers per process.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Started server: pin it to these CPUs (`taskset -c`, e.g. `0`).
    #[arg(long)]
    pub server_cpus: Option<String>,
    /// Started server: TOML appended to its configuration.
    #[arg(long, default_value = "")]
    pub server_toml: String,
    /// Started server: keep its data in this directory (created if missing), so that
    /// accounts, and the keys saved with `--keys`, stay valid from one run to the next.
    #[arg(long)]
    pub server_data: Option<PathBuf>,
}

/// Options every scenario has.
#[derive(Args, Clone, Debug)]
pub struct Common {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Saved device keys (`+phone hex-key` lines): reused, and new ones appended.
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// First phone number of this run's users.
    #[arg(long)]
    pub first_phone: Option<u64>,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a chart (SVG) here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Use full handshakes only (no TLS resumption). Default: true.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub full_handshakes: bool,
    /// Connections opening at once per process.
    #[arg(long, default_value_t = 256)]
    pub inflight: usize,
}

#[derive(Subcommand)]
enum Scenario {
    /// N clients connect over TLS, log in and stay idle for a hold time.
    Connect(scenarios::ConnectArgs),
    /// P sender→receiver pairs, window W, body S, for D seconds after a warm-up.
    Pairs(scenarios::PairsArgs),
    /// Queue M messages for offline users, then connect them and measure the drain.
    Offline(scenarios::OfflineArgs),
    /// N clients drop and reconnect at once while pairs keep running.
    Storm(scenarios::StormArgs),
    /// Internal: one child process of `connect`.
    #[command(hide = true)]
    Child { spec: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.scenario {
        Scenario::Connect(a) => scenarios::connect(a),
        Scenario::Pairs(a) => scenarios::pairs(a),
        Scenario::Offline(a) => scenarios::offline(a),
        Scenario::Storm(a) => scenarios::storm(a),
        Scenario::Child { spec } => scenarios::child(&spec),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
