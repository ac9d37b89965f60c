//! Shards driven as the appliance drives them, without sockets: a harness routes each
//! request to the owning shard, carries cross-shard requests, collects what each client
//! connection receives and the PINs "sent by SMS".

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use router::{PartitionMap, RouterConfig, Shard};
use storage::{Durability, LogConfig};
use wire::frame::ReceiptKind;
use wire::link::{ConnId, FromRouter, ToClient, ToRouter};
use wire::{ErrorCode, Key, Phone, Pin};

const T0: u64 = 1_800_000_000_000;
const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

struct Net {
    dir: tempfile::TempDir,
    map: PartitionMap,
    shards: Vec<Option<Shard>>,
    config: RouterConfig,
    log: LogConfig,
    now: u64,
    inbox: BTreeMap<ConnId, VecDeque<ToClient>>,
    sms: BTreeMap<Phone, Pin>,
    /// The test makes the logs durable itself (their flusher sleeps 10 s).
    by_hand: bool,
}

fn phone(n: u64) -> Phone {
    Phone::new(n).unwrap()
}

impl Net {
    fn new(shards: u16, config: RouterConfig, durability: Durability) -> Net {
        let log = LogConfig {
            segment_bytes: 1 << 20,
            durability,
            prefault: false,
            group_interval_us: 200,
            ..LogConfig::default()
        };
        Net::with_log(shards, config, log)
    }

    /// Group commit whose flusher sleeps 10 s (longer than any test): nothing becomes
    /// durable unless [`Net::make_durable`] says so.
    fn durable_by_hand(shards: u16, config: RouterConfig) -> Net {
        let log = LogConfig {
            segment_bytes: 1 << 20,
            durability: Durability::Group,
            prefault: false,
            group_interval_us: 10_000_000,
            ..LogConfig::default()
        };
        let mut net = Net::with_log(shards, config, log);
        net.by_hand = true;
        net
    }

