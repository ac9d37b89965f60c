//! Crash test: a child process appends and erases as fast as it can with
//! `durability = group` and prints which operations it saw become durable; the parent
//! kills it with SIGKILL at a random moment, reopens the log and checks that every
//! durable append is there (unless a durable erase removed it) and no durably erased
//! message came back.
//!
//! `cargo test -p storage --test crash` runs 12 rounds; the stress run is
//! `CRASH_ITERATIONS=200 cargo test --release -p storage --test crash`.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use storage::{Durability, Log, LogConfig, MsgSeq};

const USERS: u64 = 6;

/// splitmix64: the child and the parent draw the same operations from a seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Append { to: u64, id: u64 },
    Erase { to: u64, id: u64 },
}

/// The operation sequence of a seed. Erases pick among the messages appended before
/// them and not yet erased, so the sequence does not depend on timing.
struct Ops {
    rng: Rng,
    next_id: u64,
    pending: BTreeMap<u64, Vec<u64>>,
}

impl Ops {
    fn new(seed: u64) -> Self {
        Ops {
            rng: Rng(seed),
            next_id: 0,
            pending: BTreeMap::new(),
        }
    }
    fn next(&mut self) -> Op {
        let erase = self.rng.below(10) < 4;
        let to = 1 + self.rng.below(USERS);
        let q = self.pending.entry(to).or_default();
        if erase && !q.is_empty() {
            // Mostly the oldest (in-order acks), sometimes any.
            let i = if self.rng.below(4) == 0 {
                self.rng.below(q.len() as u64) as usize
            } else {
                0
            };
            Op::Erase {
                to,
                id: q.remove(i),
            }
        } else {
            self.next_id += 1;
            q.push(self.next_id);
            Op::Append {
                to,
                id: self.next_id,
            }
        }
    }
}

fn body(id: u64) -> Vec<u8> {
    let len = 20 + (id * 7919 % 300) as usize;
    (0..len).map(|i| (id as usize + i) as u8).collect()
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 * 1024,
        durability: Durability::Group,
        group_interval_us: 300,
        group_records: 512,
        compact_live_ratio: 0.5,
        prefault: false,
        ..LogConfig::default()
    }
}

/// The child: runs only when the parent starts this binary with `SB_CRASH_DIR` set.
#[test]
#[ignore = "child process of crash_recovery_keeps_everything_durable"]
fn crash_child() {
    let (Ok(dir), Ok(seed)) = (
        std::env::var("SB_CRASH_DIR"),
        std::env::var("SB_CRASH_SEED"),
    ) else {
        return;
    };
    let mut ops = Ops::new(seed.parse().unwrap());
    let (mut log, _) = Log::open(&dir, config(), NOW).unwrap();
    // Ops completed so far, in a mapped file: it survives SIGKILL like the log does.
    let progress = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(format!("{dir}.progress"))
        .unwrap();
    progress.set_len(8).unwrap();
    // SAFETY: a private scratch file of this process; nobody truncates it.
    let mut done = unsafe { memmap2::MmapMut::map_mut(&progress) }.unwrap();
    let mut seqs: BTreeMap<u64, MsgSeq> = BTreeMap::new();
    let mut inflight: VecDeque<(u64, storage::Lsn, u64)> = VecDeque::new();
    let mut out = std::io::stdout().lock();
    let started = Instant::now();
    for n in 0u64..50_000_000 {
        let lsn = match ops.next() {
            Op::Append { to, id } => {
                let a = log.append_message(&msg(to, 99, id, &body(id))).unwrap();
                seqs.insert(id, a.seq);
                a.lsn
            }
            Op::Erase { to, id } => {
                let seq = seqs.remove(&id).unwrap();
                log.erase(user(to), seq).unwrap().expect("pending")
            }
        };
        done[..8].copy_from_slice(&(n + 1).to_le_bytes());
        inflight.push_back((n, lsn, ops.next_id));
        if n % 64 == 0 {
            log.maintain(NOW, 64 * 1024).unwrap();
        }
        if n % 256 == 0 {
            let durable = log.durable();
            let mut last = None;
            while inflight.front().is_some_and(|&(_, l, _)| l <= durable) {
                last = inflight.pop_front().map(|(n, _, id)| (n, id));
            }
            if let Some((n, id)) = last {
                writeln!(out, "durable {n} {id}").unwrap();
                out.flush().unwrap();
            }
            if started.elapsed() > Duration::from_secs(20) {
                break; // the parent kills long before this
            }
        }
    }
}

