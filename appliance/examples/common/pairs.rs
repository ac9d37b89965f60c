//! The pairs workload shared by the measuring examples: P sender→receiver pairs, each
//! with a window of W unacknowledged messages of 100 bytes; reports delivered msgs/s
//! and the send→deliver latency (HDR histogram, measured in the receiving thread from a
//! timestamp the sender puts in the body).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{Client, Incoming, Trust};
use wire::{Phone, Pin};

pub struct PairsResult {
    pub msgs_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub seconds: f64,
}

fn pin(logs: &[PathBuf], p: Phone) -> Pin {
    loop {
        for log in logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(pin) = text.lines().rev().find_map(|l| {
                let mut it = l.split_whitespace().skip(1);
                (it.next() == Some(&p.to_string()))
                    .then(|| it.next())
                    .flatten()
            }) {
                return Pin::new(pin.parse().unwrap()).unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `pairs` pairs against `addr` for `seconds` (after 1 s of warm-up). Phones start
/// at `first_phone`; PINs are read from any of `sms_logs`.
#[allow(clippy::too_many_arguments)] // the workload's parameters
pub fn run(
    addr: &str,
    trust: &Trust,
    sms_logs: Vec<PathBuf>,
    pairs: u64,
    window: u64,
    seconds: u64,
    first_phone: u64,
) -> PairsResult {
    let t = Duration::from_secs(10);
    let epoch = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let logs = Arc::new(sms_logs);
    let mut threads = vec![];
    for i in 0..pairs {
        let (addr, trust, delivered, stop, ready, measuring, hist, logs) = (
            addr.to_string(),
            trust.clone(),
            delivered.clone(),
            stop.clone(),
            ready.clone(),
            measuring.clone(),
            hist.clone(),
            logs.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let (a, b) = (
                Phone::new(first_phone + 2 * i).unwrap(),
                Phone::new(first_phone + 2 * i + 1).unwrap(),
            );
            let mut ca = Client::connect(&addr, &trust, "localhost", t).unwrap();
            let mut cb = Client::connect(&addr, &trust, "localhost", t).unwrap();
            for (c, p) in [(&mut ca, a), (&mut cb, b)] {
                c.request_pin(p, t).unwrap();
                let key = c.verify(p, pin(&logs, p), t).unwrap();
                c.login(p, key, t).unwrap();
            }
            ready.fetch_add(1, Ordering::AcqRel);
            while ready.load(Ordering::Acquire) < pairs {
                std::thread::sleep(Duration::from_millis(5));
            }
            let (mut next, mut inflight) = (0u64, 0u64);
            let mut local =
                hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            while !stop.load(Ordering::Relaxed) {
                while inflight < window {
                    let mut body = [0x42u8; 100];
                    body[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
                    ca.send(b, next, &body).unwrap();
                    next += 1;
                    inflight += 1;
                }
                if let Some(Incoming::Deliver { seq, body, .. }) =
                    cb.next(Duration::from_millis(200)).unwrap()
                {
                    cb.ack(seq).unwrap();
                    inflight -= 1;
                    if measuring.load(Ordering::Relaxed) {
                        let sent = u64::from_le_bytes(body[..8].try_into().unwrap());
                        let _ = local.record(
                            ((epoch.elapsed().as_nanos() as u64).saturating_sub(sent) / 1000)
                                .max(1),
                        );
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                while let Some(m) = ca.next(Duration::ZERO).unwrap() {
                    if let Incoming::Receipt { seq, .. } = m {
                        ca.ack(seq).unwrap();
                    }
                }
            }
            hist.lock().unwrap().add(&local).unwrap();
        }));
    }
    while ready.load(Ordering::Acquire) < pairs {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1)); // warm-up
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    measuring.store(false, Ordering::Relaxed);
    let el = t0.elapsed().as_secs_f64();
    let n = delivered.load(Ordering::Relaxed) as f64;
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        let _ = th.join();
    }
    let h = hist.lock().unwrap();
    PairsResult {
        msgs_per_s: n / el,
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        seconds: el,
    }
}
