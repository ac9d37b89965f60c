//! Short runs of every scenario against a server the bench starts itself, so the tool
//! cannot rot. No timing is asserted: only that each scenario completes, reports its
//! figures, and that what it reports is consistent (every queued message delivered,
//! every client up).
//!
//! Needs the `switchboard` binary next to `switchboard-bench` (`cargo test --workspace`
//! builds both).

use std::path::{Path, PathBuf};
use std::process::Command;

fn bench() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_switchboard-bench"))
}

fn run(args: &[&str], dir: &Path) -> (serde_json::Value, String) {
    let exe = bench();
    let sb = exe.with_file_name("switchboard");
    assert!(
        sb.exists(),
        "{} missing: run `cargo build --release --bin switchboard` (or the workspace tests)",
        sb.display()
    );
    let json = dir.join(format!("{}.json", args[0]));
    let out = Command::new(&exe)
        .args(args)
        .arg("--json")
        .arg(&json)
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["scenario"], args[0]);
    assert!(v["host"]["cores"].as_u64().unwrap() >= 1);
    (v, stdout)
}

fn figure(v: &serde_json::Value, name: &str) -> f64 {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[0] == name)
        .unwrap_or_else(|| panic!("no figure {name:?} in {v}"))[1]
        .as_f64()
        .unwrap()
}

#[test]
fn pairs_smoke_with_chart() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("pairs.svg");
    let (v, out) = run(
        &[
            "pairs",
            "--pairs",
            "4",
            "--window",
            "2",
            "--duration",
            "1",
            "--warmup",
            "0.5",
            "--runs",
            "2",
            "--svg",
            svg.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(out.contains("delivered (median)"), "{out}");
    assert!(figure(&v, "delivered (median)") > 0.0);
    assert!(figure(&v, "run 2: delivered") > 0.0);
    assert_eq!(figure(&v, "refused sends"), 0.0);
    // The server's cost came from /proc of its process.
    assert!(v["server_after"]["procs"][0]["rss_bytes"].as_u64().unwrap() > 0);
    assert!(figure(&v, "server CPU per message (median)") > 0.0);
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("latency by percentile"));
}

#[test]
fn offline_smoke_delivers_everything_queued() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = run(
        &[
            "offline",
            "--messages",
            "2000",
            "--users",
            "20",
            "--senders",
            "4",
        ],
        dir.path(),
    );
    assert_eq!(figure(&v, "delivered"), 2000.0);
    // The server said at login how many were waiting: all of them.
    assert_eq!(figure(&v, "pending reported at login"), 2000.0);
    assert!(figure(&v, "drain rate") > 0.0);
}

#[test]
fn storm_smoke_all_clients_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (v, _) = run(
        &[
            "storm",
            "--clients",
            "200",
            "--per-child",
            "100",
            "--pairs",
            "2",
            "--before",
            "0.5",
            "--keys",
            keys.to_str().unwrap(),
        ],
        dir.path(),
    );
    // Pairs and clients registered once; the clients came back after the storm.
    assert_eq!(std::fs::read_to_string(&keys).unwrap().lines().count(), 204);
    assert_eq!(figure(&v, "clients"), 200.0);
    assert!(figure(&v, "all back after") > 0.0);
    assert!(figure(&v, "pairs before p99") > 0.0);
}

#[test]
fn connect_smoke_children_sources_and_saved_keys() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let args = [
        "connect",
        "--clients",
        "300",
        "--per-child",
        "120",
        "--hold",
        "1",
        "--keys",
        keys.to_str().unwrap(),
    ];
    let (v, _) = run(&args, dir.path());
    assert_eq!(v["params"]["children"], 3);
    assert_eq!(figure(&v, "clients logged in and held"), 300.0);
    assert_eq!(figure(&v, "failed"), 0.0);
    // Reported; at 300 connections its value is noise, so only its presence is checked.
    figure(&v, "server memory per connection (anonymous RSS)");
    // Every phone's key was saved, once.
    let saved = std::fs::read_to_string(&keys).unwrap();
    assert_eq!(saved.lines().count(), 300);
    // A second run (a new server, so the saved keys are unknown there) is refused
    // cleanly by the server: the clients fail to log in and the run says so.
    let out = Command::new(bench())
        .args(args)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("did not log in"), "{text}");
}

#[test]
fn bad_arguments_are_refused_with_the_reason() {
    let out = Command::new(bench())
        .args(["pairs", "--body", "4"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--body at least 8"));
    let out = Command::new(bench())
        .args(["connect", "--clients", "10"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --keys"));
    let out = Command::new(bench())
        .args([
            "connect",
            "--clients",
            "10",
            "--per-child",
            "50000",
            "--keys",
            "k",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("19,900"));
    // A server that is not there: a clear error, not a hang.
    let out = Command::new(bench())
        .args([
            "pairs",
            "--addr",
            "127.0.0.1:1",
            "--fingerprint",
            &"00".repeat(32),
            "--pairs",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not log in"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bench killed outright (its `Drop` never runs) takes the server it started with it.
#[cfg(target_os = "linux")]
#[test]
fn a_killed_bench_leaves_no_server_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bench())
        .args(["pairs", "--pairs", "2", "--runs", "1", "--duration", "60"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The server: the bench's child process running `switchboard serve`.
    let server_of = |parent: u32| -> Option<u32> {
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let serve = cmd.split(|&b| b == 0).any(|a| a == b"serve");
            (ppid == parent && serve).then_some(pid)
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let server = loop {
        if let Some(pid) = server_of(child.id()) {
            break pid;
        }
        assert!(std::time::Instant::now() < deadline, "no server started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while alive(server) {
        assert!(
            std::time::Instant::now() < deadline,
            "the server (pid {server}) outlived the bench"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
