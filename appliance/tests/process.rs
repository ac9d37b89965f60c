//! Process tuning of the real `switchboard serve`: jemalloc transparent huge pages on and
//! off, realtime scheduling of the gateway workers, and the profile check at start.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn start(dir: &std::path::Path, toml: &str) -> (Child, Vec<String>) {
    let cfg = dir.join("p.toml");
    std::fs::write(&cfg, toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(dir.join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = vec![];
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline);
        let l = lines.next().expect("serve exited").unwrap();
        let done = l.starts_with("switchboard: listening on");
        out.push(l);
        if done {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, out)
}

fn stop(mut child: Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

fn anon_huge_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    s.lines()
        .find(|l| l.starts_with("AnonHugePages:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

fn thp_available() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|s| !s.contains("[never]"))
}

#[test]
fn jemalloc_uses_transparent_huge_pages_and_can_be_told_not_to() {
    if !thp_available() {
        eprintln!("SKIPPED: transparent huge pages are off on this kernel");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (child, out) = start(dir.path(), "workers = 1\nshards = 1\n");
    let on = anon_huge_kb(child.id());
    assert!(
        out.iter()
            .any(|l| l.contains("AnonHugePages") && l.contains("thp always")),
        "{out:?}"
    );
    stop(child);
    assert!(on > 0, "AnonHugePages {on} kB with huge_pages = true");

    let dir = tempfile::tempdir().unwrap();
    let (child, out) = start(
        dir.path(),
        "workers = 1\nshards = 1\n[process]\nhuge_pages = false\n",
    );
    let off = anon_huge_kb(child.id());
    assert!(out.iter().any(|l| l.contains("thp never")), "{out:?}");
    stop(child);
    assert_eq!(off, 0, "AnonHugePages with huge_pages = false");
}

/// Scheduling policy (field 41 of /proc/PID/task/TID/stat) of the threads named `prefix*`.
fn policies(pid: u32, prefix: &str) -> Vec<u32> {
    let mut out = vec![];
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let comm = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        if comm.trim().starts_with(prefix) {
            let stat = std::fs::read_to_string(t.join("stat")).unwrap();
            let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
                .split_whitespace()
                .collect();
            out.push(rest[38].parse().unwrap());
        }
    }
    out
}

#[test]
fn gateway_workers_run_realtime_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rt.toml");
    std::fs::write(
        &cfg,
        "workers = 2\nshards = 1\n[process]\nrealtime_priority = 10\npin_threads = true\n",
    )
    .unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(check.status.success());
    // Is SCHED_FIFO permitted here? (root or CAP_SYS_NICE)
    let p = libc::sched_param { sched_priority: 1 };
    let permitted = std::thread::spawn(move || {
        // SAFETY: changes only this scratch thread's policy.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) == 0 }
    })
    .join()
    .unwrap();
    if !permitted {
        // Then serve must refuse clearly.
        let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&cfg)
            .arg("--data")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("not permitted"));
        return;
    }
    let (child, _) = start(
        dir.path(),
        "workers = 2\nshards = 1\n[process]\nrealtime_priority = 10\npin_threads = true\n",
    );
    let gw = policies(child.id(), "gateway-");
    let shards = policies(child.id(), "shard-");
    stop(child);
    assert_eq!(gw, vec![libc::SCHED_FIFO as u32; 2], "gateway workers");
    assert_eq!(shards, vec![libc::SCHED_OTHER as u32], "shards stay normal");
}

#[test]
fn the_host_is_checked_against_the_configured_profile_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("p.toml");
    std::fs::write(
        &cfg,
        "workers = 1\nshards = 1\n[process]\ntune_profile = \"linux-1m\"\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert!(
        first.contains("host below profile linux-1m") || first.contains("open-files limit"),
        "{first}"
    );
}

#[test]
fn process_stats_report_huge_pages() {
    let line = switchboard::process::process_stats();
    assert!(
        line.contains("AnonHugePages") && line.contains("rss"),
        "{line}"
    );
    assert!(!line.contains('?'), "readable on Linux: {line}");
}
