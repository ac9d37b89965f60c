//! What every role's process does around its threads, on any Unix: validate and start
//! (signals, realtime check, data directory, open-files limit), open and run router
//! shards, the reporter and the admin API, wait for a signal. `serve` and the split roles
//! (`roles`) build on it; the gateway workers themselves are in `serve` (io_uring, Linux).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use router::driver::{self, unix_ms, Dispatch, ShardRx};
use router::{PartitionMap, Shard};

use crate::config::Config;
use crate::error::Error;

/// Binds the public listeners (the first picks the port; the rest share it) and starts
/// the gateway workers.
#[allow(clippy::too_many_arguments)] // the pieces every worker is made of, each once
/// Resident memory and huge pages of this process, for the periodic stats line.
pub fn process_stats() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    let huge = sysctl::process::anon_huge_pages_kb().map_or("?".to_string(), |k| k.to_string());
    format!("rss {rss} kB, AnonHugePages {huge} kB")
}

/// Raises the open-files limit to the hard limit; says so when that is below what the
/// configuration may need.
fn raise_nofile(needed: u64) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) if soft < needed => tracing::warn!(
            "the open-files limit is {soft} (the hard limit) but the configuration allows up to {needed} \
             connections (workers × gateway.conns_per_worker + 1024): connections beyond the limit will be refused. \
             Raise the hard limit (LimitNOFILE= in the systemd unit, /etc/security/limits.conf) or lower gateway.conns_per_worker."
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the open-files limit: {e}"),
    }
}

/// With `huge_pages = false`, runs again with jemalloc told not to use THP (its options
/// are read once, at start). Returns only if no re-exec was needed.
fn maybe_reexec_without_thp(config: &Config) -> Result<(), Error> {
    const VAR: &str = "_RJEM_MALLOC_CONF";
    if !cfg!(target_os = "linux") {
        return Ok(()); // the appliance's jemalloc is Linux's (FreeBSD's malloc is its own)
    }
    if config.process.huge_pages || std::env::var_os(VAR).is_some() {
        return Ok(());
    }
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(Error::io("this program's path"))?;
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(VAR, "thp:never,metadata_thp:disabled")
        .exec();
    Err(Error::io("re-exec without huge pages")(err))
}

/// Realtime scheduling must be allowed before any worker starts: try it on a scratch thread.
fn check_realtime(priority: u8) -> Result<(), Error> {
    if priority == 0 {
        return Ok(());
    }
    std::thread::spawn(move || sysctl::process::realtime(priority))
        .join()
        .map_err(|_| Error::from("realtime check panicked"))?
        .map_err(|e| {
            Error::Config(format!("process.realtime_priority = {priority}: not permitted ({e}); run as root or with CAP_SYS_NICE (systemd: CPUSchedulingPolicy=fifo), or set it to 0"))
        })
}

pub(crate) fn tune_thread(config: &Config, cpu: usize, realtime: bool) {
    if config.process.pin_threads {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if let Err(e) = sysctl::process::pin_to_cpu(cpu % cpus) {
            tracing::warn!("pinning to CPU {}: {e}", cpu % cpus);
        }
    }
    if realtime && config.process.realtime_priority > 0 {
        if let Err(e) = sysctl::process::realtime(config.process.realtime_priority) {
            tracing::warn!("realtime priority: {e}");
        }
    }
}

/// Set by SIGHUP; taken by [`take_hup`].
static HUP: std::sync::LazyLock<Arc<AtomicBool>> =
    std::sync::LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// Whether a SIGHUP arrived since the last call.
pub(crate) fn take_hup() -> bool {
    HUP.swap(false, Ordering::AcqRel)
}

/// Everything every role does first: validate, signals, process checks, data directory,
/// open-files limit. Returns the flag SIGINT/SIGTERM set.
pub(crate) fn start(config: &Config) -> Result<Arc<AtomicBool>, Error> {
    config.validate().map_err(Error::Config)?;
    crate::logging::init(config.log.index().map_err(Error::Config)?);
    maybe_reexec_without_thp(config)?;
    // Signals first: a SIGTERM at any point after this stops cleanly.
    let signalled = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&signalled)).map_err(|e| e.to_string())?;
    }
    // SIGHUP asks for a reload (serve) and must never kill the process (its default).
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&HUP))
        .map_err(|e| e.to_string())?;
    check_realtime(config.process.realtime_priority)?;
    if !config.process.tune_profile.is_empty() {
        crate::tune::report_shortfalls(&config.process.tune_profile);
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
    raise_nofile((config.workers() * config.gateway.conns_per_worker) as u64 + 1024);
    Ok(signalled)
}

