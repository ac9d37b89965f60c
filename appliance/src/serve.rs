//! Running the appliance. `switchboard serve`: gateway, router and storage in one process,
//! joined by the in-process link (channels). The pieces here are shared with the split
//! deployment (`roles.rs`: `switchboard gateway` and `switchboard router`), which joins
//! the same gateway workers and router shards with TCP links instead.
//!
//! Threads: one per gateway worker (io_uring), one per router shard (its own log). Stops
//! cleanly on SIGINT/SIGTERM: workers close every connection with `ServerShutdown`,
//! then shards flush their logs.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::link::{reply_channel, ReplyRx, ReplyTx, RouterLink, WorkerLink};
use gateway::uring::Worker;
use gateway::worker::WorkerStats;
use gateway::worker::{StatsCell, WorkerConfig};
use router::driver::{self, unix_ms, Dispatch, ShardBatches, ShardMsg, ShardTx};
use router::{PartitionMap, Shard};
use rustls::ServerConfig;
use std::thread::JoinHandle;
use wire::link::{ConnId, FromRouter, ToClient, ToRouter};

use crate::config::Config;
use crate::error::Error;
use crate::process::{
    open_shard, process_stats, ready, spawn_shard, start, start_operations, take_hup, tune_thread,
};
use crate::sms::Sms;

/// A gateway worker's reply queue and the eventfd that wakes it.
pub(crate) type WorkerInbox = ReplyTx;

/// Sends replies to their workers, one batch per worker, and wakes each worker once.
pub(crate) fn to_workers(
    workers: &[WorkerInbox],
    replies: impl IntoIterator<Item = (ConnId, ToClient)>,
) {
    let mut batches: Vec<Vec<(ConnId, ToClient)>> = Vec::new();
    for (conn, msg) in replies {
        let w = conn.worker() as usize;
        if w < workers.len() {
            if batches.len() <= w {
                batches.resize_with(w + 1, Vec::new);
            }
            batches[w].push((conn, msg));
        }
    }
    for (w, batch) in batches.into_iter().enumerate() {
        if !batch.is_empty() && workers[w].queue(batch) {
            gateway::wake::wake(workers[w].wake_fd());
        }
    }
}

/// The all-in-one routes: shards by partition, client replies by worker.
struct Routes {
    map: PartitionMap,
    shards: Vec<ShardTx>,
    workers: Vec<WorkerInbox>,
    sms: Arc<Sms>,
}

/// The all-in-one process's queues: shard inboxes, the tee's links.
struct ServeQueues {
    routes: Arc<Routes>,
    tee: Option<Arc<crate::tee::Tee>>,
}

impl crate::metrics::Queues for ServeQueues {
    fn shard_inboxes(&self) -> Vec<(u16, usize)> {
        (self.routes.shards.iter().enumerate())
            .map(|(i, tx)| (i as u16, tx.queued()))
            .collect()
    }

    fn links(&self) -> Vec<(String, usize)> {
        self.tee.as_ref().map_or(vec![], |t| t.queued())
    }

    fn worker_replies(&self) -> Vec<(usize, usize)> {
        (self.routes.workers.iter().enumerate())
            .map(|(i, w)| (i, w.waiting()))
            .collect()
    }
}

/// A gateway worker's in-process link: requests gathered per shard during a loop
/// turn, sent as one message per shard at its end, then one wake-up.
struct InProcLink {
    routes: Arc<Routes>,
    batches: ShardBatches,
}

impl RouterLink for InProcLink {
    /// Hands the request back when its shard's inbox is at its bound (with what this
    /// turn gathered for it): the worker stops reading that client until there is room.
    fn send(&mut self, req: ToRouter) -> Result<(), ToRouter> {
        let s = self.routes.map.shard_of(req.route_key()) as usize;
        if self.batches.gathered(s) >= self.routes.shards[s].room() {
            return Err(req);
        }
        self.batches.push_to(s, req);
        Ok(())
    }

    fn flush(&mut self) -> bool {
        self.batches.send(&self.routes.shards);
        false // replies come later, with a wake-up
    }
}

