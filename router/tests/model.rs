//! One shard over the in-memory store (`router::MemStore`): no files, threads or clock.
//! Durability is advanced by hand, so what waits for it is seen waiting; and a model
//! test drives random sessions, sends, acks, reconnects and durability against what
//! must hold: the window, acknowledgements only once durable, nothing acknowledged lost,
//! order per sender, no duplicate stored.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use proptest::prelude::*;
use router::{MemStore, PartitionMap, RouterConfig, Shard, Store};
use wire::link::{ConnId, FromRouter, ToClient, ToRouter};
use wire::{Key, Phone};

const T0: u64 = 1_800_000_000_000;
const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A shard and what each connection received.
struct One {
    shard: Shard<MemStore>,
    inbox: BTreeMap<ConnId, VecDeque<ToClient>>,
    pins: BTreeMap<Phone, wire::Pin>,
    now: u64,
}

/// Deterministic "randomness": a counter's bytes.
fn counter() -> router::Random {
    let mut n = 0u8;
    Box::new(move |b: &mut [u8]| {
        for x in b {
            n = n.wrapping_add(97);
            *x = n;
        }
        true
    })
}

impl One {
    fn new(config: RouterConfig) -> One {
        let map = PartitionMap::even(config.partitions, 1);
        One {
            shard: Shard::with_store(0, map, config, MemStore::new(), counter(), T0),
            inbox: BTreeMap::new(),
            pins: BTreeMap::new(),
            now: T0,
        }
    }

    fn take(&mut self, out: Vec<FromRouter>) {
        for o in out {
            match o {
                FromRouter::ToClient { conn, msg } => {
                    self.inbox.entry(conn).or_default().push_back(msg)
                }
                FromRouter::ToRouter(r) => self.send(r),
                FromRouter::Sms { phone, pin } => {
                    self.pins.insert(phone, pin);
                }
            }
        }
    }

    fn send(&mut self, req: ToRouter) {
        let mut out = vec![];
        self.shard.handle(self.now, req, &mut out);
        self.take(out);
    }

    /// Everything written becomes durable; the shard releases what waited for it.
    fn durable(&mut self) {
        self.shard.store_mut().make_durable();
        let mut out = vec![];
        self.shard.tick(self.now, &mut out);
        self.take(out);
    }

    fn drain(&mut self, conn: u64) -> Vec<ToClient> {
        self.inbox
            .get_mut(&ConnId(conn))
            .map(|q| q.drain(..).collect())
            .unwrap_or_default()
    }

    /// `who` logs in on `conn` and acknowledges the delivery of message `msg_id` (which
    /// must be delivered).
    fn login_and_ack(&mut self, conn: u64, who: Phone, key: Key, msg_id: u64) {
        self.send(ToRouter::Login {
            conn: ConnId(conn),
            phone: who,
            key,
        });
        let seq = self
            .drain(conn)
            .iter()
            .find_map(|m| match m {
                ToClient::Deliver { seq, msg_id: m, .. } if *m == msg_id => Some(*seq),
                _ => None,
            })
            .expect("the message is delivered");
        self.send(ToRouter::Ack {
            conn: ConnId(conn),
            user: who,
            seq,
        });
    }

    fn register(&mut self, conn: u64, phone: Phone) -> Key {
        self.send(ToRouter::Register {
            conn: ConnId(conn),
            phone,
            source: SRC,
        });
        let pin = self.pins[&phone];
        self.send(ToRouter::Verify {
            conn: ConnId(conn),
            phone,
            pin,
        });
        self.durable();
        match self.drain(conn).pop() {
            Some(ToClient::Registered { key, .. }) => key,
            other => panic!("{other:?}"),
        }
    }
}

fn phone(n: u64) -> Phone {
    Phone::new(n).unwrap()
}

#[test]
fn acks_wait_for_durability_and_come_once_it_is_reached() {
    let mut s = One::new(RouterConfig::default());
    let (a, b) = (phone(15550000001), phone(15550000002));
    let ka = s.register(1, a);
    s.register(2, b);
    // Registered waited for durability too (`register` made it durable to get the key).
    s.send(ToRouter::Login {
        conn: ConnId(1),
        phone: a,
        key: ka,
    });
    s.drain(1);
    s.send(ToRouter::Send {
        conn: ConnId(1),
        from: a,
        to: b,
        msg_id: 1,
        body: b"x".to_vec(),
    });
    let mut out = vec![];
    s.shard.tick(s.now, &mut out);
    s.take(out);
    assert_eq!(s.drain(1), vec![], "no tick before the message is durable");
    s.durable();
    assert_eq!(
        s.drain(1),
        vec![ToClient::ServerAck { to: b, msg_id: 1 }],
        "the tick once it is durable"
    );
}

