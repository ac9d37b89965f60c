//! `switchboard gateway`: the TLS workers, with a link to every router.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use crossbeam_channel::TrySendError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::link::RouterLink;
use router::PartitionMap;
use wire::link::{ConnId, ToClient, ToRouter};
use wire::linkcodec::{LinkMsg, PeerKind};
use wire::{ErrorCode, Phone};

use crate::config::Config;
use crate::control::{ConfigSource, Control, Role};
use crate::error::Error;
use link::{dial, link_channel, LinkEvent, LinkSender};

use crate::process;
use crate::serve::{self, WorkerInbox};

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

impl crate::metrics::Queues for GatewayQueues {
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

    fn worker_replies(&self) -> Vec<(usize, usize)> {
        (self.routes.workers.iter().enumerate())
            .map(|(i, w)| (i, w.waiting()))
            .collect()
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

pub fn gateway(config: Config, id: u8, source: ConfigSource) -> Result<(), Error> {
    let signalled = process::start(&config)?;
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
    let tls = crate::control::load_tls(&config)?;
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
        let (batch, stop, inboxes) = (
            Arc::clone(&control.link_batch_bytes),
            Arc::clone(&link_stop),
            inboxes.clone(),
        );
        let to = link::Dial {
            source: me.source,
            interface: me.interface.clone(),
            ..cluster.dial(
                &node,
                cluster.link_tls_to(&node)?,
                PeerKind::Gateway,
                origin,
            )
        };
        let attach = Arc::clone(&mine);
        std::thread::Builder::new()
            .name(format!("link-router-{}", node.id))
            .spawn(move || {
                dial(
                    to,
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
    process::ready(&config, tuned_rx, workers)?;
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
    let operations = process::start_operations(
        &config,
        crate::admin::Sources::new(
            worker_cells,
            vec![],
            &control,
            crate::tee::figures(&tee),
            Arc::new(GatewayQueues {
                routes: Arc::clone(&routes),
                tee: tee.clone(),
            }),
        ),
    )?;
    if !takeover {
        listening();
    }
    serve::wait(&signalled, &worker_threads, &control, Some(&drain));
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
