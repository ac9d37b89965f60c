//! The log against a plain reference model over random operation sequences, including
//! reopen (recovery), maintenance (deletion, compaction, expiry) and time passing.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use storage::{Durability, Log, LogConfig, NewMessage};

#[derive(Clone, Debug)]
enum Op {
    Append {
        to: u64,
        body: usize,
        ttl_s: Option<u64>,
    },
    /// Erase the `nth` pending message of `to` (modulo its count).
    Erase {
        to: u64,
        nth: usize,
    },
    Put {
        key: u8,
        value: u8,
        len: usize,
    },
    Delete {
        key: u8,
    },
    Maintain {
        budget: usize,
    },
    Reopen,
    Advance {
        secs: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u64..5, 0usize..1500, prop::option::of(1u64..100)).prop_map(|(to, body, ttl_s)| Op::Append { to, body, ttl_s }),
        6 => (1u64..5, any::<usize>()).prop_map(|(to, nth)| Op::Erase { to, nth }),
        2 => (0u8..6, any::<u8>(), 1usize..300).prop_map(|(key, value, len)| Op::Put { key, value, len }),
        1 => (0u8..6).prop_map(|key| Op::Delete { key }),
        2 => (1usize..200_000).prop_map(|budget| Op::Maintain { budget }),
        1 => Just(Op::Reopen),
        1 => (1u64..60).prop_map(|secs| Op::Advance { secs }),
    ]
}

/// (seq, msg_id, body, expiry)
type Pending = (u64, u64, Vec<u8>, u64);

#[derive(Default)]
struct Model {
    /// user -> (seq, msg_id, body, expiry)
    queues: BTreeMap<u64, Vec<Pending>>,
    accounts: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Model {
    fn live(&self, now: u64) -> BTreeMap<u64, Vec<(u64, Vec<u8>)>> {
        self.queues
            .iter()
            .map(|(u, q)| {
                let v: Vec<_> = q
                    .iter()
                    .filter(|m| m.3 > now)
                    .map(|m| (m.1, m.2.clone()))
                    .collect();
                (*u, v)
            })
            .collect()
    }
}

fn check(log: &Log, model: &Model, now: u64) {
    for (u, expect) in model.live(now) {
        let got: Vec<_> = log
            .pending(user(u), now)
            .map(|m| (m.msg_id, m.body.to_vec()))
            .collect();
        assert_eq!(got, expect, "user {u} at {now}");
    }
    let got: BTreeMap<Vec<u8>, Vec<u8>> = log
        .accounts()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(got, model.accounts);
}

fn run(ops: Vec<Op>, durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        compact_live_ratio: 0.5,
        ..small(durability)
    };
    let mut now = NOW;
    let mut log = Log::open(dir.path(), config.clone(), now).unwrap().0;
    let mut model = Model::default();
    let mut next_id = 0u64;
    for op in ops {
        match op {
            Op::Append { to, body, ttl_s } => {
                next_id += 1;
                let body: Vec<u8> = (0..body).map(|i| (i as u64 * 31 + next_id) as u8).collect();
                let expiry = ttl_s.map(|s| now + s * 1000);
                let a = log
                    .append_message(&NewMessage {
                        recipient: user(to),
                        sender: user(99),
                        msg_id: next_id,
                        timestamp_ms: now,
                        expiry_ms: expiry,
                        body: &body,
                    })
                    .unwrap();
                let expiry = expiry.unwrap_or(now + config.message_ttl_ms);
                model
                    .queues
                    .entry(to)
                    .or_default()
                    .push((a.seq.0, next_id, body, expiry));
            }
            Op::Erase { to, nth } => {
                let q = model.queues.entry(to).or_default();
                if q.is_empty() {
                    continue;
                }
                let (seq, _, _, expiry) = q.remove(nth % q.len());
                let wrote = log.erase(user(to), storage::MsgSeq(seq)).unwrap();
                // An expired message may already have been swept: then nothing is written.
                if expiry > now {
                    assert!(wrote.is_some());
                }
            }
            Op::Put { key, value, len } => {
                let v = vec![value; len];
                log.put_account(&[b'k', key], &v).unwrap();
                model.accounts.insert(vec![b'k', key], v);
            }
            Op::Delete { key } => {
                let had = model.accounts.remove(&vec![b'k', key]).is_some();
                assert_eq!(log.delete_account(&[b'k', key]).unwrap().is_some(), had);
            }
            Op::Maintain { budget } => {
                log.maintain(now, budget).unwrap();
                // Expired messages are gone from the model once swept or not: the log may
                // drop them any time after they expire.
            }
            Op::Reopen => {
                drop(log);
                let (l, report) = Log::open(dir.path(), config.clone(), now).unwrap();
                assert!(report.clean(), "{report:?}");
                log = l;
            }
            Op::Advance { secs } => now += secs * 1000,
        }
        for q in model.queues.values_mut() {
            q.retain(|m| m.3 > now);
        }
        check(&log, &model, now);
    }
    // Everything maintained away and reopened once more still matches.
    while log.maintain(now, 1 << 20).unwrap().more {
        log.flush().unwrap();
    }
    drop(log);
    let log = Log::open(dir.path(), config, now).unwrap().0;
    check(&log, &model, now);
    let (msgs, _) = log.pending_total();
    assert_eq!(
        msgs as usize,
        model.live(now).values().map(Vec::len).sum::<usize>()
    );
}

proptest! {
    // 64 cases by default; PROPTEST_CASES=N for a longer run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..400)) {
        run(ops, Durability::None);
    }

    #[test]
    fn log_matches_model_with_group_commit(ops in prop::collection::vec(op(), 1..200)) {
        run(ops, Durability::Group);
    }
}