/// One gateway worker and one router shard in the same thread: the worker hands its
/// requests to the shard at the end of each loop turn and reads the replies in the same
/// turn. No hand-off between threads, so no wake-ups and no context switches per turn
/// (on one core, at small batches, a quarter of the server's CPU per message). The shard's timers
/// run on the worker's 1 ms tick. Chosen when `workers = 1` and `shards = 1`, unless
/// `process.inline_shard = false`.
struct InlineLink {
    shard: Option<Shard>,
    routes: Arc<Routes>,
    local: Vec<ToRouter>,
    out: Vec<FromRouter>,
}

impl InlineLink {
    /// Runs the queued requests (and what the shard sends itself); `true` when replies
    /// went to the worker.
    fn run(&mut self, now: u64) -> bool {
        let Some(shard) = self.shard.as_mut() else {
            return false;
        };
        let mut replies = Vec::new();
        loop {
            for r in self.local.drain(..) {
                shard.handle(now, r, &mut self.out);
            }
            for o in self.out.drain(..) {
                match o {
                    FromRouter::ToClient { conn, msg } => replies.push((conn, msg)),
                    // One shard owns every partition: it is the destination.
                    FromRouter::ToRouter(req) => self.local.push(req),
                    FromRouter::Sms { phone, pin } => self.routes.sms.send(phone, pin),
                }
            }
            if self.local.is_empty() {
                break;
            }
        }
        if replies.is_empty() {
            return false;
        }
        // The worker reads its inbox right after this returns: no wake-up needed.
        let _ = self.routes.workers[0].queue(replies);
        true
    }
}

impl RouterLink for InlineLink {
    fn send(&mut self, req: ToRouter) -> Result<(), ToRouter> {
        self.local.push(req);
        Ok(())
    }

    fn flush(&mut self) -> bool {
        !self.local.is_empty() && self.run(unix_ms())
    }

    fn tick_every(&self) -> Option<Duration> {
        Some(Duration::from_millis(1))
    }

    fn tick(&mut self) -> bool {
        let now = unix_ms();
        if let Some(shard) = self.shard.as_mut() {
            shard.tick(now, &mut self.out);
        }
        self.run(now)
    }
}

impl Drop for InlineLink {
    /// The worker stopped: the shard handles what is left and closes its log.
    fn drop(&mut self) {
        let now = unix_ms();
        if let Some(shard) = self.shard.as_mut() {
            shard.tick(now, &mut self.out);
        }
        self.run(now);
        if let Some(shard) = self.shard.take() {
            let id = shard.id();
            if let Err(e) = shard.close() {
                tracing::warn!("shard {id}: closing its log: {e}");
            }
        }
    }
}

impl Dispatch for Routes {
    fn dispatch(&self, out: &mut Vec<FromRouter>) {
        let (mut replies, mut requests) = (vec![], ShardBatches::default());
        for o in out.drain(..) {
            match o {
                FromRouter::ToClient { conn, msg } => replies.push((conn, msg)),
                FromRouter::ToRouter(req) => requests.push(&self.map, req),
                FromRouter::Sms { phone, pin } => self.sms.send(phone, pin),
            }
        }
        requests.send(&self.shards);
        to_workers(&self.workers, replies);
    }
}

/// Worker reply channels: the senders (for routes) and what each worker receives.
pub(crate) type WorkerEnd = (ReplyRx, Arc<OwnedFd>);

pub(crate) fn worker_channels(n: usize) -> Result<(Vec<WorkerInbox>, Vec<WorkerEnd>), String> {
    let (mut inboxes, mut ends) = (vec![], vec![]);
    for _ in 0..n {
        let fd = Arc::new(gateway::wake::eventfd().map_err(|e| format!("eventfd: {e}"))?);
        let (tx, rx) = reply_channel(Arc::clone(&fd));
        inboxes.push(tx);
        ends.push((rx, fd));
    }
    Ok((inboxes, ends))
}

