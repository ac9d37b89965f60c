//! Criterion: appends/s of 100-byte records (`none`, `group` at 1 ms) and recovery scan
//! throughput. `cargo bench -p storage --bench append`. Figures in BENCHMARKS.md.

// The appliance's allocator, so the figures are the product's.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use storage::{Durability, Log, LogConfig, NewMessage, UserId};

const NOW: u64 = 1_800_000_000_000;
/// 16-byte record header + 48 bytes of message fields + 36 bytes of body = 100 bytes.
const BODY: [u8; 36] = [0x42; 36];

fn config(durability: Durability) -> LogConfig {
    LogConfig {
        durability,
        shard_messages_max: u64::MAX / 2,
        shard_bytes_max: u64::MAX / 2,
        ..LogConfig::default()
    }
}

fn append_n(log: &mut Log, n: u64, users: u64) {
    for i in 0..n {
        let to = UserId::new(1 + i % users).unwrap();
        log.append_message(&NewMessage {
            recipient: to,
            sender: to,
            msg_id: i,
            timestamp_ms: NOW,
            expiry_ms: None,
            body: &BODY,
        })
        .unwrap();
    }
}

fn appends(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_100B");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    for (name, d) in [("none", Durability::None), ("group_1ms", Durability::Group)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().unwrap();
                let (mut log, _) = Log::open(dir.path(), config(d), NOW).unwrap();
                let start = Instant::now();
                append_n(&mut log, iters, 100_000);
                let took = start.elapsed();
                drop(log);
                took
            })
        });
    }
    g.finish();
}

fn recovery(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let records = 2_600_000u64; // ~260 MB of 100-byte records, 4 segments
    {
        let (mut log, _) = Log::open(dir.path(), config(Durability::None), NOW).unwrap();
        append_n(&mut log, records, 100_000);
    }
    let mut g = c.benchmark_group("recovery");
    g.throughput(Throughput::Bytes(records * 104));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("scan_260MB", |b| {
        b.iter(|| {
            let (log, report) = Log::open(dir.path(), config(Durability::None), NOW).unwrap();
            assert_eq!(report.messages_live, records);
            drop(log);
        })
    });
    g.finish();
}

criterion_group!(benches, appends, recovery);
criterion_main!(benches);
