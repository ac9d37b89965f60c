//! A log on a saturated CPU: how long appended records wait to be durable (what a
//! sender's acknowledgement waits for) and how long the writer waits at segment switches,
//! while `SPINNERS` threads at normal priority keep every core busy. The writer appends
//! `RATE` messages a second in 1 ms ticks and runs `maintain` each tick, as the router
//! does; the log is in `group` mode with its background threads at idle priority (the
//! default). Bounded: `SECONDS` of load.
//! `SECONDS=10 RATE=20000 SPINNERS=4 SEGMENT_MB=4 cargo run --release -p storage --example saturated`
mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::env_or;
use hdrhistogram::Histogram;
use storage::{Durability, Log, LogConfig, NewMessage, UserId};

fn main() {
    let seconds = env_or("SECONDS", 10).min(600);
    let rate = env_or("RATE", 20_000).clamp(1_000, 1_000_000);
    let spinners = env_or("SPINNERS", 4).min(64);
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        durability: Durability::Group,
        segment_bytes: env_or("SEGMENT_MB", 4) << 20,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(dir.path(), config, 1).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let spin: Vec<_> = (0..spinners)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();

    let mut ack_us = Histogram::<u64>::new_with_max(600_000_000, 3).unwrap();
    let mut tick_us = Histogram::<u64>::new_with_max(600_000_000, 3).unwrap();
    let mut waiting: VecDeque<(storage::Lsn, Instant)> = VecDeque::new();
    let per_tick = rate / 1000;
    let body = [0x61; 200];
    let started = Instant::now();
    let mut n = 0u64;
    let mut next_tick = started;
    while started.elapsed() < Duration::from_secs(seconds) {
        let t = Instant::now();
        for _ in 0..per_tick {
            n += 1;
            let m = NewMessage {
                recipient: UserId::new(1 + n % 1000).unwrap(),
                sender: UserId::new(5000).unwrap(),
                msg_id: n,
                timestamp_ms: 1,
                expiry_ms: None,
                body: &body,
            };
            let lsn = log.append_message(&m).unwrap().lsn;
            waiting.push_back((lsn, Instant::now()));
        }
        log.maintain(1, 1 << 20).unwrap();
        tick_us.saturating_record(t.elapsed().as_micros() as u64);
        let durable = log.durable();
        while waiting.front().is_some_and(|(lsn, _)| *lsn <= durable) {
            let (_, at) = waiting.pop_front().unwrap();
            ack_us.saturating_record(at.elapsed().as_micros() as u64);
        }
        next_tick += Duration::from_millis(1);
        if let Some(left) = next_tick.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
    }
    // Records still waiting count with what they waited so far (a lower bound).
    let unflushed = waiting.len();
    for (_, at) in waiting.drain(..) {
        ack_us.saturating_record(at.elapsed().as_micros() as u64);
    }
    stop.store(true, Ordering::Relaxed);
    for h in spin {
        h.join().unwrap();
    }
    let s = log.stats();
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "appended {n} in {:.1} s ({} spinners); not yet durable at the end: {unflushed} \
         (counted below with their wait so far)",
        started.elapsed().as_secs_f64(),
        spinners,
    );
    println!(
        "wait to durable, ms: p50 {:.2} p99 {:.2} p999 {:.2} max {:.2}",
        q(&ack_us, 0.5),
        q(&ack_us, 0.99),
        q(&ack_us, 0.999),
        ack_us.max() as f64 / 1000.0
    );
    println!(
        "writer's tick (appends + maintain), ms: p50 {:.2} p99 {:.2} max {:.2}",
        q(&tick_us, 0.5),
        q(&tick_us, 0.99),
        tick_us.max() as f64 / 1000.0
    );
    println!("{s:?}");
    log.close().unwrap();
}