/// Binds the public listeners (the first picks the port; the rest share it) and starts
/// the gateway workers.
#[allow(clippy::too_many_arguments)] // the pieces every worker is made of, each once
pub(crate) fn spawn_workers(
    config: &Config,
    tls: &Arc<ServerConfig>,
    gateway_id: u8,
    ends: Vec<WorkerEnd>,
    link: &dyn Fn() -> Box<dyn RouterLink>,
    stop: &Arc<AtomicBool>,
    tuned: &Sender<()>,
    control: Option<&crate::control::Control>,
    handover: Handover,
) -> Result<
    (
        Workers,
        SocketAddr,
        Vec<StatsCell>,
        Vec<std::net::TcpListener>,
    ),
    String,
> {
    let epoch = handover.epoch;
    let mut listeners = handover.inherited;
    if listeners.is_empty() {
        listeners.push(
            gateway::wake::reuseport_listener(config.listen, 4096)
                .map_err(|e| format!("listen on {}: {e}", config.listen))?,
        );
    }
    let addr = listeners[0].local_addr().map_err(|e| e.to_string())?;
    while listeners.len() < ends.len() {
        listeners.push(
            gateway::wake::reuseport_listener(addr, 4096)
                .map_err(|e| format!("listen on {addr}: {e}"))?,
        );
    }
    // Copies to hand to a later process (an upgrade); the sockets stay shared.
    let copies = listeners
        .iter()
        .map(|l| l.try_clone().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let limits = Arc::new(config.limits());
    let sources: Arc<dyn gateway::link::SourceLimits> =
        Arc::new(SourceLimiter::new(&config.router));
    let mut threads = vec![];
    let mut cells = vec![];
    for (w, (listener, (rx, fd))) in listeners.into_iter().zip(ends).enumerate() {
        let cfg = WorkerConfig {
            gateway: gateway_id,
            epoch,
            worker: w as u8,
            conns_max: config.gateway.conns_per_worker,
            accepts_per_sec: config.gateway.accepts_per_sec,
            buffers: config.gateway.buffers,
            buffer_bytes: config.gateway.buffer_bytes,
            ..WorkerConfig::default()
        };
        let link = WorkerLink {
            to_router: link(),
            replies: rx,
            wake: fd,
        };
        let cell = StatsCell::default();
        cells.push(Arc::clone(&cell));
        let mut worker = Worker::new(
            cfg,
            Arc::clone(tls),
            Arc::clone(&limits),
            listener,
            link,
            Arc::clone(stop),
        )
        .publish_to(cell)
        .limit_sources(Arc::clone(&sources));
        if let Some(c) = control {
            if let Some(t) = &c.tls {
                worker = worker.follow_tls(t);
            }
            worker = worker.follow_knobs(&c.workers);
        }
        if let Some((flag, per_sec)) = &handover.drain {
            worker = worker.drain_on(Arc::clone(flag), *per_sec);
        }
        let (c, tuned) = (config.clone(), tuned.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("gateway-{w}"))
                .spawn(move || {
                    tune_thread(&c, w, true);
                    let _ = tuned.send(());
                    worker.run()
                })
                .map_err(|e| e.to_string())?,
        );
    }
    Ok((threads, addr, cells, copies))
}

/// The gateway process's limits per client address (`router.pin_requests_per_source_hour`,
/// `router.pin_guesses_per_source_hour`): one count for all its workers, so the limit
/// means what the configuration says however many shards and routers own the numbers.
struct SourceLimiter {
    started: std::time::Instant,
    requests: std::sync::Mutex<PerSource>,
    guesses: std::sync::Mutex<PerSource>,
}

/// A limiter per address and when it last forgot the addresses silent for an hour.
type PerSource = (router::registration::RateLimiter<std::net::IpAddr>, u64);

impl SourceLimiter {
    fn new(c: &router::RouterConfig) -> SourceLimiter {
        SourceLimiter {
            started: std::time::Instant::now(),
            requests: std::sync::Mutex::new((
                router::registration::RateLimiter::new(c.pin_requests_per_source_hour),
                0,
            )),
            guesses: std::sync::Mutex::new((
                router::registration::RateLimiter::new(c.pin_guesses_per_source_hour),
                0,
            )),
        }
    }

