//! The split deployment: `switchboard router` (one shard, its log, listening for links on
//! its private address) and `switchboard gateway` (the TLS workers, with a link to every
//! router). Same gateway workers and shards as `serve`; the TCP links replace channels.
//!
//! Faults: a gateway reconnects to a router with backoff; while a link is down its
//! requests wait in a bounded queue (and past it are refused with `TryAgain`, so clients
//! resend); when the link is back the gateway re-attaches its logged-in connections.
//! A router drops a gateway's sessions when its link goes; the router's log is its
//! memory, so nothing acknowledged is lost.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;

use crossbeam_channel::TrySendError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::link::RouterLink;
use router::PartitionMap;
use wire::link::{ConnId, FromRouter, ToClient, ToRouter};
use wire::linkcodec::{LinkMsg, PeerKind};
use wire::{ErrorCode, Phone};

use crate::cluster::{Cluster, RouterNode};
use crate::config::Config;
use crate::control::{ConfigSource, Control, Role};
use crate::link::{link_channel, Link, LinkReceiver, LinkSender, LinkTls};
use router::driver::{self, Dispatch, ShardMsg, ShardTx};

use crate::serve::{self, WorkerInbox};
use crate::sms::Sms;

// ---------------------------------------------------------------------------------
// Router

struct RouterRoutes {
    me: u16,
    map: PartitionMap,
    /// The link writer of each connected gateway process, by its connections'
    /// `ConnId::origin` (gateway id and upgrade epoch: while a new process takes over,
    /// old and new each have theirs), with the link's token (a gateway process that
    /// reconnects replaces its older link).
    gateways: Mutex<HashMap<u16, (u64, LinkSender)>>,
    /// Outbound links to the other routers (receipts for their users).
    peers: HashMap<u16, LinkSender>,
    sms: Sms,
    dropped: AtomicU64,
    /// The `link_batch_bytes` knob, read by every link thread.
    batch: Arc<AtomicUsize>,
}

