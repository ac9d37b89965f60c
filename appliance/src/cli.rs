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
    /// Operator commands on a router shard's storage log.
    #[command(subcommand)]
    Log(LogCommand),
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
        Command::Log(LogCommand::Inspect { dir, config, quiet }) => {
            crate::logcmd::inspect(&dir, config.as_deref(), quiet)
        }
    }
}
