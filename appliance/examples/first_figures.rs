//! First figures for BENCHMARKS.md (the `bench` crate will replace this):
//! 1. server memory per idle TLS connection: RSS of `switchboard serve` before and after
//!    N connections that completed TLS 1.3 + Hello/Welcome and then sit idle;
//! 2. delivered messages per second between P sender→receiver pairs, window W.
//!
//! `cargo build --release --bins && cargo run --release -p switchboard --example first_figures -- [N] [P] [SECONDS]`

#[path = "common/pairs.rs"]
mod pairs;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use client::{Client, Trust};

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let n = *args.first().unwrap_or(&10_000);
    let pairs = *args.get(1).unwrap_or(&100);
    let seconds = *args.get(2).unwrap_or(&10);
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bench.toml"),
        "workers = 1\nshards = 1\n[router]\npin_requests_per_source_hour = 1000000\n[limits]\nlogin_timeout_ms = 600000\n[storage]\nsegment_bytes = 67108864\n",
    )
    .unwrap();
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("switchboard");
    let mut child = Command::new(&exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.path().join("bench.toml"))
        .arg("--data")
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (cargo build --release --bins first)",
                exe.display()
            )
        });
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut addr, mut fp) = (String::new(), String::new());
    while addr.is_empty() {
        let l = lines.next().unwrap().unwrap();
        if let Some(f) = l.strip_prefix("switchboard: certificate sha256 fingerprint ") {
            fp = f.into();
        }
        if let Some(r) = l.strip_prefix("switchboard: listening on ") {
            addr = r.split_whitespace().next().unwrap().into();
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let trust = Trust::Fingerprint(fp);
    let t = Duration::from_secs(10);
    std::thread::sleep(Duration::from_millis(500));

    // 1. Idle connections.
    let before = rss_kb(pid);
    let cpu0 = cpu_ticks(pid);
    let started = Instant::now();
    let mut idle = Vec::with_capacity(n as usize);
    for _ in 0..n {
        idle.push(Client::connect(&addr, &trust, "localhost", t).unwrap());
    }
    let took = started.elapsed();
    let cpu = cpu_ticks(pid) - cpu0;
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kb(pid);
    let per = (after - before) as f64 * 1024.0 / n as f64;
    println!(
        "idle TLS connections: {n} in {:.1} s; server RSS {before} KiB -> {after} KiB: {per:.0} bytes per connection; server CPU {:.0} us per connection set-up",
        took.as_secs_f64(),
        cpu as f64 * 10_000.0 / n as f64
    );
    drop(idle);
    std::thread::sleep(Duration::from_secs(1));

    // 2. Pairs (the shared workload, window 10).
    let c0 = cpu_ticks(pid);
    let r = pairs::run(
        &addr,
        &trust,
        vec![dir.path().join("data/sms.log")],
        pairs,
        10,
        seconds,
        15560000000,
    );
    let msgs = r.msgs_per_s * r.seconds;
    println!(
        "pairs: {pairs} pairs, window 10, 100-byte bodies: {:.0} delivered msgs/s over {:.0} s, latency p50 {} us p99 {} us; server CPU {:.1} us per message (incl. registration)",
        r.msgs_per_s,
        r.seconds,
        r.p50_us,
        r.p99_us,
        (cpu_ticks(pid) - c0) as f64 * 10_000.0 / msgs
    );
    // SAFETY: stopping our own child.
    let _ = child.kill();
    let _ = child.wait();
}
