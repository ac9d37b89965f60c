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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use router::PartitionMap;
use wire::link::{ConnId, FromRouter, ToClient, ToRouter};
use wire::linkcodec::{LinkMsg, PeerKind};
use wire::{ErrorCode, Phone};

use crate::cluster::{Cluster, RouterNode};
use crate::config::Config;
use crate::link::{accept_auth, connect_auth, LinkReader};
use crate::serve::{self, Dispatch, ShardMsg, WorkerInbox};
use crate::sms::Sms;

/// Writes queued frames in batches: everything waiting goes out in one write, up to
/// `batch` bytes (so a batch ends when it fills or when the queue is momentarily empty).
fn write_batches(
    stream: &mut TcpStream,
    rx: &Receiver<LinkMsg>,
    batch: usize,
    first: LinkMsg,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(batch);
    first.encode(&mut buf);
    while buf.len() < batch {
        match rx.try_recv() {
            Ok(m) => m.encode(&mut buf),
            Err(_) => break,
        }
    }
    stream.write_all(&buf)
}

// ---------------------------------------------------------------------------------
// Router

struct RouterRoutes {
    me: u16,
    map: PartitionMap,
    /// The link writer of each connected gateway, by gateway id, with the link's token
    /// (a gateway that reconnects replaces its older link).
    gateways: Mutex<HashMap<u8, (u64, SyncSender<LinkMsg>)>>,
    /// Outbound links to the other routers (receipts for their users).
    peers: HashMap<u16, SyncSender<LinkMsg>>,
    sms: Sms,
    dropped: AtomicU64,
}