#[test]
fn a_full_disk_refuses_new_messages_with_its_own_code_and_acks_still_erase() {
    let mut s = One::new(RouterConfig::default());
    let (a, b) = (phone(15550000001), phone(15550000002));
    let ka = s.register(1, a);
    let kb = s.register(2, b);
    s.send(ToRouter::Login {
        conn: ConnId(1),
        phone: a,
        key: ka,
    });
    s.send(ToRouter::Send {
        conn: ConnId(1),
        from: a,
        to: b,
        msg_id: 1,
        body: b"before".to_vec(),
    });
    s.durable();
    s.shard.store_mut().set_disk_full(true);
    s.send(ToRouter::Send {
        conn: ConnId(1),
        from: a,
        to: b,
        msg_id: 2,
        body: b"after".to_vec(),
    });
    s.durable();
    let got = s.drain(1);
    assert!(
        got.contains(&ToClient::Refused {
            to: b,
            msg_id: 2,
            code: wire::ErrorCode::DiskFull
        }),
        "{got:?}"
    );
    s.login_and_ack(2, b, kb, 1);
    assert_eq!(
        s.shard
            .log()
            .pending_count(storage::UserId::new(b.get()).unwrap())
            .0,
        0
    );
}

#[test]
fn a_failed_flush_stops_acknowledging_and_refuses_with_internal() {
    let mut s = One::new(RouterConfig::default());
    let (a, b) = (phone(15550000001), phone(15550000002));
    let ka = s.register(1, a);
    let kb = s.register(2, b);
    s.send(ToRouter::Login {
        conn: ConnId(1),
        phone: a,
        key: ka,
    });
    let send = |s: &mut One, msg_id: u64| {
        s.send(ToRouter::Send {
            conn: ConnId(1),
            from: a,
            to: b,
            msg_id,
            body: format!("m{msg_id}").into_bytes(),
        })
    };
    send(&mut s, 1);
    s.durable();
    assert!(s
        .drain(1)
        .contains(&ToClient::ServerAck { to: b, msg_id: 1 }));
    // Taken but not yet durable when the disk fails: never acknowledged.
    send(&mut s, 2);
    s.shard.store_mut().fail_flush("msync: Input/output error");
    s.durable();
    send(&mut s, 3);
    s.durable();
    let got = s.drain(1);
    assert!(
        !got.iter()
            .any(|m| matches!(m, ToClient::ServerAck { msg_id: 2, .. })),
        "{got:?}"
    );
    assert!(
        got.contains(&ToClient::Refused {
            to: b,
            msg_id: 3,
            code: wire::ErrorCode::Internal
        }),
        "not TryAgain: retrying does not help: {got:?}"
    );
    // An acknowledgement is not erased either: the message stays pending.
    s.login_and_ack(2, b, kb, 1);
    let pending = s
        .shard
        .log()
        .pending_count(storage::UserId::new(b.get()).unwrap())
        .0;
    assert!(pending >= 1, "{pending}");
    assert!(s.shard.stats().storage_errors >= 2);
}

