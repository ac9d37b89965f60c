//! The storage figures criterion does not give: append rate per durability policy as a
//! median of runs, p50/p99/p999 time from append to durable in `group` mode, index
//! bytes per pending message (counting allocator), recovery scan speed.
//! `cargo bench -p storage --bench log_figures`. Figures in BENCHMARKS.md.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use storage::{Durability, Log, LogConfig, NewMessage, UserId};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// The appliance's allocator (jemalloc), so the figures are the product's: among
/// other things jemalloc offsets large allocations within their page, which keeps the
/// index's many block headers from all landing in the same cache sets.
static INNER: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// SAFETY: forwards to jemalloc and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { INNER.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { INNER.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { INNER.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { INNER.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// jemalloc's options as the appliance sets them (`appliance/src/main.rs`): transparent
/// huge pages for its arenas and metadata.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 31] = b"thp:always,metadata_thp:always\0";

const NOW: u64 = 1_800_000_000_000;
const BODY: [u8; 36] = [0x42; 36]; // 100-byte records

fn config(durability: Durability) -> LogConfig {
    LogConfig {
        durability,
        shard_messages_max: u64::MAX / 2,
        shard_bytes_max: u64::MAX / 2,
        ..LogConfig::default()
    }
}

fn msg(i: u64, users: u64) -> NewMessage<'static> {
    let to = UserId::new(1 + i % users).unwrap();
    NewMessage {
        recipient: to,
        sender: to,
        msg_id: i,
        timestamp_ms: NOW,
        expiry_ms: None,
        body: &BODY,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn rate(d: Durability, n: u64, runs: usize, users: u64) -> (f64, u64, u64, u64) {
    let mut rates = vec![];
    let (mut stalls, mut stall_us, mut prefaulted) = (0, 0, 0);
    for _ in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), config(d), NOW).unwrap();
        let t = Instant::now();
        for i in 0..n {
            log.append_message(&msg(i, users)).unwrap();
        }
        rates.push(n as f64 / t.elapsed().as_secs_f64());
        let s = log.stats();
        stalls += s.prepare_stalls;
        stall_us += s.prepare_stall_us;
        prefaulted += s.prefaulted_segments;
    }
    (median(rates), stalls, stall_us, prefaulted)
}

/// Appends for `seconds`, flat out or at `per_sec`, and measures how long after each
/// (sampled) append the durable position passed it.
fn durable_latency(seconds: u64, per_sec: Option<u64>) -> (Histogram<u64>, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config(Durability::Group), NOW).unwrap();
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    let mut waiting: std::collections::VecDeque<(storage::Lsn, Instant)> =
        std::collections::VecDeque::new();
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        if let Some(r) = per_sec {
            // Pace: wait until this batch is due.
            let due = Duration::from_secs_f64(i as f64 / r as f64);
            while start.elapsed() < due {
                std::hint::spin_loop();
                let durable = log.durable();
                let now = Instant::now();
                while waiting.front().is_some_and(|(l, _)| *l <= durable) {
                    let (_, t) = waiting.pop_front().unwrap();
                    h.record((now - t).as_micros().max(1) as u64).unwrap();
                }
            }
        }
        for _ in 0..64 {
            let a = log.append_message(&msg(i, 100_000)).unwrap();
            if i % 16 == 0 {
                waiting.push_back((a.lsn, Instant::now()));
            }
            i += 1;
        }
        let durable = log.durable();
        let now = Instant::now();
        while waiting.front().is_some_and(|(l, _)| *l <= durable) {
            let (_, t) = waiting.pop_front().unwrap();
            h.record((now - t).as_micros().max(1) as u64).unwrap();
        }
    }
    let s = log.stats();
    (h, i, s.flush_us_max)
}

fn index_bytes(messages: u64, users: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        user_messages_max: messages,
        ..config(Durability::None)
    };
    let (mut log, _) = Log::open(dir.path(), cfg, NOW).unwrap();
    // Warm the log's fixed allocations (first segments) before counting.
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..messages {
        log.append_message(&msg(i, users)).unwrap();
    }
    let after = LIVE.load(Ordering::Relaxed);
    (after - before) as f64 / messages as f64
}

fn recovery(records: u64, runs: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = Log::open(dir.path(), config(Durability::None), NOW).unwrap();
        for i in 0..records {
            log.append_message(&msg(i, 100_000)).unwrap();
        }
    }
    let mut speeds = vec![];
    let mut ms = vec![];
    for _ in 0..runs {
        let (log, report) = Log::open(dir.path(), config(Durability::None), NOW).unwrap();
        assert_eq!(report.messages_live, records);
        speeds.push(report.bytes as f64 / report.elapsed.as_secs_f64() / 1e9);
        ms.push(report.elapsed.as_secs_f64() * 1e3);
        drop(log);
    }
    (median(speeds), median(ms))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; nothing to list
    }
    let quick = std::env::var("QUICK").is_ok();
    let n = if quick { 1_000_000 } else { 10_000_000 };
    let runs = if quick { 1 } else { 5 };
    // `ONLY=append,index` runs just those parts (append, always, durable, index, recovery).
    let only = std::env::var("ONLY").ok();
    let part = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|p| p == name))
    };
    println!("storage figures: 100-byte records, 64 MiB segments, {runs} runs (median)");
    for (name, d) in [
        ("none", Durability::None),
        ("group (1 ms)", Durability::Group),
    ] {
        if !part("append") {
            break;
        }
        for users in [1_000, 100_000] {
            let (r, stalls, stall_us, pre) = rate(d, n, runs, users);
            println!(
                "append {name:<13} {users:>7} recipients {:>6.2} M records/s   (prepare stalls {stalls}, {:.1} ms waited, prefaulted segments {pre})",
                r / 1e6,
                stall_us as f64 / 1e3
            );
        }
    }
    if part("always") {
        let (r, ..) = rate(
            Durability::Always,
            if quick { 2_000 } else { 20_000 },
            1,
            1_000,
        );
        println!(
            "append always        {:>6.2} k records/s   (msync per append)",
            r / 1e3
        );
    }
    for pace in [Some(100_000), Some(1_000_000), None] {
        if !part("durable") {
            break;
        }
        let (h, appended, flush_max) = durable_latency(if quick { 1 } else { 5 }, pace);
        println!(
            "group: append -> durable at {} ({:.1} M appends): p50 {} us, p99 {} us, p999 {} us, max {} us; slowest msync {} us",
            pace.map_or("full speed".to_string(), |p| format!("{p}/s")),
            appended as f64 / 1e6,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            flush_max
        );
    }
    for (m, u) in [
        (1_000_000, 1_000),
        (1_000_000, 100_000),
        (1_000_000, 500_000),
        (1_000_000, 1_000_000),
        (3_000_000, 3_000_000),
    ] {
        if !part("index") {
            break;
        }
        println!(
            "index: {m} pending over {u} users: {:.1} bytes per pending message",
            index_bytes(m, u)
        );
    }
    if !part("recovery") {
        return;
    }
    let (gbs, ms) = recovery(
        if quick { 500_000 } else { 2_600_000 },
        if quick { 1 } else { 3 },
    );
    println!("recovery scan: {gbs:.2} GB/s ({ms:.0} ms for the log, index rebuilt)");
}