fn one_round(round: u64, seed: u64) -> (u64, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SB_CRASH_DIR", dir.path())
        .env("SB_CRASH_SEED", seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let reader = {
        let lines = Arc::clone(&lines);
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("durable ") {
                    let (n, id) = rest.split_once(' ').expect("durable N ID");
                    lines
                        .lock()
                        .unwrap()
                        .push((n.parse().unwrap(), id.parse().unwrap()));
                }
            }
        })
    };
    // Wait until the child is under way, then kill it at a random moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "child never reported");
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut rng = Rng(seed ^ 0xDEAD);
    std::thread::sleep(Duration::from_millis(10 + rng.below(400)));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    let (durable_op, durable_id) = *lines.lock().unwrap().last().unwrap();

    // Ops the child completed (op `completed` may have been half done at the kill).
    let progress = std::fs::read(format!("{}.progress", dir.path().display())).unwrap();
    let completed = u64::from_le_bytes(progress[..8].try_into().unwrap());
    let _ = std::fs::remove_file(format!("{}.progress", dir.path().display()));
    assert!(
        completed > durable_op,
        "round {round} seed {seed}: progress {completed} behind durable {durable_op}"
    );

    // Replay the same operations. Required (the contract): every append up to
    // the last durable op is there unless erased, every erase up to it sticks. Also true
    // for a process crash, since the page cache survives it: every completed op counts,
    // and the one in progress may or may not have happened.
    let mut ops = Ops::new(seed);
    let mut must: BTreeSet<(u64, u64)> = BTreeSet::new(); // appended, not erased (completed ops)
    let mut must_not: BTreeSet<(u64, u64)> = BTreeSet::new(); // erased by a completed op
    let mut maybe: Option<(u64, u64)> = None; // the op in progress
    let mut durable_present = 0usize;
    for n in 0..=completed {
        let op = ops.next();
        if n == durable_op {
            assert_eq!(
                ops.next_id, durable_id,
                "round {round} seed {seed}: the replay diverged from the child"
            );
            durable_present = must.len() + usize::from(matches!(op, Op::Append { .. }));
        }
        match (op, n == completed) {
            (Op::Append { to, id }, false) => {
                must.insert((to, id));
            }
            (Op::Erase { to, id }, false) => {
                must.remove(&(to, id));
                must_not.insert((to, id));
            }
            (Op::Append { to, id } | Op::Erase { to, id }, true) => maybe = Some((to, id)),
        }
    }
    // The op in progress may or may not have landed: its message is checked neither way.
    if let Some((to, id)) = maybe {
        must.remove(&(to, id));
    }
    let (log, report) = Log::open(dir.path(), config(), NOW)
        .unwrap_or_else(|e| panic!("round {round} seed {seed}: reopen failed: {e}"));
    assert_eq!(
        report.skipped_ranges, 0,
        "round {round} seed {seed}: {report:?}"
    );
    let mut found = BTreeSet::new();
    for to in 1..=USERS {
        let mut last_id = 0;
        for m in log.pending(user(to), NOW) {
            assert_eq!(
                m.body,
                &body(m.msg_id)[..],
                "round {round} seed {seed}: body of {}",
                m.msg_id
            );
            assert!(m.msg_id > last_id, "round {round} seed {seed}: order");
            last_id = m.msg_id;
            found.insert((to, m.msg_id));
        }
    }
    if let Some((to, id)) = maybe {
        found.remove(&(to, id));
    }
    let lost: Vec<_> = must.difference(&found).take(20).collect();
    let back: Vec<_> = must_not.intersection(&found).take(20).collect();
    let extra: Vec<_> = found.difference(&must).take(20).collect();
    if !(lost.is_empty() && back.is_empty() && extra.is_empty()) {
        drop(log);
        let kept = dir.keep();
        panic!(
            "round {round} seed {seed} (durable op {durable_op}, completed {completed}, kept {}): \
             lost {lost:?}; erased but back {back:?}; never stored {extra:?}",
            kept.display()
        );
    }
    (completed - durable_op, durable_present)
}