impl Dispatch for RouterRoutes {
    fn dispatch(&self, out: &mut Vec<FromRouter>) {
        for o in out.drain(..) {
            let sent = match o {
                FromRouter::ToClient { conn, msg } => {
                    let tx = self
                        .gateways
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&conn.origin())
                        .map(|(_, tx)| tx.clone());
                    // Blocks (without the lock) when the gateway's link is full: the shard
                    // slows down with it, and a reply is never dropped while its gateway
                    // is connected. No cycle: a gateway never waits on its router while
                    // reading replies. Gateway gone: the message stays in the log.
                    tx.is_some_and(|tx| tx.send(LinkMsg::Resp { conn, msg }).is_ok())
                }
                FromRouter::ToRouter(req) => {
                    let owner = self.map.shard_of(req.route_key());
                    debug_assert_ne!(owner, self.me);
                    // Router to router never blocks (two routers must not wait on each
                    // other): receipts past a full queue are dropped and counted.
                    self.peers
                        .get(&owner)
                        .is_some_and(|tx| tx.try_send(LinkMsg::Req(req)).is_ok())
                }
                FromRouter::Sms { phone, pin } => {
                    self.sms.send(phone, pin);
                    true
                }
            };
            if !sent {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A gateway process by its origin: `gateway 1`, or `gateway 1 (epoch 2)` for a process
/// that took over from another.
fn origin_name(origin: u16) -> String {
    let (g, epoch) = (
        ConnId::gateway_of_origin(origin),
        ConnId::epoch_of_origin(origin),
    );
    if epoch == 0 {
        format!("gateway {g}")
    } else {
        format!("gateway {g} (epoch {epoch})")
    }
}

fn peer_name(kind: PeerKind, id: u16) -> String {
    match kind {
        PeerKind::Gateway => origin_name(id),
        _ => format!("{kind:?} {id}").to_lowercase(),
    }
}

/// A router's queues: its shard's inbox, its links to gateways and to other routers.
struct RouterQueues {
    id: u16,
    shard: ShardTx,
    routes: Arc<RouterRoutes>,
}

impl crate::admin::Queues for RouterQueues {
    fn shard_inboxes(&self) -> Vec<(u16, usize)> {
        vec![(self.id, self.shard.queued())]
    }

    fn links(&self) -> Vec<(String, usize)> {
        let gateways = self
            .routes
            .gateways
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut q: Vec<(String, usize)> = (gateways.iter())
            .map(|(g, (_, tx))| (origin_name(*g), tx.queued()))
            .chain((self.routes.peers.iter()).map(|(r, tx)| (format!("router {r}"), tx.queued())))
            .collect();
        q.sort();
        q
    }
}

/// Serves one accepted link until it ends.
fn serve_link(
    sock: TcpStream,
    cluster: Arc<Cluster>,
    tls: LinkTls,
    shard: ShardTx,
    routes: Arc<RouterRoutes>,
) {
    static TOKENS: AtomicU64 = AtomicU64::new(1);
    let peer_addr = sock.peer_addr().ok();
    let (link, kind, id) = match Link::accept(sock, &tls, &cluster.secret) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!("link from {peer_addr:?} refused: {e}");
            return;
        }
    };
    // A gateway announces its origin (gateway id and upgrade epoch).
    let gateway = (kind == PeerKind::Gateway).then_some(id);
    let Ok((tx, rx)) = link_channel(cluster.link_queue) else {
        return;
    };
    let token = TOKENS.fetch_add(1, Ordering::Relaxed);
    if let Some(g) = gateway {
        routes
            .gateways
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(g, (token, tx.clone()));
    }
    let name = peer_name(kind, id);
    tracing::info!("link from {name} ({peer_addr:?}) authenticated");
    let never = AtomicBool::new(false);
    // The shard's inbox bounds what is read from the link: at its bound the link stops
    // reading (TCP pushes back to the gateway, whose workers stop reading their
    // clients) and goes on writing replies.
    let room = shard.clone();
    let ended = link.run_paced(
        &rx,
        &routes.batch,
        &never,
        move || room.room() > 0,
        |m| {
            let msg = match (m, gateway) {
                (LinkMsg::Req(r), _) => ShardMsg::Req(r),
                (LinkMsg::Attach { conn, user }, Some(_)) => ShardMsg::Attach(conn, user),
                (other, _) => {
                    tracing::warn!("link from {name}: unexpected {other:?}; closing");
                    return false;
                }
            };
            shard.send(msg)
        },
    );
    if let Err(e) = ended {
        tracing::warn!("link from {name}: {e}");
    }
    drop(tx);
    if let Some(g) = gateway {
        let mut gws = routes.gateways.lock().unwrap_or_else(|p| p.into_inner());
        // Only if a newer link of the same gateway has not replaced this one.
        if gws.get(&g).is_some_and(|(t, _)| *t == token) {
            gws.remove(&g);
            drop(gws);
            let _ = shard.send(ShardMsg::GatewayGone(g));
        }
        tracing::info!("link from {name} closed");
    }
}

/// What happens on a dialed link.
pub(crate) enum LinkEvent<'a> {
    /// A frame from the router.
    Frame(LinkMsg),
    /// The link that was up went down; its queue (what was not sent yet) is there to
    /// take. Dialing starts again after this.
    Down(&'a LinkReceiver),
}

/// Dials `node` for ever (with backoff) and runs the link: `rx`'s frames go out,
/// received frames and the link going down go to `on_event`. `on_connect` queues frames that must go first
/// (session re-attachment). `up` says whether the link is up.
#[allow(clippy::too_many_arguments)] // one call per link kind; the pieces are all distinct
pub(crate) fn dial(
    node: RouterNode,
    source: Option<IpAddr>,
    interface: Option<String>,
    secret: Vec<u8>,
    tls: LinkTls,
    peer: PeerKind,
    id: u16,
    rx: LinkReceiver,
    batch: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    up: Arc<AtomicBool>,
    on_connect: impl Fn(&mut Link) -> io::Result<()>,
    mut on_event: impl FnMut(LinkEvent<'_>),
) {
    let mut backoff = Duration::from_millis(50);
    while !stop.load(Ordering::Acquire) {
        let connected = (|| -> io::Result<Link> {
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(node.address),
                socket2::Type::STREAM,
                None,
            )?;
            if let Some(ifc) = &interface {
                sock.bind_device(Some(ifc.as_bytes()))?;
            }
            if let Some(src) = source {
                sock.bind(&SocketAddr::new(src, 0).into())?;
            }
            sock.connect_timeout(&node.address.into(), Duration::from_secs(2))?;
            let mut link = Link::connect(sock.into(), &tls, &secret, peer, id)?;
            on_connect(&mut link)?;
            Ok(link)
        })();
        let link = match connected {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(
                    "link to router {} ({}): {e}; retrying in {backoff:?}",
                    node.id,
                    node.address
                );
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        up.store(true, Ordering::Release);
        backoff = Duration::from_millis(50);
        tracing::info!("link to router {} ({}) up", node.id, node.address);
        let ended = link.run(&rx, &batch, &stop, |m| {
            on_event(LinkEvent::Frame(m));
            true
        });
        up.store(false, Ordering::Release);
        if stop.load(Ordering::Acquire) {
            return;
        }
        on_event(LinkEvent::Down(&rx));
        tracing::warn!(
            "link to router {} down ({}); reconnecting",
            node.id,
            ended.err().map_or("closed".to_string(), |e| e.to_string())
        );
    }
}

/// How this node serves and dials links.
fn link_tls_server(config: &Config, cluster: &Cluster) -> Result<LinkTls, String> {
    if !cluster.link_tls {
        return Ok(LinkTls::Off);
    }
    Ok(LinkTls::Server(serve::load_tls(config)?))
}

pub(crate) fn link_tls_to(cluster: &Cluster, node: &RouterNode) -> Result<LinkTls, String> {
    match (&node.fingerprint, cluster.link_tls) {
        (Some(fp), true) => LinkTls::pinned(fp),
        _ => Ok(LinkTls::Off),
    }
}

pub fn router(config: Config, id: u16, source: ConfigSource) -> Result<(), String> {
    let signalled = serve::start(&config)?;
    let control = Control::new(Role::Router, &config, source, None);
    let cluster = Arc::new(config.cluster.validate(config.router.partitions)?);
    let me = cluster
        .routers
        .iter()
        .find(|r| r.id == id)
        .ok_or(format!("router {id} is not in the cluster map"))?
        .clone();
    let tls = link_tls_server(&config, &cluster)?;
    let mut shard = serve::open_shard(
        &config,
        id,
        cluster.map.clone(),
        &config.data_dir.join(format!("router-{id}")),
    )?;
    let report = router::ReportCell::default();
    shard.publish_to(Arc::clone(&report));
    let mut knob = control.flush_interval_us.follow();
    shard.follow_flush_interval(Box::new(move || knob.refresh().then_some(knob.value)));
    let (tx, rx) = driver::inbox(config.router.inbox_requests_max);
    let stop = Arc::new(AtomicBool::new(false));
    let mut peers = HashMap::new();
    for node in cluster.routers.iter().filter(|r| r.id != id).cloned() {
        let (qtx, qrx) = link_channel(cluster.link_queue).map_err(|e| e.to_string())?;
        peers.insert(node.id, qtx);
        let (secret, batch, stop) = (
            cluster.secret.clone(),
            Arc::clone(&control.link_batch_bytes),
            Arc::clone(&stop),
        );
        let peer_tls = link_tls_to(&cluster, &node)?;
        std::thread::spawn(move || {
            let up = Arc::new(AtomicBool::new(false));
            dial(
                node,
                None,
                None,
                secret,
                peer_tls,
                PeerKind::Router,
                id,
                qrx,
                batch,
                stop,
                up,
                |_| Ok(()),
                |_| {},
            )
        });
    }
    let routes = Arc::new(RouterRoutes {
        me: id,
        map: cluster.map.clone(),
        gateways: Mutex::new(HashMap::new()),
        peers,
        sms: Sms::start(&config.sms, &config.data_dir)?,
        dropped: AtomicU64::new(0),
        batch: Arc::clone(&control.link_batch_bytes),
    });
    let listener = TcpListener::bind(me.address)
        .map_err(|e| format!("router {id}: listen on {}: {e}", me.address))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    {
        let (cluster, tx, routes) = (Arc::clone(&cluster), tx.clone(), Arc::clone(&routes));
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let (c, t, r, tls) = (
                    Arc::clone(&cluster),
                    tx.clone(),
                    Arc::clone(&routes),
                    tls.clone(),
                );
                std::thread::spawn(move || serve_link(s, c, tls, t, r));
            }
        });
    }
    let (tuned_tx, tuned_rx) = mpsc::channel();
    let shard_thread = serve::spawn_shard(&config, shard, rx, Arc::clone(&routes), 0, tuned_tx)?;
    serve::ready(&config, tuned_rx, 1)?;
    let _operations = serve::start_operations(
        &config,
        crate::admin::Sources {
            workers: vec![],
            shards: vec![report],
            started: std::time::Instant::now(),
            control: Some(Arc::clone(&control)),
            activity: None,
            tee: None,
            queues: Some(Arc::new(RouterQueues {
                id,
                shard: tx.clone(),
                routes: Arc::clone(&routes),
            })),
        },
    )?;
    tracing::info!(
        "router {id} listening for links on {addr}{} (data in {})",
        if cluster.link_tls { " with TLS" } else { "" },
        config.data_dir.display()
    );
    let _ = io::stdout().flush();
    while !signalled.load(Ordering::Acquire) {
        if serve::take_hup() {
            let _ = serve::reload_logged(&control);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!("stopping: flushing the log");
    stop.store(true, Ordering::Release);
    let _ = tx.send(ShardMsg::Stop);
    let _ = shard_thread.join();
    tracing::info!(
        "stopped ({} frames dropped while a peer was away)",
        routes.dropped.load(Ordering::Relaxed)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------
// Gateway

struct GatewayRoutes {
    map: PartitionMap,
    queues: HashMap<u16, LinkSender>,
    /// Whether each router's link is up (a full queue then means "slow": backpressure).
    up: HashMap<u16, Arc<AtomicBool>>,
    /// Logged-in connections per router, re-attached when its link comes back.
    sessions: HashMap<u16, Arc<Mutex<HashMap<ConnId, Phone>>>>,
    /// Requests queued for or sent to each router and not answered yet: when its link
    /// goes down they are answered here, so every request gets exactly one answer.
    unanswered: HashMap<u16, Arc<Mutex<Unanswered>>>,
    workers: Vec<WorkerInbox>,
}

/// Requests on their way to one router that expect an answer: sends by (connection,
/// recipient, message id), registrations and logins by connection (how many, and
/// whether one is a login). Counts, since a client may resend before the answer.
#[derive(Default)]
struct Unanswered {
    sends: HashMap<(ConnId, u64, u64), u32>,
    asks: HashMap<ConnId, (u32, bool)>,
}

/// What a request expecting an answer is known by in [`Unanswered`].
#[derive(Clone, Copy)]
enum Expect {
    Send(ConnId, u64, u64),
    /// A registration step, or a login (`true`).
    Ask(ConnId, bool),
}

impl Expect {
    fn of(req: &ToRouter) -> Option<Expect> {
        match *req {
            ToRouter::Send {
                conn, to, msg_id, ..
            } => Some(Expect::Send(conn, to.get(), msg_id)),
            ToRouter::Register { conn, .. } | ToRouter::Verify { conn, .. } => {
                Some(Expect::Ask(conn, false))
            }
            ToRouter::Login { conn, .. } => Some(Expect::Ask(conn, true)),
            _ => None,
        }
    }
}

impl Unanswered {
    fn sent(&mut self, e: Expect) {
        match e {
            Expect::Send(conn, to, msg_id) => {
                *self.sends.entry((conn, to, msg_id)).or_default() += 1
            }
            Expect::Ask(conn, login) => {
                let a = self.asks.entry(conn).or_default();
                a.0 += 1;
                a.1 |= login;
            }
        }
    }

    fn answered(&mut self, conn: ConnId, msg: &ToClient) {
        match *msg {
            ToClient::ServerAck { to, msg_id } | ToClient::Refused { to, msg_id, .. } => {
                let key = (conn, to.get(), msg_id);
                if let Some(n) = self.sends.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        self.sends.remove(&key);
                    }
                }
            }
            ToClient::RegisterPending { .. }
            | ToClient::Registered { .. }
            | ToClient::LoggedIn { .. }
            | ToClient::Error { .. }
            | ToClient::Close { .. } => {
                if let Some(a) = self.asks.get_mut(&conn) {
                    a.0 -= 1;
                    if a.0 == 0 {
                        self.asks.remove(&conn);
                    }
                }
            }
            ToClient::Deliver { .. } | ToClient::Receipt { .. } => {}
        }
    }

    /// The answers for everything still unanswered: the link went down, so the router
    /// may or may not have acted on it; the client tries again (a resent message is
    /// stored once: the router drops duplicates by message id).
    fn refuse_all(&mut self) -> Vec<(ConnId, ToClient)> {
        let mut out = vec![];
        for ((conn, to, msg_id), n) in self.sends.drain() {
            let to = Phone::new(to).expect("a phone");
            for _ in 0..n {
                out.push((
                    conn,
                    ToClient::Refused {
                        to,
                        msg_id,
                        code: ErrorCode::TryAgain,
                    },
                ));
            }
        }
        for (conn, (n, login)) in self.asks.drain() {
            if login {
                out.push((conn, lost_login()));
                continue;
            }
            for _ in 0..n {
                out.push((
                    conn,
                    ToClient::Error {
                        code: ErrorCode::TryAgain,
                        reason: "the router for this number went away; try again".into(),
                    },
                ));
            }
        }
        out
    }
}

/// The answer to a login its router could not take: the connection closes, and the
/// client connects and logs in again.
fn lost_login() -> ToClient {
    ToClient::Close {
        code: ErrorCode::TryAgain,
        reason: "the router for this number is unavailable; log in again".into(),
    }
}

/// A gateway's queues: its links to the routers, and the tee's to the shadow.
struct GatewayQueues {
    routes: Arc<GatewayRoutes>,
    tee: Option<Arc<crate::tee::Tee>>,
}

impl crate::admin::Queues for GatewayQueues {
    fn shard_inboxes(&self) -> Vec<(u16, usize)> {
        vec![]
    }

    fn links(&self) -> Vec<(String, usize)> {
        let mut q: Vec<(String, usize)> = (self.routes.queues.iter())
            .map(|(r, tx)| (format!("router {r}"), tx.queued()))
            .collect();
        q.sort();
        q.extend(self.tee.as_ref().map_or(vec![], |t| t.queued()));
        q
    }
}

/// A gateway worker's side of the TCP links: each request goes to its router's queue
/// (the link thread batches what it finds there per write).
struct LinkQueues(Arc<GatewayRoutes>);

impl RouterLink for LinkQueues {
    fn send(&mut self, req: ToRouter) -> Result<(), ToRouter> {
        self.0.send(req)
    }
}

impl GatewayRoutes {
    /// Queues a request for its router's link. A full queue with the link up hands the
    /// request back (the worker stops reading that client: backpressure); with the link
    /// down the client is told to try again.
    fn send(&self, req: ToRouter) -> Result<(), ToRouter> {
        let owner = self.map.shard_of(req.route_key());
        if let ToRouter::Closed { conn, .. } = req {
            if let Some(s) = self.sessions.get(&owner) {
                s.lock().unwrap_or_else(|p| p.into_inner()).remove(&conn);
            }
        }
        let Some(q) = self.queues.get(&owner) else {
            return Ok(());
        };
        // Queued and recorded under one lock: the link going down takes the queue and
        // the record together (`LinkEvent::Down`).
        let mut unanswered = self.unanswered[&owner]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let expect = Expect::of(&req);
        match q.try_send(LinkMsg::Req(req)) {
            Ok(()) => {
                if let Some(e) = expect {
                    unanswered.sent(e);
                }
                Ok(())
            }
            Err(TrySendError::Full(LinkMsg::Req(req)))
                if self
                    .up
                    .get(&owner)
                    .is_some_and(|u| u.load(Ordering::Acquire)) =>
            {
                Err(req)
            }
            Err(
                TrySendError::Full(LinkMsg::Req(req))
                | TrySendError::Disconnected(LinkMsg::Req(req)),
            ) => {
                drop(unanswered);
                self.refuse(req);
                Ok(())
            }
            Err(_) => Ok(()),
        }
    }

    /// The router's link is down and its queue full: tell the client to try again.
    fn refuse(&self, req: ToRouter) {
        let reply = match req {
            ToRouter::Send {
                conn, to, msg_id, ..
            } => Some((
                conn,
                ToClient::Refused {
                    to,
                    msg_id,
                    code: ErrorCode::TryAgain,
                },
            )),
            ToRouter::Login { conn, .. } => Some((conn, lost_login())),
            ToRouter::Register { conn, .. } | ToRouter::Verify { conn, .. } => Some((
                conn,
                ToClient::Error {
                    code: ErrorCode::TryAgain,
                    reason: "the router for this number is unavailable; try again".into(),
                },
            )),
            _ => None, // acks and reads are repeated by redelivery
        };
        if let Some(r) = reply {
            serve::to_workers(&self.workers, [r]);
        }
    }
}

pub fn gateway(config: Config, id: u8, source: ConfigSource) -> Result<(), String> {
    let signalled = serve::start(&config)?;
    // First the listeners: a takeover makes the running gateway start draining.
    let takeover = source.takeover;
    let (inherited, epoch) = serve::inherit_listeners(&config, takeover)?;
    // What this process's connections carry, and what its links announce.
    let origin = ConnId::origin_of(id, epoch);
    let cluster = config.cluster.validate(config.router.partitions)?;
    let me = cluster
        .gateways
        .iter()
        .find(|g| g.id == id)
        .ok_or(format!("gateway {id} is not in the cluster map"))?
        .clone();
    let tls = serve::load_tls(&config)?;
    let control = Control::new(Role::Gateway, &config, source, Some(Arc::clone(&tls)));
    let workers = serve::worker_count(&config, &inherited);
    let (inboxes, ends) = serve::worker_channels(workers)?;
    let stop = Arc::new(AtomicBool::new(false));
    let link_stop = Arc::new(AtomicBool::new(false));
    let (mut queues, mut sessions, mut ups) = (HashMap::new(), HashMap::new(), HashMap::new());
    let mut unanswered = HashMap::new();
    for node in cluster.routers.iter().cloned() {
        let (qtx, qrx) = link_channel(cluster.link_queue).map_err(|e| e.to_string())?;
        let mine: Arc<Mutex<HashMap<ConnId, Phone>>> = Arc::default();
        let waiting: Arc<Mutex<Unanswered>> = Arc::default();
        unanswered.insert(node.id, Arc::clone(&waiting));
        let link_up = Arc::new(AtomicBool::new(false));
        queues.insert(node.id, qtx);
        sessions.insert(node.id, Arc::clone(&mine));
        ups.insert(node.id, Arc::clone(&link_up));
        let (secret, batch, stop, inboxes) = (
            cluster.secret.clone(),
            Arc::clone(&control.link_batch_bytes),
            Arc::clone(&link_stop),
            inboxes.clone(),
        );
        let (source, interface, node_tls) = (
            me.source,
            me.interface.clone(),
            link_tls_to(&cluster, &node)?,
        );
        let attach = Arc::clone(&mine);
        std::thread::Builder::new()
            .name(format!("link-router-{}", node.id))
            .spawn(move || {
                dial(
                    node,
                    source,
                    interface,
                    secret,
                    node_tls,
                    PeerKind::Gateway,
                    origin,
                    qrx,
                    batch,
                    stop,
                    link_up,
                    move |link| {
                        // Sessions re-register before anything new goes out.
                        for (conn, user) in attach.lock().unwrap_or_else(|p| p.into_inner()).iter()
                        {
                            link.queue(&LinkMsg::Attach {
                                conn: *conn,
                                user: *user,
                            })?;
                        }
                        Ok(())
                    },
                    move |event| {
                        let m = match event {
                            LinkEvent::Frame(m) => m,
                            LinkEvent::Down(queue) => {
                                let mut w = waiting.lock().unwrap_or_else(|p| p.into_inner());
                                let dropped = queue.take_all().len();
                                let answers = w.refuse_all();
                                drop(w);
                                if !answers.is_empty() || dropped > 0 {
                                    tracing::warn!(
                                        "link to router down: {} requests answered TryAgain \
                                         ({dropped} were still queued)",
                                        answers.len()
                                    );
                                }
                                serve::to_workers(&inboxes, answers);
                                return;
                            }
                        };
                        if let LinkMsg::Resp { conn, msg } = m {
                            waiting
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .answered(conn, &msg);
                            match &msg {
                                ToClient::LoggedIn { user, .. } => {
                                    mine.lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .insert(conn, *user);
                                }
                                ToClient::Close { .. } => {
                                    mine.lock().unwrap_or_else(|p| p.into_inner()).remove(&conn);
                                }
                                _ => {}
                            }
                            serve::to_workers(&inboxes, [(conn, msg)]);
                        }
                    },
                )
            })
            .map_err(|e| e.to_string())?;
    }
    let routes = Arc::new(GatewayRoutes {
        map: cluster.map.clone(),
        queues,
        up: ups,
        sessions,
        unanswered,
        workers: inboxes.clone(),
    });
    let tee = crate::tee::start_configured(&config, &control, &link_stop, origin)?;
    let (tuned_tx, tuned_rx) = mpsc::channel();
    let r = Arc::clone(&routes);
    let drain = Arc::new(AtomicBool::new(false));
    let drain_total = config.upgrade.drain_per_sec;
    let per_worker = drain_total.div_ceil(workers as u64).min(u32::MAX as u64) as u32;
    let (worker_threads, addr, worker_cells, copies) = serve::spawn_workers(
        &config,
        &tls,
        id,
        ends,
        &|| crate::tee::wrap(&tee, Box::new(LinkQueues(Arc::clone(&r)))),
        &stop,
        &tuned_tx,
        Some(&control),
        serve::Handover {
            inherited,
            epoch,
            drain: Some((Arc::clone(&drain), per_worker)),
        },
    )?;
    serve::offer_takeover(
        serve::takeover_path(&config),
        copies,
        epoch,
        Arc::clone(&drain),
        inboxes.clone(),
        drain_total,
    )?;
    drop(tuned_tx);
    serve::ready(&config, tuned_rx, workers)?;
    let listening = || {
        tracing::info!(
            "gateway {id} listening on {addr} ({workers} workers, {} routers)",
            cluster.routers.len()
        );
        let _ = io::stdout().flush();
    };
    if takeover {
        // The admin address is the running process's until it has drained (the workers
        // serve meanwhile).
        listening();
        serve::wait_for_admin_address(&config, &signalled);
    }
    let operations = serve::start_operations(
        &config,
        crate::admin::Sources {
            workers: worker_cells,
            shards: vec![],
            started: std::time::Instant::now(),
            control: Some(Arc::clone(&control)),
            activity: None,
            tee: tee.clone(),
            queues: Some(Arc::new(GatewayQueues {
                routes: Arc::clone(&routes),
                tee: tee.clone(),
            })),
        },
    )?;
    if !takeover {
        listening();
    }
    serve::wait(
        &signalled,
        &worker_threads,
        &|| {
            let _ = serve::reload_logged(&control);
        },
        Some(&drain),
    );
    // The admin address goes first: a process taking over binds it next.
    drop(operations);
    tracing::info!("stopping: closing connections");
    serve::stop_workers(&stop, &inboxes, worker_threads);
    // Let the last requests (Closed notices) go out before the links stop.
    std::thread::sleep(Duration::from_millis(200));
    link_stop.store(true, Ordering::Release);
    tracing::info!("stopped");
    Ok(())
}
