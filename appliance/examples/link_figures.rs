//! The cost of the TCP link (private NIC) against the in-process link: the same pairs
//! workload against `switchboard serve` (1 worker, 1 shard) and against a split
//! deployment on loopback (`switchboard router` + `switchboard gateway`, 1 worker), in
//! the same run. `cargo build --release --bins --examples && target/release/examples/link_figures [PAIRS] [WINDOW] [SECONDS] [ROUNDS]`

#[path = "common/pairs.rs"]
mod pairs;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use client::Trust;

fn start(args: &[&str], ready: &str) -> (Child, Vec<String>) {
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("switchboard");
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut it = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut lines = vec![];
    loop {
        let l = it.next().unwrap().unwrap();
        let done = l.starts_with(ready);
        lines.push(l);
        if done {
            break;
        }
    }
    std::thread::spawn(move || for _ in it {});
    (child, lines)
}

fn field(lines: &[String], prefix: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (pairs, window, seconds, rounds) = (
        *args.first().unwrap_or(&50),
        *args.get(1).unwrap_or(&10),
        *args.get(2).unwrap_or(&10),
        *args.get(3).unwrap_or(&3),
    );
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "workers = 1\nshards = 1\n[router]\npin_requests_per_source_hour = 1000000\n[cluster]\nsecret = \"link-figures-secret-0123\"\n\
             [[cluster.router]]\nid = 0\naddress = \"127.0.0.1:{port}\"\npartitions = \"0-1023\"\n[[cluster.gateway]]\nid = 1\nsource = \"127.0.0.1\"\n"
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let mut results: Vec<(&str, pairs::PairsResult)> = vec![];
    for round in 0..rounds {
        // In-process.
        let data = dir.path().join(format!("serve-{round}"));
        let (mut s, lines) = start(
            &[
                "serve",
                "--config",
                cfg,
                "--listen",
                "127.0.0.1:0",
                "--data",
                data.to_str().unwrap(),
            ],
            "switchboard: listening on",
        );
        let trust = Trust::Fingerprint(field(
            &lines,
            "switchboard: certificate sha256 fingerprint ",
        ));
        let r = pairs::run(
            &field(&lines, "switchboard: listening on "),
            &trust,
            vec![data.join("sms.log")],
            pairs,
            window,
            seconds,
            15570000000 + round * 10_000,
        );
        let _ = s.kill();
        let _ = s.wait();
        results.push(("in-process", r));
        // Split over the TCP link.
        let (rd, gd) = (
            dir.path().join(format!("router-{round}")),
            dir.path().join(format!("gw-{round}")),
        );
        let (mut r0, _) = start(
            &[
                "router",
                "--id",
                "0",
                "--config",
                cfg,
                "--data",
                rd.to_str().unwrap(),
            ],
            "switchboard: router 0 listening",
        );
        let (mut g, lines) = start(
            &[
                "gateway",
                "--id",
                "1",
                "--config",
                cfg,
                "--listen",
                "127.0.0.1:0",
                "--data",
                gd.to_str().unwrap(),
            ],
            "switchboard: gateway 1 listening",
        );
        let trust = Trust::Fingerprint(field(
            &lines,
            "switchboard: certificate sha256 fingerprint ",
        ));
        let r = pairs::run(
            &field(&lines, "switchboard: gateway 1 listening on "),
            &trust,
            vec![rd.join("sms.log")],
            pairs,
            window,
            seconds,
            15580000000 + round * 10_000,
        );
        for c in [&mut g, &mut r0] {
            let _ = c.kill();
            let _ = c.wait();
        }
        results.push(("tcp link", r));
    }
    for (name, r) in &results {
        println!("{name:<10} {pairs} pairs, window {window}: {:>8.0} msgs/s, latency p50 {:>6} us, p99 {:>6} us ({:.0} s)", r.msgs_per_s, r.p50_us, r.p99_us, r.seconds);
    }
    for name in ["in-process", "tcp link"] {
        let mut v: Vec<&pairs::PairsResult> = results
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, r)| r)
            .collect();
        v.sort_by(|a, b| a.msgs_per_s.partial_cmp(&b.msgs_per_s).unwrap());
        let m = v[v.len() / 2];
        println!(
            "median {name:<10} {:>8.0} msgs/s, p50 {} us, p99 {} us",
            m.msgs_per_s, m.p50_us, m.p99_us
        );
    }
}
