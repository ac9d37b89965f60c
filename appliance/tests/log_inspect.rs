//! `switchboard log inspect` against real logs: clean, damaged, missing, bad config.

use std::process::Command;

use storage::{Durability, Log, LogConfig, NewMessage, UserId};

fn switchboard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
}

fn make_log(dir: &std::path::Path) {
    let config = LogConfig {
        durability: Durability::None,
        segment_bytes: 64 * 1024,
        prefault: false,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(dir, config, 1).unwrap();
    let u = UserId::new(15551234567).unwrap();
    for i in 0..10 {
        log.append_message(&NewMessage {
            recipient: u,
            sender: u,
            msg_id: i,
            timestamp_ms: u64::MAX / 4,
            expiry_ms: None,
            body: b"hello",
        })
        .unwrap();
    }
    log.put_account(b"+15551234567", b"key-hash").unwrap();
}

fn write_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("storage.toml");
    std::fs::write(&path, "segment_bytes = 65536\nprefault = false\n").unwrap();
    path
}

#[test]
fn a_clean_log_is_described_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log-0");
    make_log(&log);
    let cfg = write_config(dir.path());
    let out = switchboard()
        .args(["log", "inspect"])
        .arg(&log)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("messages_pending = 10"), "{text}");
    assert!(text.contains("accounts = 1"), "{text}");
    assert!(text.contains("torn_bytes_cut = 0"), "{text}");
}

#[test]
fn damage_is_reported_with_exit_code_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log-0");
    make_log(&log);
    let seg = log.join("00000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[64 + 30] ^= 0xff; // inside the first record
    std::fs::write(&seg, &bytes).unwrap();
    let cfg = write_config(dir.path());
    let out = switchboard()
        .args(["log", "inspect"])
        .arg(&log)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("skipped_ranges = 1"), "{text}");
    assert!(text.contains("messages_pending = 9"), "{text}");
    assert!(text.contains("# ") && text.contains("checksum"), "{text}");
}

#[test]
fn missing_directory_and_bad_config_are_clear_errors() {
    let out = switchboard()
        .args(["log", "inspect", "/nonexistent/log-0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such log directory"));

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "segment_bytes = 12\n").unwrap();
    let out = switchboard()
        .args(["log", "inspect"])
        .arg(dir.path())
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("segment_bytes"), "{err}");
}
