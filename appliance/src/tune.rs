//! `switchboard tune`: the host against a tuning profile (see docs/TUNING.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use sysctl::plan::{self, Status};
use sysctl::render::{render, Format};
use sysctl::{Profile, SystemHost};

/// Where `apply` saves the previous values by default.
pub const STATE_DEFAULT: &str = "/var/lib/switchboard/tune-state.toml";

#[derive(Subcommand, Debug)]
pub enum TuneCommand {
    /// Exits 1 when the host is below the profile; one line per shortfall.
    Check {
        /// A built-in profile (linux-dev, linux-1m, freebsd-2m) or a TOML file.
        profile: String,
        /// Only keys starting with this prefix (e.g. `net.`).
        #[arg(long)]
        only: Option<String>,
    },
    /// Every entry: host value, profile value, status.
    Diff {
        profile: String,
        #[arg(long)]
        only: Option<String>,
    },
    /// Prints the plan; with --yes writes it, saving the previous values first.
    Apply {
        profile: String,
        #[arg(long)]
        yes: bool,
        #[arg(long, default_value = STATE_DEFAULT)]
        state: PathBuf,
        #[arg(long)]
        only: Option<String>,
    },
    /// Restores the values saved by the last apply.
    Rollback {
        #[arg(long, default_value = STATE_DEFAULT)]
        state: PathBuf,
    },
    /// Renders a profile for packaging: sysctl.d, sysctl.conf, loader.conf, cmdline, systemd, limits, login.conf.
    Render {
        profile: String,
        #[arg(long)]
        format: String,
    },
}

fn load(p: &str) -> Result<Profile, ExitCode> {
    Profile::load(p).map_err(|e| {
        eprintln!("switchboard tune: {e}");
        ExitCode::from(2)
    })
}

pub fn run(cmd: TuneCommand) -> ExitCode {
    match run_inner(cmd) {
        Ok(code) | Err(code) => code,
    }
}

fn run_inner(cmd: TuneCommand) -> Result<ExitCode, ExitCode> {
    let mut host = SystemHost;
    match cmd {
        TuneCommand::Check { profile, only } => {
            let p = load(&profile)?;
            let lines = plan::check(&p, &host, only.as_deref());
            let short: Vec<_> = lines.iter().filter(|l| l.is_short()).collect();
            for l in lines
                .iter()
                .filter(|l| l.is_short() || l.status == Status::Missing)
            {
                println!("{}", l.describe());
            }
            println!(
                "{}: {} of {} entries fall short",
                p.name,
                short.len(),
                lines.len()
            );
            Ok(if short.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        TuneCommand::Diff { profile, only } => {
            let p = load(&profile)?;
            for l in plan::check(&p, &host, only.as_deref()) {
                println!("{}", l.describe());
            }
            Ok(ExitCode::SUCCESS)
        }
        TuneCommand::Apply {
            profile,
            yes,
            state,
            only,
        } => {
            let p = load(&profile)?;
            let lines = plan::check(&p, &host, only.as_deref());
            let todo = plan::plan(&lines);
            for (e, prev) in &todo {
                println!("set {} = {} (now {prev})", e.key, e.value);
            }
            for l in lines.iter().filter(|l| l.status == Status::PendingReboot) {
                println!("pending reboot: {} = {} (boot-time; `switchboard tune render {} --format ...`)", l.entry.key, l.entry.value, p.name);
            }
            for l in lines.iter().filter(|l| l.status == Status::Missing) {
                println!("{}", l.describe());
            }
            if todo.is_empty() {
                println!("nothing to change at runtime");
                return Ok(ExitCode::SUCCESS);
            }
            if !yes {
                println!(
                    "dry run: nothing changed (add --yes to apply; previous values go to {})",
                    state.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            apply(&p, &mut host, &state, only.as_deref())
        }
        TuneCommand::Rollback { state } => match plan::rollback(&mut host, &state) {
            Ok(out) => {
                for (k, v) in &out.written {
                    println!("restored {k} = {v}");
                }
                for e in &out.failed {
                    eprintln!("failed: {e}");
                }
                Ok(if out.failed.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
            Err(e) => {
                eprintln!("switchboard tune rollback: {e}");
                Err(ExitCode::from(2))
            }
        },
        TuneCommand::Render { profile, format } => {
            let p = load(&profile)?;
            let Some(f) = Format::parse(&format) else {
                let names: Vec<_> = Format::ALL.iter().map(|(n, _)| *n).collect();
                eprintln!(
                    "switchboard tune render: unknown format {format:?}; one of {}",
                    names.join(", ")
                );
                return Err(ExitCode::from(2));
            };
            match render(&p, f) {
                Ok(text) => {
                    print!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("switchboard tune render: {e}");
                    Err(ExitCode::from(2))
                }
            }
        }
    }
}

fn apply(
    p: &Profile,
    host: &mut SystemHost,
    state: &Path,
    only: Option<&str>,
) -> Result<ExitCode, ExitCode> {
    match plan::apply(p, host, state, only) {
        Ok(out) => {
            for (k, v) in &out.written {
                println!("applied {k} = {v}");
            }
            for e in &out.failed {
                eprintln!("failed: {e}");
            }
            println!(
                "previous values saved in {}; `switchboard tune rollback --state {}` restores them",
                state.display(),
                state.display()
            );
            Ok(if out.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Err(e) => {
            eprintln!("switchboard tune apply: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// At start: logs each shortfall of the host against the configured profile once.
pub fn report_shortfalls(profile: &str) {
    let p = match Profile::load(profile) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("switchboard: tuning profile: {e}");
            return;
        }
    };
    let host = SystemHost;
    let lines = plan::check(&p, &host, None);
    let short: Vec<_> = lines.iter().filter(|l| l.is_short()).collect();
    for l in &short {
        eprintln!(
            "switchboard: host below profile {}: {}",
            p.name,
            l.describe()
        );
    }
    if short.is_empty() {
        println!("switchboard: host meets tuning profile {}", p.name);
    }
}