    fn take(&self, limiter: &std::sync::Mutex<PerSource>, source: std::net::IpAddr) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        let mut l = limiter.lock().unwrap_or_else(|p| p.into_inner());
        let (limits, swept) = &mut *l;
        if now >= *swept + 60_000 {
            limits.sweep(now);
            *swept = now;
        }
        limits.take(source, now)
    }
}

impl gateway::link::SourceLimits for SourceLimiter {
    fn pin_request(&self, source: std::net::IpAddr) -> bool {
        self.take(&self.requests, source)
    }

    fn pin_guess(&self, source: std::net::IpAddr) -> bool {
        self.take(&self.guesses, source)
    }
}

/// Listeners taken over from an earlier process (or systemd), the process's upgrade
/// epoch (in every connection id; see `wire::link::ConnId`), and the flag that
/// makes the workers drain (and the rate, per worker) when a later process takes them.
#[derive(Default)]
pub(crate) struct Handover {
    pub inherited: Vec<std::net::TcpListener>,
    pub epoch: u8,
    pub drain: Option<(Arc<AtomicBool>, u32)>,
}

/// Where a running process hands its listeners to its successor.
pub(crate) fn takeover_path(config: &Config) -> std::path::PathBuf {
    config.data_dir.join("takeover.sock")
}

/// A new process's listeners and epoch: from the running one (`--takeover`: over its
/// takeover socket, which also makes it start draining; the epoch after its), or from
/// systemd, or none (epoch 0).
pub(crate) fn inherit_listeners(
    config: &Config,
    takeover: bool,
) -> Result<(Vec<std::net::TcpListener>, u8), String> {
    if !takeover {
        let l = gateway::handover::systemd_listeners();
        if !l.is_empty() {
            tracing::info!("{} listener(s) from systemd socket activation", l.len());
        }
        return Ok((l, 0));
    }
    let path = takeover_path(config);
    let sock = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        format!(
            "takeover: {}: {e} (is a switchboard process running with this data directory?)",
            path.display()
        )
    })?;
    let (fds, epoch) = gateway::handover::recv_fds(&sock).map_err(|e| format!("takeover: {e}"))?;
    tracing::info!(
        "took over {} listener(s) from the running process; it drains its connections",
        fds.len()
    );
    Ok((
        fds.into_iter().map(std::net::TcpListener::from).collect(),
        (epoch + 1) & 3,
    ))
}

/// How many gateway workers: one per inherited listener (more would need listeners of
/// their own on the same port, which only SO_REUSEPORT sockets made that way allow), or
/// as configured.
pub(crate) fn worker_count(config: &Config, inherited: &[std::net::TcpListener]) -> usize {
    if inherited.is_empty() {
        return config.workers();
    }
    if inherited.len() != config.workers() {
        tracing::info!(
            "{} gateway worker(s), one per listener given (the configuration asks for {})",
            inherited.len(),
            config.workers()
        );
    }
    inherited.len()
}