pub(crate) fn open_shard(
    config: &Config,
    id: u16,
    map: PartitionMap,
    dir: &std::path::Path,
) -> Result<Shard, Error> {
    let (shard, report) = Shard::open(
        id,
        map,
        config.router.clone(),
        config.storage.clone(),
        dir,
        unix_ms(),
    )
    .map_err(|source| Error::Shard { shard: id, source })?;
    tracing::info!(
        "shard {id}: {} records, {} pending messages, {} accounts recovered in {:.0} ms{}",
        report.records,
        report.messages_live,
        report.accounts_live,
        report.elapsed.as_secs_f64() * 1e3,
        if report.clean() {
            String::new()
        } else {
            format!(" — damage: {}", report.notes.join("; "))
        }
    );
    Ok(shard)
}

pub(crate) fn spawn_shard<D: Dispatch>(
    config: &Config,
    shard: Shard,
    rx: ShardRx,
    d: Arc<D>,
    cpu: usize,
    tuned: Sender<()>,
) -> Result<JoinHandle<()>, String> {
    let c = config.clone();
    std::thread::Builder::new()
        .name(format!("shard-{}", shard.id()))
        .spawn(move || {
            tune_thread(&c, cpu, false);
            let _ = tuned.send(());
            driver::run(shard, rx, d)
        })
        .map_err(|e| e.to_string())
}

/// What watches a running process: the activity reporter (with the alerts) and the
/// admin API. Both stop when this is dropped.
pub(crate) struct Operations {
    _admin: Option<crate::admin::Admin>,
    _reporter: Option<crate::reporter::Reporter>,
}

/// Starts the reporter and the admin API as configured (the token file is made on
/// first start).
pub(crate) fn start_operations(
    config: &Config,
    mut src: crate::admin::Sources,
) -> Result<Operations, Error> {
    let activity = crate::metrics::ActivityCell::default();
    if config.reporter.enabled {
        src.activity = Some(Arc::clone(&activity));
    }
    let src = Arc::new(src);
    let reporter = if config.reporter.enabled {
        Some(crate::reporter::start(
            &config.reporter,
            &config.alerts,
            config.data_dir.clone(),
            Arc::clone(&src),
            activity,
        )?)
    } else {
        None
    };
    if !config.admin.enabled {
        return Ok(Operations {
            _admin: None,
            _reporter: reporter,
        });
    }
    let token_file = config
        .admin
        .token_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join("admin.token"));
    let token = crate::admin::load_or_make_token(&token_file)?;
    let admin = match crate::admin::start(&config.admin, token, src) {
        Ok(a) => Some(a),
        // Only the default address being taken is a warning: the operator asked for
        // nothing, and a second appliance on the host holds it.
        Err(e @ Error::AdminBind { .. }) if config.admin.listen.is_none() => {
            tracing::warn!(
                "admin api not started: {e} (another appliance on this host? set [admin] listen)"
            );
            None
        }
        Err(e) => return Err(e),
    };
    if let Some(a) = &admin {
        tracing::info!(
            "admin api on http://{} (/metrics, /status, /activity, /knobs; bearer token in {})",
            a.addr,
            token_file.display()
        );
    }
    Ok(Operations {
        _admin: admin,
        _reporter: reporter,
    })
}

/// Waits until every tuned thread has started, then reports huge pages.
pub(crate) fn ready(config: &Config, tuned_rx: Receiver<()>, threads: usize) -> Result<(), Error> {
    for _ in 0..threads {
        tuned_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "a thread did not start".to_string())?;
    }
    match sysctl::process::anon_huge_pages_kb() {
        Some(kb) => tracing::info!(
            "huge pages: AnonHugePages {kb} kB (jemalloc thp {})",
            if config.process.huge_pages {
                "always"
            } else {
                "never"
            }
        ),
        None => tracing::info!("huge pages: not reported by this system"),
    }
    Ok(())
}
