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
        } => role(&config, listen, data, |c| run_gateway(c, id)),
        Command::Router { id, config, data } => role(&config, None, data, |c| run_router(c, id)),
        Command::Tune(t) => crate::tune::run(t),
        Command::Serve {
            config,
            listen,
            data,
            check,
        } => {
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
            match crate::serve::serve(c) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchboard serve: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Log(LogCommand::Inspect { dir, config, quiet }) => {
            crate::logcmd::inspect(&dir, config.as_deref(), quiet)
        }
    }
}

fn role(
    path: &std::path::Path,
    listen: Option<std::net::SocketAddr>,
    data: Option<PathBuf>,
    run: impl FnOnce(crate::config::Config) -> Result<(), String>,
) -> ExitCode {
    let mut c = match crate::config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(l) = listen {
        c.listen = l;
    }
    if let Some(d) = data {
        c.data_dir = d;
    }
    match run(c) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(target_os = "linux")]
fn run_gateway(c: crate::config::Config, id: u8) -> Result<(), String> {
    crate::roles::gateway(c, id)
}

#[cfg(target_os = "linux")]
fn run_router(c: crate::config::Config, id: u16) -> Result<(), String> {
    crate::roles::router(c, id)
}

#[cfg(not(target_os = "linux"))]
fn run_gateway(_c: crate::config::Config, _id: u8) -> Result<(), String> {
    Err("gateway needs the io_uring driver (Linux)".into())
}

#[cfg(not(target_os = "linux"))]
fn run_router(_c: crate::config::Config, _id: u16) -> Result<(), String> {
    Err("router processes are built for Linux only so far".into())
}
