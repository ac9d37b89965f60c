//! First figures for BENCHMARKS.md (the `bench` crate will replace this):
//! 1. server memory per idle TLS connection: RSS of `switchboard serve` before and after
//!    N connections that completed TLS 1.3 + Hello/Welcome and then sit idle;
//! 2. delivered messages per second between P sender→receiver pairs, window W.
//!
//! `cargo build --release --bins && cargo run --release -p switchboard --example first_figures -- [N] [P] [SECONDS]`

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Client, Incoming, Trust};
use wire::{Phone, Pin};

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

    // 2. Pairs: register 2P users through the SMS log, then send with a window.
    let sms = Arc::new(dir.path().join("data/sms.log"));
    let register = move |c: &mut Client, p: Phone| {
        c.request_pin(p, t).unwrap();
        let pin = loop {
            let text = std::fs::read_to_string(&*sms).unwrap_or_default();
            if let Some(pin) = text.lines().rev().find_map(|l| {
                let mut it = l.split_whitespace().skip(1);
                (it.next() == Some(&p.to_string()))
                    .then(|| it.next())
                    .flatten()
            }) {
                break pin.parse().unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let key = c.verify(p, Pin::new(pin).unwrap(), t).unwrap();
        c.login(p, key, t).unwrap();
    };
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicU64::new(0));
    let mut threads = vec![];
    for i in 0..pairs {
        let (addr, trust, delivered, stop, ready) = (
            addr.clone(),
            trust.clone(),
            delivered.clone(),
            stop.clone(),
            ready.clone(),
        );
        let register = register.clone();
        threads.push(std::thread::spawn(move || {
            let (a, b) = (
                Phone::new(15560000000 + 2 * i).unwrap(),
                Phone::new(15560000001 + 2 * i).unwrap(),
            );
            let mut ca = Client::connect(&addr, &trust, "localhost", t).unwrap();
            let mut cb = Client::connect(&addr, &trust, "localhost", t).unwrap();
            register(&mut ca, a);
            register(&mut cb, b);
            ready.fetch_add(1, Ordering::AcqRel);
            while ready.load(Ordering::Acquire) < pairs {
                std::thread::sleep(Duration::from_millis(5));
            }
            let (window, mut next, mut inflight) = (10u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                while inflight < window {
                    ca.send(b, next, &[0x42; 100]).unwrap();
                    next += 1;
                    inflight += 1;
                }
                if let Some(Incoming::Deliver { seq, .. }) =
                    cb.next(Duration::from_millis(200)).unwrap()
                {
                    cb.ack(seq).unwrap();
                    inflight -= 1;
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
                // Drain the sender's ticks and receipts (acking receipts erases them).
                while let Some(m) = ca.next(Duration::ZERO).unwrap() {
                    if let Incoming::Receipt { seq, .. } = m {
                        ca.ack(seq).unwrap();
                    }
                }
            }
        }));
    }
    while ready.load(Ordering::Acquire) < pairs {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1)); // warm-up
    let (d0, c0, t0) = (
        delivered.load(Ordering::Relaxed),
        cpu_ticks(pid),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(seconds));
    let (d1, c1, el) = (
        delivered.load(Ordering::Relaxed),
        cpu_ticks(pid),
        t0.elapsed(),
    );
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        let _ = th.join();
    }
    let msgs = (d1 - d0) as f64;
    println!(
        "pairs: {pairs} pairs, window 10, 100-byte bodies: {:.0} delivered msgs/s over {:.0} s; server CPU {:.1} us per message",
        msgs / el.as_secs_f64(),
        el.as_secs_f64(),
        (c1 - c0) as f64 * 10_000.0 / msgs
    );
    // SAFETY: stopping our own child.
    let _ = child.kill();
    let _ = child.wait();
}