/// Serves the takeover socket: the first process to connect gets copies of the
/// listeners and this process's epoch, then this one drains (`drain` set, workers
/// woken).
pub(crate) fn offer_takeover(
    path: std::path::PathBuf,
    listeners: Vec<std::net::TcpListener>,
    epoch: u8,
    drain: Arc<AtomicBool>,
    inboxes: Vec<WorkerInbox>,
    per_sec: u64,
) -> Result<(), String> {
    let _ = std::fs::remove_file(&path);
    let ul = std::os::unix::net::UnixListener::bind(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    std::thread::Builder::new()
        .name("takeover".into())
        .spawn(move || {
            use std::os::fd::AsRawFd;
            for c in ul.incoming() {
                let Ok(c) = c else { continue };
                let fds: Vec<_> = listeners.iter().map(|l| l.as_raw_fd()).collect();
                match gateway::handover::send_fds(&c, &fds, epoch) {
                    Ok(()) => {
                        tracing::info!(
                            "handed the listeners to a new process; draining connections at {per_sec}/s"
                        );
                        drain.store(true, Ordering::Release);
                        for w in &inboxes {
                            gateway::wake::wake(w.wake_fd());
                        }
                        let _ = std::fs::remove_file(&path);
                        return;
                    }
                    Err(e) => tracing::warn!("takeover: {e}"),
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The gateway workers' threads.
pub(crate) type Workers = Vec<JoinHandle<io::Result<WorkerStats>>>;

/// How often the process figures are logged (issue 7 brings the full activity reporter).
const STATS_EVERY: Duration = Duration::from_secs(60);

/// How long a process taking over waits for the old one to release the logs.
const TAKEOVER_WAIT: Duration = Duration::from_secs(600);

/// After a takeover: waits (at most [`TAKEOVER_WAIT`]) until the running process has
/// drained and released the admin API's address, so this one can serve it.
pub(crate) fn wait_for_admin_address(config: &Config, signalled: &AtomicBool) {
    if !config.admin.enabled {
        return;
    }
    let addr = config.admin.listen.unwrap_or_else(|| {
        crate::config::DEFAULT_LISTEN
            .parse()
            .expect("a valid default address")
    });
    let started = Instant::now();
    let mut said = false;
    while !signalled.load(Ordering::Acquire) && started.elapsed() < TAKEOVER_WAIT {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => return,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if !said {
                    tracing::info!(
                        "admin api: {addr} is the draining process's until it stops; waiting"
                    );
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => return, // start_operations says what is wrong
        }
    }
}

/// Runs until a signal (or a worker dies), logging stats now and then; each SIGHUP
/// reloads the configuration through `control`.
pub(crate) fn wait(
    signalled: &AtomicBool,
    workers: &Workers,
    control: &crate::control::Control,
    drain: Option<&AtomicBool>,
) {
    let mut last_stats = Instant::now();
    while !signalled.load(Ordering::Acquire) {
        if drain.is_some_and(|d| d.load(Ordering::Acquire)) {
            if workers.iter().all(|t| t.is_finished()) {
                tracing::info!("drained: every connection was asked to reconnect; stopping");
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        if take_hup() {
            let _ = crate::control::reload_logged(control);
        }
        if last_stats.elapsed() >= STATS_EVERY {
            last_stats = Instant::now();
            tracing::info!("stats: {}", process_stats());
        }
        if workers.iter().any(|t| t.is_finished()) {
            tracing::warn!("a gateway worker stopped unexpectedly; shutting down");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Closes every client connection with a reason and joins the workers.
pub(crate) fn stop_workers(stop: &AtomicBool, inboxes: &[WorkerInbox], workers: Workers) {
    stop.store(true, Ordering::Release);
    for w in inboxes {
        gateway::wake::wake(w.wake_fd());
    }
    for t in workers {
        match t.join() {
            Ok(Ok(_stats)) => {}
            Ok(Err(e)) => tracing::warn!("gateway worker: {e}"),
            Err(_) => tracing::warn!("a gateway worker panicked"),
        }
    }
}

pub fn serve(config: Config, source: crate::control::ConfigSource) -> Result<(), Error> {
    let takeover = source.takeover;
    let signalled = start(&config)?;
    // First the listeners (a takeover makes the old process start draining and, once
    // done, release the logs this one opens next).
    let (inherited, epoch) = inherit_listeners(&config, takeover)?;
    let shards = config.shards();
    let workers = worker_count(&config, &inherited);
    let tls = crate::control::load_tls(&config)?;
    let control = crate::control::Control::new(
        crate::control::Role::Serve,
        &config,
        source,
        Some(Arc::clone(&tls)),
    );
    let map = PartitionMap::even(config.router.partitions, shards as u16);
    let mut opened = vec![];
    let mut reports = vec![];
    for id in 0..shards as u16 {
        let dir = config.data_dir.join(format!("log-{id}"));
        let waited = Instant::now();
        let mut shard = loop {
            match open_shard(&config, id, map.clone(), &dir) {
                // The process handing over still holds the log until it has drained.
                Err(e) if takeover && e.is_log_locked() && waited.elapsed() < TAKEOVER_WAIT => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        let cell = router::ReportCell::default();
        shard.publish_to(Arc::clone(&cell));
        let mut knob = control.flush_interval_us.follow();
        shard.follow_flush_interval(Box::new(move || knob.refresh().then_some(knob.value)));
        reports.push(cell);
        opened.push(shard);
    }
    let (inboxes, ends) = worker_channels(workers)?;
    let inline = workers == 1 && shards == 1 && config.process.inline_shard;
    let (mut shard_txs, mut shard_rxs) = (vec![], vec![]);
    for _ in 0..if inline { 0 } else { shards } {
        let (tx, rx) = driver::inbox(config.router.inbox_requests_max);
        shard_txs.push(tx);
        shard_rxs.push(rx);
    }
    let sms = Arc::new(Sms::start(&config.sms, &config.data_dir)?);
    let routes = Arc::new(Routes {
        map,
        shards: shard_txs,
        workers: inboxes.clone(),
        sms,
    });

    // Every thread reports once its scheduling and pinning are set: "listening" means ready.
    let (tuned_tx, tuned_rx) = mpsc::channel::<()>();
    let mut shard_threads = vec![];
    let inline_shard = std::sync::Mutex::new(if inline { opened.pop() } else { None });
    for (shard, rx) in opened.into_iter().zip(shard_rxs) {
        let cpu = workers + shard.id() as usize;
        shard_threads.push(spawn_shard(
            &config,
            shard,
            rx,
            Arc::clone(&routes),
            cpu,
            tuned_tx.clone(),
        )?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tee_stop = Arc::new(AtomicBool::new(false));
    // Gateway id 0 in the all-in-one process.
    let tee = crate::tee::start_configured(&config, &control, &tee_stop, epoch as u16)?;
    let r = Arc::clone(&routes);
    let drain = Arc::new(AtomicBool::new(false));
    let drain_total = config.upgrade.drain_per_sec;
    let per_worker = drain_total.div_ceil(workers as u64).min(u32::MAX as u64) as u32;
    let (worker_threads, addr, worker_cells, copies) = spawn_workers(
        &config,
        &tls,
        0,
        ends,
        &|| -> Box<dyn RouterLink> {
            let link: Box<dyn RouterLink> = match inline_shard.lock().expect("not poisoned").take()
            {
                Some(shard) => Box::new(InlineLink {
                    shard: Some(shard),
                    routes: Arc::clone(&r),
                    local: Vec::new(),
                    out: Vec::new(),
                }),
                None => Box::new(InProcLink {
                    routes: Arc::clone(&r),
                    batches: ShardBatches::default(),
                }),
            };
            crate::tee::wrap(&tee, link)
        },
        &stop,
        &tuned_tx,
        Some(&control),
        Handover {
            inherited,
            epoch,
            drain: Some((Arc::clone(&drain), per_worker)),
        },
    )?;
    offer_takeover(
        takeover_path(&config),
        copies,
        epoch,
        Arc::clone(&drain),
        inboxes.clone(),
        drain_total,
    )?;
    drop(tuned_tx);
    ready(&config, tuned_rx, workers + shard_threads.len())?;
    let _operations = start_operations(
        &config,
        crate::admin::Sources::new(
            worker_cells,
            reports,
            &control,
            crate::tee::figures(&tee),
            Arc::new(ServeQueues {
                routes: Arc::clone(&routes),
                tee: tee.clone(),
            }),
        ),
    )?;
    tracing::info!(
        "listening on {addr} ({workers} gateway workers, {shards} router shards{}, data in {})",
        if inline { " in the same thread" } else { "" },
        config.data_dir.display()
    );
    let _ = std::io::stdout().flush();

    wait(&signalled, &worker_threads, &control, Some(&drain));
    // The admin port goes first: a process taking over binds it once the logs are free.
    drop(_operations);
    tracing::info!("stopping: closing connections, flushing logs");
    stop_workers(&stop, &inboxes, worker_threads);
    tee_stop.store(true, Ordering::Release);
    for tx in &routes.shards {
        let _ = tx.send(ShardMsg::Stop);
    }
    for t in shard_threads {
        let _ = t.join();
    }
    tracing::info!("stopped");
    Ok(())
}