/// What a test step does.
#[derive(Clone, Debug)]
enum Op {
    /// User `from` (0..3) sends to user `to` (0..3) a fresh message.
    Send { from: usize, to: usize },
    /// User `who` acknowledges the oldest delivery it holds.
    Ack { who: usize },
    /// User `who` logs out (its connection closes) or logs in again.
    Toggle { who: usize },
    /// The store makes everything durable.
    Durable,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..3usize).prop_map(|(from, to)| Op::Send { from, to }),
        4 => (0..3usize).prop_map(|who| Op::Ack { who }),
        1 => (0..3usize).prop_map(|who| Op::Toggle { who }),
        2 => Just(Op::Durable),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn sessions_windows_durability_and_order_hold(ops in proptest::collection::vec(op(), 1..300)) {
        let window = 4;
        let mut s = One::new(RouterConfig { window, ..RouterConfig::default() });
        let users: Vec<Phone> = (0..3).map(|i| phone(15550000100 + i)).collect();
        let keys: Vec<Key> = (0..3).map(|i| s.register(100 + i as u64, users[i])).collect();
        // Each login gets a fresh connection id.
        let mut conn: Vec<Option<u64>> = vec![None; 3];
        let mut next_conn = 1000u64;
        let mut next_id = [0u64; 3];
        // Model: messages acknowledged by the server, per recipient, in send order per sender.
        let mut acked: BTreeMap<(usize, usize), Vec<u64>> = BTreeMap::new();
        let mut sent_ids: BTreeMap<(usize, u64), usize> = BTreeMap::new(); // (from, id) -> to
        // Sent since the store last became durable: no tick may come for these yet.
        let mut undurable: std::collections::BTreeSet<(usize, u64)> = Default::default();
        // What each user got (from, msg_id) and still holds unacknowledged (seq).
        let mut held: Vec<VecDeque<u64>> = vec![VecDeque::new(); 3];
        let mut got: Vec<Vec<(usize, u64)>> = vec![vec![]; 3];
        let login = |s: &mut One, who: usize, c: u64| {
            s.send(ToRouter::Login { conn: ConnId(c), phone: users[who], key: keys[who] });
        };
        for (who, slot) in conn.iter_mut().enumerate() {
            *slot = Some(next_conn);
            login(&mut s, who, next_conn);
            next_conn += 1;
        }
        let user_of = |p: Phone| users.iter().position(|u| *u == p).unwrap();
        for op in ops {
            match op {
                Op::Send { from, to } => {
                    let Some(c) = conn[from] else { continue };
                    next_id[from] += 1;
                    let id = next_id[from];
                    sent_ids.insert((from, id), to);
                    undurable.insert((from, id));
                    s.send(ToRouter::Send {
                        conn: ConnId(c), from: users[from], to: users[to], msg_id: id,
                        body: id.to_le_bytes().to_vec(),
                    });
                }
                Op::Ack { who } => {
                    let (Some(c), Some(seq)) = (conn[who], held[who].pop_front()) else { continue };
                    s.send(ToRouter::Ack { conn: ConnId(c), user: users[who], seq });
                }
                Op::Toggle { who } => match conn[who].take() {
                    Some(c) => {
                        s.send(ToRouter::Closed { conn: ConnId(c), user: users[who] });
                        held[who].clear();
                    }
                    None => {
                        conn[who] = Some(next_conn);
                        login(&mut s, who, next_conn);
                        next_conn += 1;
                    }
                },
                Op::Durable => {
                    undurable.clear();
                    s.durable()
                }
            }
            // What every connection received.
            for who in 0..3 {
                let Some(c) = conn[who] else { continue };
                for m in s.drain(c) {
                    match m {
                        ToClient::ServerAck { to, msg_id } => {
                            prop_assert!(!undurable.contains(&(who, msg_id)), "a tick before durability: {}", msg_id);
                            prop_assert_eq!(sent_ids.get(&(who, msg_id)), Some(&user_of(to)));
                            acked.entry((who, user_of(to))).or_default().push(msg_id);
                        }
                        ToClient::Deliver { seq, from, msg_id, .. } => {
                            let f = user_of(from);
                            prop_assert_eq!(sent_ids.get(&(f, msg_id)), Some(&who), "never sent to this user");
                            held[who].push_back(seq);
                            got[who].push((f, msg_id));
                        }
                        ToClient::Receipt { seq, .. } => held[who].push_back(seq),
                        ToClient::LoggedIn { .. } | ToClient::Close { .. } => {}
                        other => prop_assert!(false, "unexpected {:?}", other),
                    }
                }
                prop_assert!(held[who].len() <= window as usize, "window: {} held", held[who].len());
            }
        }
        // The end: durable, everyone logged in, everything acknowledged as it comes.
        s.durable();
        for who in 0..3 {
            if let Some(c) = conn[who].take() {
                s.send(ToRouter::Closed { conn: ConnId(c), user: users[who] });
            }
            let c = next_conn;
            next_conn += 1;
            login(&mut s, who, c);
            held[who].clear();
            loop {
                let msgs = s.drain(c);
                if msgs.is_empty() { break; }
                for m in msgs {
                    match m {
                        ToClient::Deliver { seq, from, msg_id, .. } => {
                            got[who].push((user_of(from), msg_id));
                            s.send(ToRouter::Ack { conn: ConnId(c), user: users[who], seq });
                        }
                        ToClient::Receipt { seq, .. } => {
                            s.send(ToRouter::Ack { conn: ConnId(c), user: users[who], seq });
                        }
                        _ => {}
                    }
                }
            }
        }
        // Nothing acknowledged is lost, and each sender's messages arrive in order.
        for ((from, to), ids) in &acked {
            let seen: Vec<u64> = got[*to].iter().filter(|(f, _)| f == from).map(|(_, id)| *id).collect();
            for id in ids {
                prop_assert!(seen.contains(id), "{from} -> {to}: message {id} acknowledged, never delivered");
            }
            let mut first = seen.clone();
            first.dedup();
            let mut order: Vec<u64> = vec![];
            for id in first { if !order.contains(&id) { order.push(id); } }
            prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "{from} -> {to}: out of order {:?}", order);
        }
    }
}
