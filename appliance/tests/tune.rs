//! `switchboard tune` for real: apply and roll back network keys inside a fresh network
//! namespace (net.* keys are per namespace, so the host is untouched), a key the kernel
//! lacks reported and not fatal, check's exit code. Skipped with a message where
//! namespaces cannot be created.

use std::process::{Command, Output};

const PROFILE: &str = r#"name = "netns-test"
os = "linux"
description = "per-namespace keys only"

[[entry]]
key = "net.core.somaxconn"
value = "12345"
reason = "test"
source = "test"

[[entry]]
key = "net.ipv4.tcp_max_syn_backlog"
value = "23456"
reason = "test"
source = "test"

[[entry]]
key = "net.ipv4.ip_local_port_range"
value = "2000 64000"
cmp = "range"
reason = "test"
source = "test"

[[entry]]
key = "net.ipv4.tcp_rmem"
value = "4096 4096 65536"
cmp = "max"
reason = "test"
source = "test"

[[entry]]
key = "net.switchboard.no_such_key"
value = "1"
reason = "a key this kernel does not have"
source = "test"
"#;

struct Netns(String);

impl Netns {
    fn create() -> Option<Netns> {
        let name = format!("sbtune{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Netns(name))
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .unwrap()
    }

    fn read(&self, key: &str) -> String {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let out = self.run(&["cat", &path]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn host_read(key: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/")))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn apply_and_rollback_inside_a_network_namespace() {
    let Some(ns) = Netns::create() else {
        eprintln!("SKIPPED: cannot create a network namespace here (needs root and iproute2)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("netns.toml");
    std::fs::write(&profile, PROFILE).unwrap();
    let state = dir.path().join("state.toml");
    let bin = env!("CARGO_BIN_EXE_switchboard");
    let keys = [
        "net.core.somaxconn",
        "net.ipv4.tcp_max_syn_backlog",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_rmem",
    ];
    let before: Vec<String> = keys.iter().map(|k| ns.read(k)).collect();
    let host_before: Vec<String> = keys.iter().map(|k| host_read(k)).collect();

    // check: short, exit 1; the missing key is reported, not fatal.
    let out = ns.run(&[bin, "tune", "check", profile.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("net.switchboard.no_such_key: not on this kernel"),
        "{text}"
    );

    // apply without --yes changes nothing.
    let out = ns.run(&[
        bin,
        "tune",
        "apply",
        profile.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("dry run"));
    assert_eq!(ns.read("net.core.somaxconn"), before[0]);
    assert!(!state.exists());

    // apply --yes.
    let out = ns.run(&[
        bin,
        "tune",
        "apply",
        profile.to_str().unwrap(),
        "--yes",
        "--state",
        state.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ns.read("net.core.somaxconn"), "12345");
    assert_eq!(ns.read("net.ipv4.tcp_max_syn_backlog"), "23456");
    assert_eq!(ns.read("net.ipv4.ip_local_port_range"), "2000 64000");
    assert_eq!(ns.read("net.ipv4.tcp_rmem"), "4096 4096 65536");
    let out = ns.run(&[bin, "tune", "check", profile.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "after apply the namespace meets the profile: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let host_during: Vec<String> = keys.iter().map(|k| host_read(k)).collect();
    assert_eq!(
        host_during, host_before,
        "the host's own namespace is untouched"
    );

    // rollback restores every value and removes the state file.
    let out = ns.run(&[bin, "tune", "rollback", "--state", state.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after: Vec<String> = keys.iter().map(|k| ns.read(k)).collect();
    assert_eq!(after, before);
    assert!(!state.exists());
    let out = ns.run(&[bin, "tune", "rollback", "--state", state.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "nothing to roll back is a clear error"
    );
}

#[test]
fn unknown_profiles_and_formats_are_clear_errors() {
    let bin = env!("CARGO_BIN_EXE_switchboard");
    let out = Command::new(bin)
        .args(["tune", "check", "no-such-profile"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("linux-1m"),
        "lists the built-in profiles"
    );
    let out = Command::new(bin)
        .args(["tune", "render", "linux-1m", "--format", "loader.conf"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(bin)
        .args(["tune", "render", "linux-1m", "--format", "yaml"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("sysctl.d"));
}