    fn with_log(shards: u16, config: RouterConfig, log: LogConfig) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let map = PartitionMap::even(config.partitions, shards);
        let mut net = Net {
            dir,
            map,
            shards: vec![],
            config,
            log,
            now: T0,
            inbox: BTreeMap::new(),
            sms: BTreeMap::new(),
            by_hand: false,
        };
        for id in 0..shards {
            let s = net.open_shard(id);
            net.shards.push(Some(s));
        }
        net
    }

    fn open_shard(&self, id: u16) -> Shard {
        let dir = self.dir.path().join(format!("log-{id}"));
        Shard::open(
            id,
            self.map.clone(),
            self.config.clone(),
            self.log.clone(),
            &dir,
            self.now,
        )
        .unwrap()
        .0
    }

    fn restart(&mut self, id: u16) {
        self.shards[id as usize].take().unwrap().close().unwrap();
        self.shards[id as usize] = Some(self.open_shard(id));
    }

    fn send(&mut self, req: ToRouter) {
        let mut queue = VecDeque::from([req]);
        while let Some(req) = queue.pop_front() {
            let id = self.map.shard_of(req.route_key());
            let mut out = vec![];
            self.shards[id as usize]
                .as_mut()
                .unwrap()
                .handle(self.now, req, &mut out);
            self.take(out, &mut queue);
        }
    }

    fn tick(&mut self) {
        let mut queue = VecDeque::new();
        for s in self.shards.iter_mut() {
            let mut out = vec![];
            s.as_mut().unwrap().tick(self.now, &mut out);
            for o in out {
                match o {
                    FromRouter::ToClient { conn, msg } => {
                        self.inbox.entry(conn).or_default().push_back(msg)
                    }
                    FromRouter::ToRouter(r) => queue.push_back(r),
                    FromRouter::Sms { phone, pin } => {
                        self.sms.insert(phone, pin);
                    }
                }
            }
        }
        while let Some(r) = queue.pop_front() {
            self.send(r);
        }
    }

    fn take(&mut self, out: Vec<FromRouter>, queue: &mut VecDeque<ToRouter>) {
        for o in out {
            match o {
                FromRouter::ToClient { conn, msg } => {
                    self.inbox.entry(conn).or_default().push_back(msg)
                }
                FromRouter::ToRouter(r) => queue.push_back(r),
                FromRouter::Sms { phone, pin } => {
                    self.sms.insert(phone, pin);
                }
            }
        }
    }

    /// Everything written so far becomes durable (the writer flushes), then a tick.
    fn make_durable(&mut self) {
        for s in self.shards.iter_mut().flatten() {
            s.store_mut().flush().unwrap();
        }
        self.tick();
    }

    /// What `conn` receives, ticking (group commit needs the flusher) for up to 2 s.
    fn wait(&mut self, conn: u64) -> Vec<ToClient> {
        for _ in 0..2000 {
            if self.by_hand {
                self.make_durable();
            }
            self.tick();
            if self.inbox.get(&ConnId(conn)).is_some_and(|q| !q.is_empty()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.drain(conn)
    }

    fn drain(&mut self, conn: u64) -> Vec<ToClient> {
        self.inbox
            .remove(&ConnId(conn))
            .map(Vec::from)
            .unwrap_or_default()
    }

    /// Registers `p` on connection `conn`; returns its key.
    fn register(&mut self, conn: u64, p: Phone) -> Key {
        self.send(ToRouter::Register {
            conn: ConnId(conn),
            phone: p,
            source: SRC,
        });
        assert!(matches!(
            self.drain(conn)[..],
            [ToClient::RegisterPending { .. }]
        ));
        let pin = self.sms[&p];
        self.send(ToRouter::Verify {
            conn: ConnId(conn),
            phone: p,
            pin,
        });
        match &self.wait(conn)[..] {
            [ToClient::Registered { key, .. }] => *key,
            other => panic!("{other:?}"),
        }
    }

    fn login(&mut self, conn: u64, p: Phone, key: Key) -> Vec<ToClient> {
        self.send(ToRouter::Login {
            conn: ConnId(conn),
            phone: p,
            key,
        });
        self.drain(conn)
    }

    fn msg(&mut self, conn: u64, from: Phone, to: Phone, msg_id: u64, body: &[u8]) {
        self.send(ToRouter::Send {
            conn: ConnId(conn),
            from,
            to,
            msg_id,
            body: body.to_vec(),
        });
    }
}

fn delivers(msgs: &[ToClient]) -> Vec<(u64, u64, Vec<u8>)> {
    msgs.iter()
        .filter_map(|m| match m {
            ToClient::Deliver {
                seq, msg_id, body, ..
            } => Some((*seq, *msg_id, body.clone())),
            _ => None,
        })
        .collect()
}

const A: u64 = 15550000001;
const B: u64 = 15550000002;

#[test]
fn two_users_online_get_ticks_and_receipts() {
    for shards in [1, 2] {
        let mut net = Net::new(shards, RouterConfig::default(), Durability::None);
        let (a, b) = (phone(A), phone(B));
        let ka = net.register(1, a);
        let kb = net.register(2, b);
        assert!(matches!(
            net.login(1, a, ka)[..],
            [ToClient::LoggedIn { pending: 0, .. }]
        ));
        assert!(matches!(
            net.login(2, b, kb)[..],
            [ToClient::LoggedIn { pending: 0, .. }]
        ));

        net.msg(1, a, b, 7, b"hello");
        assert_eq!(
            net.drain(1),
            vec![ToClient::ServerAck { to: b, msg_id: 7 }],
            "one tick"
        );
        let got = net.drain(2);
        let [ToClient::Deliver {
            seq,
            from,
            msg_id: 7,
            ref body,
            ..
        }] = got[..]
        else {
            panic!("{got:?}")
        };
        assert_eq!((from, &body[..]), (a, &b"hello"[..]));

        net.send(ToRouter::Ack {
            conn: ConnId(2),
            user: b,
            seq,
        });
        let got = net.drain(1);
        let [ToClient::Receipt {
            seq: rseq,
            by,
            msg_id: 7,
            kind: ReceiptKind::Delivered,
            ..
        }] = got[..]
        else {
            panic!("{got:?}")
        };
        assert_eq!(by, b, "two ticks");
        net.send(ToRouter::Ack {
            conn: ConnId(1),
            user: a,
            seq: rseq,
        });

        // A Read for a message the reader never got (another id; another reader) goes
        // nowhere.
        net.send(ToRouter::Read {
            conn: ConnId(2),
            user: b,
            from: a,
            msg_id: 8,
        });
        net.send(ToRouter::Read {
            conn: ConnId(1),
            user: a,
            from: b,
            msg_id: 7,
        });
        net.send(ToRouter::Read {
            conn: ConnId(2),
            user: b,
            from: a,
            msg_id: 7,
        });
        let got = net.drain(1);
        assert!(
            matches!(
                got[..],
                [ToClient::Receipt {
                    msg_id: 7,
                    kind: ReceiptKind::Read,
                    ..
                }]
            ),
            "{got:?}"
        );
        let ToClient::Receipt { seq: rseq, .. } = got[0] else {
            unreachable!()
        };
        net.send(ToRouter::Ack {
            conn: ConnId(1),
            user: a,
            seq: rseq,
        });
        for s in net.shards.iter().flatten() {
            assert_eq!(
                s.log().pending_total().0,
                0,
                "everything acknowledged is erased ({shards} shards)"
            );
        }
    }
}

#[test]
fn an_offline_recipient_gets_everything_in_order_at_login() {
    let mut net = Net::new(1, RouterConfig::default(), Durability::None);
    let (a, b) = (phone(A), phone(B));
    let ka = net.register(1, a);
    let kb = net.register(2, b);
    net.login(1, a, ka);
    for i in 0..20 {
        net.msg(1, a, b, i, format!("m{i}").as_bytes());
    }
    assert_eq!(net.drain(1).len(), 20, "20 server ticks");
    let got = net.login(3, b, kb);
    assert!(
        matches!(got[0], ToClient::LoggedIn { pending: 20, .. }),
        "{:?}",
        got[0]
    );
    let ids: Vec<u64> = delivers(&got).iter().map(|d| d.1).collect();
    assert_eq!(ids, (0..20).collect::<Vec<_>>());
}

#[test]
fn acks_wait_for_durability_in_group_mode() {
    let mut net = Net::durable_by_hand(1, RouterConfig::default());
    let (a, b) = (phone(A), phone(B));
    let ka = net.register(1, a);
    net.register(2, b);
    net.login(1, a, ka);
    net.msg(1, a, b, 1, b"x");
    let ack = ToClient::ServerAck { to: b, msg_id: 1 };
    assert!(
        !net.drain(1).contains(&ack),
        "no ack before the log is durable"
    );
    net.tick();
    assert!(
        !net.drain(1).contains(&ack),
        "nor at a tick while it is not"
    );
    let s = net.shards[0].as_ref().unwrap();
    assert!(s.log().durable() < s.log().written());
    net.make_durable();
    assert!(
        net.drain(1).contains(&ack),
        "the ack comes at the first tick once the message is durable"
    );
}

#[test]
fn a_failing_disk_stops_acks_and_refuses_sends_with_internal() {
    let mut net = Net::durable_by_hand(1, RouterConfig::default());
    let (a, b) = (phone(A), phone(B));
    let ka = net.register(1, a);
    net.register(2, b);
    net.login(1, a, ka);
    net.msg(1, a, b, 1, b"before");
    net.make_durable();
    assert!(net
        .drain(1)
        .contains(&ToClient::ServerAck { to: b, msg_id: 1 }));
    const EIO: i32 = 5; // Linux and FreeBSD
    storage::fault::inject(net.dir.path(), storage::fault::Op::Msync, EIO, None);
    net.msg(1, a, b, 2, b"taken, never durable");
    let s = net.shards[0].as_mut().unwrap();
    assert!(s.store_mut().flush().is_err());
    net.tick();
    net.msg(1, a, b, 3, b"after");
    net.tick();
    let got = net.drain(1);
    assert!(
        !got.iter()
            .any(|m| matches!(m, ToClient::ServerAck { msg_id: 2, .. })),
        "{got:?}"
    );
    assert!(
        got.contains(&ToClient::Refused {
            to: b,
            msg_id: 3,
            code: ErrorCode::Internal
        }),
        "{got:?}"
    );
    let s = net.shards[0].as_ref().unwrap();
    assert!(s.log().stats().flush_failed);
    assert!(s.log().flush_failure().unwrap().contains("msync"));
    storage::fault::clear(net.dir.path());
}

#[test]
fn resends_are_acknowledged_but_stored_once() {
    let mut net = Net::new(1, RouterConfig::default(), Durability::None);
    let (a, b) = (phone(A), phone(B));
    let ka = net.register(1, a);
    let kb = net.register(2, b);
    net.login(1, a, ka);
    net.msg(1, a, b, 5, b"once");
    net.msg(1, a, b, 5, b"once"); // resend while pending
    assert_eq!(net.drain(1).len(), 2, "both acknowledged");
    let got = net.login(2, b, kb);
    assert_eq!(delivers(&got).len(), 1);
    let seq = delivers(&got)[0].0;
    net.send(ToRouter::Ack {
        conn: ConnId(2),
        user: b,
        seq,
    });
    net.msg(1, a, b, 5, b"once"); // resend after delivery
    assert!(
        net.drain(2).is_empty(),
        "a recently delivered message is not delivered again"
    );
    assert!(net
        .drain(1)
        .contains(&ToClient::ServerAck { to: b, msg_id: 5 }));
    net.msg(1, a, b, 6, b"new");
    assert_eq!(delivers(&net.drain(2)).len(), 1);
}

#[test]
fn the_window_bounds_deliveries_in_flight_and_order_holds() {
    let config = RouterConfig {
        window: 8,
        ..RouterConfig::default()
    };
    let mut net = Net::new(1, config, Durability::None);
    let (a, b) = (phone(A), phone(B));
    let ka = net.register(1, a);
    let kb = net.register(2, b);
    net.login(1, a, ka);
    for i in 0..50 {
        net.msg(1, a, b, i, b"x");
    }
    let mut got = delivers(&net.login(2, b, kb));
    assert_eq!(
        got.len(),
        8,
        "only the window is sent; the rest waits in the log"
    );
    let mut ids = vec![];
    while let Some((seq, id, _)) = got.first().cloned() {
        got.remove(0);
        ids.push(id);
        net.send(ToRouter::Ack {
            conn: ConnId(2),
            user: b,
            seq,
        });
        got.extend(delivers(&net.drain(2)));
        assert!(got.len() <= 8);
    }
    assert_eq!(ids, (0..50).collect::<Vec<_>>());
}

#[test]
fn messages_and_accounts_survive_a_router_restart() {
    let mut net = Net::new(2, RouterConfig::default(), Durability::Group);
    let (a, b) = (phone(A), phone(B));
    let ka = net.register(1, a);
    let kb = net.register(2, b);
    net.login(1, a, ka);
    for i in 0..10 {
        net.msg(1, a, b, i, b"keep me");
    }
    for id in 0..2 {
        net.restart(id);
    }
    net.msg(1, a, b, 3, b"keep me"); // a resend after the restart: still a duplicate
    let got = net.login(2, b, kb);
    assert_eq!(
        delivers(&got).iter().map(|d| d.1).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
}

#[test]
fn registration_errors_and_re_registration() {
    let mut net = Net::new(1, RouterConfig::default(), Durability::None);
    let a = phone(A);
    // Verify without asking first.
    net.send(ToRouter::Verify {
        conn: ConnId(1),
        phone: a,
        pin: Pin::new(1).unwrap(),
    });
    assert!(matches!(
        net.drain(1)[..],
        [ToClient::Error {
            code: ErrorCode::PinInvalid,
            ..
        }]
    ));
    // Five wrong PINs void it.
    net.send(ToRouter::Register {
        conn: ConnId(1),
        phone: a,
        source: SRC,
    });
    net.drain(1);
    let pin = net.sms[&a];
    let wrong = Pin::new((pin.get() + 1) % 100_000).unwrap();
    for _ in 0..5 {
        net.send(ToRouter::Verify {
            conn: ConnId(1),
            phone: a,
            pin: wrong,
        });
        assert!(matches!(
            net.drain(1)[..],
            [ToClient::Error {
                code: ErrorCode::PinWrong,
                ..
            }]
        ));
    }
    net.send(ToRouter::Verify {
        conn: ConnId(1),
        phone: a,
        pin,
    });
    assert!(
        matches!(
            net.drain(1)[..],
            [ToClient::Error {
                code: ErrorCode::PinInvalid,
                ..
            }]
        ),
        "void after 5 wrong"
    );
    // Register properly, log in, then register again elsewhere.
    let k1 = net.register(1, a);
    net.login(1, a, k1);
    let k2 = net.register(2, a);
    assert!(matches!(
        net.drain(1)[..],
        [ToClient::Close {
            code: ErrorCode::LoggedInElsewhere,
            ..
        }]
    ));
    assert!(
        matches!(
            net.login(3, a, k1)[..],
            [ToClient::Close {
                code: ErrorCode::AuthFailed,
                ..
            }]
        ),
        "old key is void"
    );
    assert!(matches!(
        net.login(3, a, k2)[..],
        [ToClient::LoggedIn { .. }]
    ));
}

#[test]
fn refusals_name_the_message() {
    let config = RouterConfig::default();
    let mut net = Net::new(1, config, Durability::None);
    net.log.user_messages_max = 2;
    net.restart(0);
    let (a, b) = (phone(A), phone(B));
    let ka = net.register(1, a);
    net.register(2, b);
    net.login(1, a, ka);
    net.msg(1, a, phone(15559999999), 1, b"to nobody");
    assert_eq!(
        net.drain(1),
        vec![ToClient::Refused {
            to: phone(15559999999),
            msg_id: 1,
            code: ErrorCode::RecipientUnknown
        }]
    );
    net.msg(1, a, b, 1, b"1");
    net.msg(1, a, b, 2, b"2");
    net.msg(1, a, b, 3, b"3");
    let got = net.drain(1);
    assert_eq!(
        got[2],
        ToClient::Refused {
            to: b,
            msg_id: 3,
            code: ErrorCode::QueueFull
        }
    );
    assert!(ErrorCode::QueueFull.is_retryable());
}

#[test]
fn a_wrong_key_or_unknown_number_cannot_log_in() {
    let mut net = Net::new(1, RouterConfig::default(), Durability::None);
    let a = phone(A);
    assert!(matches!(
        net.login(1, a, Key([0; 32]))[..],
        [ToClient::Close {
            code: ErrorCode::AuthFailed,
            ..
        }]
    ));
    net.register(1, a);
    assert!(matches!(
        net.login(1, a, Key([0; 32]))[..],
        [ToClient::Close {
            code: ErrorCode::AuthFailed,
            ..
        }]
    ));
    assert_eq!(net.shards[0].as_ref().unwrap().stats().auth_failures, 2);
}

#[test]
fn attach_after_a_link_reconnect_streams_pending_again_and_gateway_gone_ends_sessions() {
    let mut net = Net::new(1, RouterConfig::default(), Durability::None);
    let (a, b) = (phone(A), phone(B));
    let ka = net.register(1, a);
    let kb = net.register(2, b);
    net.login(1, a, ka);
    net.login(2, b, kb);
    net.msg(1, a, b, 1, b"x");
    assert_eq!(delivers(&net.drain(2)).len(), 1);
    // The gateway's link dropped (gateway 0: the top byte of the ConnIds here).
    net.shards[0].as_mut().unwrap().gateway_gone(0);
    net.msg(1, a, b, 2, b"y");
    assert!(net.drain(2).is_empty(), "no session: nothing is pushed");
    // The link is back; the gateway re-attaches b's connection.
    let mut out = vec![];
    net.shards[0]
        .as_mut()
        .unwrap()
        .attach(ConnId(2), b, net.now, &mut out);
    let got: Vec<u64> = out
        .iter()
        .filter_map(|o| match o {
            FromRouter::ToClient {
                msg: ToClient::Deliver { msg_id, .. },
                ..
            } => Some(*msg_id),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![1, 2], "everything not acknowledged, in order");
}