impl Dispatch for RouterRoutes {
    fn dispatch(&self, out: &mut Vec<FromRouter>) {
        for o in out.drain(..) {
            let sent = match o {
                FromRouter::ToClient { conn, msg } => {
                    let gw = (conn.0 >> 56) as u8;
                    let tx = self
                        .gateways
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&gw)
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

/// Serves one accepted link until it ends.
fn serve_link(
    mut stream: TcpStream,
    cluster: Arc<Cluster>,
    shard: Sender<ShardMsg>,
    routes: Arc<RouterRoutes>,
) {
    let peer_addr = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let mut reader = LinkReader::new(stream.try_clone().expect("clone"));
    let (kind, id) = match accept_auth(&mut stream, &mut reader, &cluster.secret) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("switchboard: link from {peer_addr:?} refused: {e}");
            return;
        }
    };
    static TOKENS: AtomicU64 = AtomicU64::new(1);
    let gateway = (kind == PeerKind::Gateway).then_some(id as u8);
    let mine = gateway.map(|g| {
        let (tx, rx) = mpsc::sync_channel::<LinkMsg>(cluster.link_queue);
        let token = TOKENS.fetch_add(1, Ordering::Relaxed);
        routes
            .gateways
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(g, (token, tx));
        let mut w = stream.try_clone().expect("clone");
        let batch = cluster.link_batch_bytes;
        std::thread::spawn(move || {
            while let Ok(first) = rx.recv() {
                if write_batches(&mut w, &rx, batch, first).is_err() {
                    break;
                }
            }
            let _ = w.shutdown(std::net::Shutdown::Both);
        });
        token
    });
    println!("switchboard: link from {kind:?} {id} ({peer_addr:?}) authenticated");
    loop {
        let m = match reader.next_msg() {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                eprintln!("switchboard: link from {kind:?} {id}: {e}");
                break;
            }
        };
        let msg = match (m, gateway) {
            (LinkMsg::Req(r), _) => ShardMsg::Req(r),
            (LinkMsg::Attach { conn, user }, Some(_)) => ShardMsg::Attach(conn, user),
            (other, _) => {
                eprintln!("switchboard: link from {kind:?} {id}: unexpected {other:?}; closing");
                break;
            }
        };
        if shard.send(msg).is_err() {
            break;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    if let (Some(g), Some(mine)) = (gateway, mine) {
        let mut gws = routes.gateways.lock().unwrap_or_else(|p| p.into_inner());
        // Only if a newer link of the same gateway has not replaced this one.
        if gws.get(&g).is_some_and(|(token, _)| *token == mine) {
            gws.remove(&g);
            drop(gws);
            let _ = shard.send(ShardMsg::GatewayGone(g));
        }
        println!("switchboard: link from gateway {g} closed");
    }
}

/// Dials `node` for ever (with backoff) and writes what `rx` queues; `peer`/`id` say who
/// we are. `on_connect` runs after authentication (before queued frames go out) and
/// `on_frame` for each frame read.
#[allow(clippy::too_many_arguments)] // one call per link kind; the pieces are all distinct
fn dial(
    node: RouterNode,
    source: Option<IpAddr>,
    interface: Option<String>,
    secret: Vec<u8>,
    peer: PeerKind,
    id: u16,
    rx: Receiver<LinkMsg>,
    batch: usize,
    stop: Arc<AtomicBool>,
    up: Arc<AtomicBool>,
    on_connect: impl Fn(&mut TcpStream) -> io::Result<()> + Send + 'static,
    on_frame: impl Fn(LinkMsg) + Send + Sync + 'static,
) {
    let on_frame = Arc::new(on_frame);
    let mut backoff = Duration::from_millis(50);
    while !stop.load(Ordering::Acquire) {
        let connected = (|| -> io::Result<TcpStream> {
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
            let mut s: TcpStream = sock.into();
            s.set_nodelay(true)?;
            let mut reader = LinkReader::new(s.try_clone()?);
            connect_auth(&mut s, &mut reader, &secret, peer, id)?;
            on_connect(&mut s)?;
            let f = Arc::clone(&on_frame);
            std::thread::spawn(move || {
                while let Ok(Some(m)) = reader.next_msg() {
                    f(m);
                }
            });
            Ok(s)
        })();
        let mut s = match connected {
            Ok(s) => {
                up.store(true, Ordering::Release);
                println!(
                    "switchboard: link to router {} ({}) up",
                    node.id, node.address
                );
                backoff = Duration::from_millis(50);
                s
            }
            Err(e) => {
                eprintln!(
                    "switchboard: link to router {} ({}): {e}; retrying in {backoff:?}",
                    node.id, node.address
                );
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        // Write until the link fails. A dead peer shows as a failed write, or as the
        // reader's end (checked through a zero-byte peek after each idle period).
        loop {
            if stop.load(Ordering::Acquire) {
                return;
            }
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(first) => {
                    if write_batches(&mut s, &rx, batch, first).is_err() {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if peer_closed(&s) {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        up.store(false, Ordering::Release);
        let _ = s.shutdown(std::net::Shutdown::Both);
        eprintln!("switchboard: link to router {} down; reconnecting", node.id);
    }
}

/// True when the peer has closed (a non-blocking peek returns 0 bytes).
fn peer_closed(s: &TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut b = [0u8; 1];
    let closed = matches!(s.peek(&mut b), Ok(0));
    let _ = s.set_nonblocking(false);
    closed
}

pub fn router(config: Config, id: u16) -> Result<(), String> {
    let signalled = serve::start(&config)?;
    let cluster = Arc::new(config.cluster.validate(config.router.partitions)?);
    let me = cluster
        .routers
        .iter()
        .find(|r| r.id == id)
        .ok_or(format!("router {id} is not in the cluster map"))?
        .clone();
    let shard = serve::open_shard(
        &config,
        id,
        cluster.map.clone(),
        &config.data_dir.join(format!("router-{id}")),
    )?;
    let (tx, rx) = mpsc::channel::<ShardMsg>();
    let stop = Arc::new(AtomicBool::new(false));
    let mut peers = HashMap::new();
    for node in cluster.routers.iter().filter(|r| r.id != id).cloned() {
        let (qtx, qrx) = mpsc::sync_channel(cluster.link_queue);
        peers.insert(node.id, qtx);
        let (secret, batch, stop) = (
            cluster.secret.clone(),
            cluster.link_batch_bytes,
            Arc::clone(&stop),
        );
        std::thread::spawn(move || {
            dial(
                node,
                None,
                None,
                secret,
                PeerKind::Router,
                id,
                qrx,
                batch,
                stop,
                Arc::new(AtomicBool::new(false)),
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
    });
    let listener = TcpListener::bind(me.address)
        .map_err(|e| format!("router {id}: listen on {}: {e}", me.address))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    {
        let (cluster, tx, routes) = (Arc::clone(&cluster), tx.clone(), Arc::clone(&routes));
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let (c, t, r) = (Arc::clone(&cluster), tx.clone(), Arc::clone(&routes));
                std::thread::spawn(move || serve_link(s, c, t, r));
            }
        });
    }
    let (tuned_tx, tuned_rx) = mpsc::channel();
    let shard_thread = serve::spawn_shard(&config, shard, rx, Arc::clone(&routes), 0, tuned_tx)?;
    serve::ready(&config, tuned_rx, 1)?;
    println!(
        "switchboard: router {id} listening for links on {addr} (data in {})",
        config.data_dir.display()
    );
    let _ = io::stdout().flush();
    while !signalled.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("switchboard: stopping: flushing the log");
    stop.store(true, Ordering::Release);
    let _ = tx.send(ShardMsg::Stop);
    let _ = shard_thread.join();
    println!(
        "switchboard: stopped ({} frames dropped while a peer was away)",
        routes.dropped.load(Ordering::Relaxed)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------
// Gateway

struct GatewayRoutes {
    map: PartitionMap,
    queues: HashMap<u16, SyncSender<LinkMsg>>,
    /// Whether each router's link is up (a full queue then means "slow": backpressure).
    up: HashMap<u16, Arc<AtomicBool>>,
    /// Logged-in connections per router, re-attached when its link comes back.
    sessions: HashMap<u16, Arc<Mutex<HashMap<ConnId, Phone>>>>,
    workers: Vec<WorkerInbox>,
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
        match q.try_send(LinkMsg::Req(req)) {
            Ok(()) => Ok(()),
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
            ToRouter::Register { conn, .. }
            | ToRouter::Verify { conn, .. }
            | ToRouter::Login { conn, .. } => Some((
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

pub fn gateway(config: Config, id: u8) -> Result<(), String> {
    let signalled = serve::start(&config)?;
    let cluster = config.cluster.validate(config.router.partitions)?;
    let me = cluster
        .gateways
        .iter()
        .find(|g| g.id == id)
        .ok_or(format!("gateway {id} is not in the cluster map"))?
        .clone();
    let tls = serve::load_tls(&config)?;
    let workers = config.workers();
    let (inboxes, ends) = serve::worker_channels(workers)?;
    let stop = Arc::new(AtomicBool::new(false));
    let link_stop = Arc::new(AtomicBool::new(false));
    let mut queues = HashMap::new();
    let mut sessions = HashMap::new();
    let mut ups = HashMap::new();
    for node in cluster.routers.iter().cloned() {
        let (qtx, qrx) = mpsc::sync_channel(cluster.link_queue);
        let mine: Arc<Mutex<HashMap<ConnId, Phone>>> = Arc::default();
        queues.insert(node.id, qtx);
        sessions.insert(node.id, Arc::clone(&mine));
        let link_up = Arc::new(AtomicBool::new(false));
        ups.insert(node.id, Arc::clone(&link_up));
        let (secret, batch, stop, inboxes) = (
            cluster.secret.clone(),
            cluster.link_batch_bytes,
            Arc::clone(&link_stop),
            inboxes.clone(),
        );
        let attach = Arc::clone(&mine);
        let (source, interface) = (me.source, me.interface.clone());
        std::thread::Builder::new()
            .name(format!("link-router-{}", node.id))
            .spawn(move || {
                dial(
                    node,
                    source,
                    interface,
                    secret,
                    PeerKind::Gateway,
                    id as u16,
                    qrx,
                    batch,
                    stop,
                    link_up,
                    move |s| {
                        // Sessions re-register before anything new goes out.
                        let mut buf = vec![];
                        for (conn, user) in attach.lock().unwrap_or_else(|p| p.into_inner()).iter()
                        {
                            LinkMsg::Attach {
                                conn: *conn,
                                user: *user,
                            }
                            .encode(&mut buf);
                        }
                        s.write_all(&buf)
                    },
                    move |m| {
                        if let LinkMsg::Resp { conn, msg } = m {
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
        workers: inboxes.clone(),
    });
    let (tuned_tx, tuned_rx) = mpsc::channel();
    let r = Arc::clone(&routes);
    let (worker_threads, addr) = serve::spawn_workers(
        &config,
        &tls,
        id,
        ends,
        Arc::new(move |req| r.send(req)),
        &stop,
        &tuned_tx,
    )?;
    drop(tuned_tx);
    serve::ready(&config, tuned_rx, workers)?;
    println!(
        "switchboard: gateway {id} listening on {addr} ({workers} workers, {} routers)",
        cluster.routers.len()
    );
    let _ = io::stdout().flush();
    serve::wait(&signalled, &worker_threads);
    println!("switchboard: stopping: closing connections");
    serve::stop_workers(&stop, &inboxes, worker_threads);
    // Let the last requests (Closed notices) go out before the links stop.
    std::thread::sleep(Duration::from_millis(200));
    link_stop.store(true, Ordering::Release);
    println!("switchboard: stopped");
    Ok(())
}
