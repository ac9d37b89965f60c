//! One message at a time, receiver blocked in a read: the bare send → deliver latency.
//! Starts its own `switchboard serve`. `target/release/examples/one_message [N]`
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use client::{Client, Incoming, Trust};
use wire::{Phone, Pin};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("switchboard");
    let mut child = Command::new(exe)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            dir.path().to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut it = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut addr, mut fp) = (String::new(), String::new());
    while addr.is_empty() {
        let l = it.next().unwrap().unwrap();
        if let Some(f) = l.strip_prefix("switchboard: certificate sha256 fingerprint ") {
            fp = f.into();
        }
        if let Some(r) = l.strip_prefix("switchboard: listening on ") {
            addr = r.split_whitespace().next().unwrap().into();
        }
    }
    let t = Duration::from_secs(5);
    let trust = Trust::Fingerprint(fp);
    let login = |p: Phone| {
        let mut c = Client::connect(&addr, &trust, "localhost", t).unwrap();
        c.request_pin(p, t).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let text = std::fs::read_to_string(dir.path().join("sms.log")).unwrap();
        let pin: u32 = text
            .lines()
            .rev()
            .find(|l| l.contains(&p.to_string()))
            .unwrap()
            .split_whitespace()
            .nth(2)
            .unwrap()
            .parse()
            .unwrap();
        let key = c.verify(p, Pin::new(pin).unwrap(), t).unwrap();
        c.login(p, key, t).unwrap();
        c
    };
    let (a, b) = (
        Phone::new(15590000001).unwrap(),
        Phone::new(15590000002).unwrap(),
    );
    let (mut ca, mut cb) = (login(a), login(b));
    let mut lat = vec![];
    for i in 0..n as u64 {
        let t0 = Instant::now();
        ca.send(b, i, b"ping").unwrap();
        match cb
            .wait_for(t, |m| matches!(m, Incoming::Deliver { .. }))
            .unwrap()
        {
            Incoming::Deliver { seq, .. } => {
                lat.push(t0.elapsed());
                cb.ack(seq).unwrap();
            }
            _ => unreachable!(),
        }
        let t1 = Instant::now();
        let _ = ca
            .wait_for(t, |m| matches!(m, Incoming::ServerAck { .. }))
            .unwrap();
        if i == 0 {
            println!("first server tick after {:?}", t1.elapsed() + lat[0]);
        }
    }
    lat.sort();
    println!(
        "send -> deliver over {n}: p50 {:?}, p90 {:?}, p99 {:?}",
        lat[n / 2],
        lat[n * 9 / 10],
        lat[n * 99 / 100]
    );
    let _ = child.kill();
    let _ = child.wait();
}