#[test]
fn crash_recovery_keeps_everything_durable() {
    let rounds: u64 = std::env::var("CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut ops_total = 0;
    for round in 0..rounds {
        let seed = base.wrapping_add(round.wrapping_mul(0x9E37_79B9));
        let (beyond, live) = one_round(round, seed);
        ops_total += beyond;
        eprintln!("round {round}: seed {seed}: {live} messages pending at the last durable op; killed {beyond} ops later");
    }
    eprintln!("{rounds} rounds passed; {ops_total} ops done after the last durable report in all");
}

/// The child's workload without the kill: after a clean close, recovery must give back
/// exactly the messages the model says are pending (checks compaction + recovery alone).
#[test]
fn the_crash_workload_recovers_exactly_after_a_clean_close() {
    let seeds: u64 = std::env::var("CLEAN_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for seed in 0..seeds {
        clean_round(42 + seed);
    }
}

fn clean_round(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut ops = Ops::new(seed);
    let (mut log, _) = Log::open(dir.path(), config(), NOW).unwrap();
    let mut seqs: BTreeMap<u64, MsgSeq> = BTreeMap::new();
    let mut present: BTreeSet<(u64, u64)> = BTreeSet::new();
    for n in 0u64..150_000 {
        match ops.next() {
            Op::Append { to, id } => {
                seqs.insert(
                    id,
                    log.append_message(&msg(to, 99, id, &body(id))).unwrap().seq,
                );
                present.insert((to, id));
            }
            Op::Erase { to, id } => {
                log.erase(user(to), seqs.remove(&id).unwrap())
                    .unwrap()
                    .expect("pending");
                present.remove(&(to, id));
            }
        }
        if n % 64 == 0 {
            log.maintain(NOW, 64 * 1024).unwrap();
        }
        if n % 10_000 == 0 {
            let live: BTreeSet<(u64, u64)> = (1..=USERS)
                .flat_map(|to| log.pending(user(to), NOW).map(move |m| (to, m.msg_id)))
                .collect();
            assert_eq!(live, present, "in memory, seed {seed} op {n}");
        }
    }
    // Segments are deleted once the copies compaction made are durable: let the flusher
    // catch up (it runs at idle priority and may have been starved by the other tests)
    // and maintenance finish, so that deletion is checked whatever the machine did.
    assert!(log.wait_durable(log.written(), Duration::from_secs(60)));
    for _ in 0..1000 {
        if !log.maintain(NOW, 1 << 20).unwrap().more {
            break;
        }
    }
    let stats = log.stats();
    assert!(
        stats.compacted_records > 0 && stats.segments_deleted > 0,
        "{stats:?}"
    );
    drop(log);
    let (log, report) = Log::open(dir.path(), config(), NOW).unwrap();
    assert!(report.clean(), "{report:?}");
    let live: BTreeSet<(u64, u64)> = (1..=USERS)
        .flat_map(|to| log.pending(user(to), NOW).map(move |m| (to, m.msg_id)))
        .collect();
    let lost: Vec<_> = present.difference(&live).take(20).collect();
    let extra: Vec<_> = live.difference(&present).take(20).collect();
    assert!(
        lost.is_empty() && extra.is_empty(),
        "seed {seed}: lost {lost:?} extra {extra:?}"
    );
}
