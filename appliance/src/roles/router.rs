//! `switchboard router`: one shard and its log, serving links from gateways and other
//! routers on the private address.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use router::PartitionMap;
use wire::link::{ConnId, FromRouter};
use wire::linkcodec::{LinkMsg, PeerKind};

use crate::cluster::Cluster;
use crate::config::Config;
use crate::control::{ConfigSource, Control, Role};
use crate::error::Error;
use link::{dial, link_channel, Link, LinkSender, LinkTls};
use router::driver::{self, Dispatch, ShardMsg, ShardTx};

use crate::process;
use crate::sms::Sms;

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

impl crate::metrics::Queues for RouterQueues {
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

/// How this node serves and dials links.
fn link_tls_server(config: &Config, cluster: &Cluster) -> Result<LinkTls, String> {
    if !cluster.link_tls {
        return Ok(LinkTls::Off);
    }
    Ok(LinkTls::Server(crate::control::load_tls(config)?))
}

pub fn router(config: Config, id: u16, source: ConfigSource) -> Result<(), Error> {
    let signalled = process::start(&config)?;
    let control = Control::new(Role::Router, &config, source, None);
    let cluster = Arc::new(config.cluster.validate(config.router.partitions)?);
    let me = cluster
        .routers
        .iter()
        .find(|r| r.id == id)
        .ok_or(format!("router {id} is not in the cluster map"))?
        .clone();
    let tls = link_tls_server(&config, &cluster)?;
    let mut shard = process::open_shard(
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
        let (batch, stop) = (Arc::clone(&control.link_batch_bytes), Arc::clone(&stop));
        let to = cluster.dial(&node, cluster.link_tls_to(&node)?, PeerKind::Router, id);
        std::thread::spawn(move || {
            let up = Arc::new(AtomicBool::new(false));
            dial(to, qrx, batch, stop, up, |_| Ok(()), |_| {})
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
    let shard_thread = process::spawn_shard(&config, shard, rx, Arc::clone(&routes), 0, tuned_tx)?;
    process::ready(&config, tuned_rx, 1)?;
    let _operations = process::start_operations(
        &config,
        crate::admin::Sources::new(
            vec![],
            vec![report],
            &control,
            None,
            Arc::new(RouterQueues {
                id,
                shard: tx.clone(),
                routes: Arc::clone(&routes),
            }),
        ),
    )?;
    tracing::info!(
        "router {id} listening for links on {addr}{} (data in {})",
        if cluster.link_tls { " with TLS" } else { "" },
        config.data_dir.display()
    );
    let _ = io::stdout().flush();
    while !signalled.load(Ordering::Acquire) {
        if process::take_hup() {
            let _ = crate::control::reload_logged(&control);
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
