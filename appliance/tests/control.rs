//! Changing a running `switchboard serve`: knobs through the admin API and the
//! `switchboard knob` command (applied without reconnects, bounds checked, logged), and
//! reloading the configuration on SIGHUP and `switchboard reload` (certificate rotation
//! while clients stay connected; a bad new configuration refused, the old one kept).

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use client::{Client, Incoming, Trust};
use wire::Phone;

use common::{deliver, T};

struct Server {
    p: common::Printed,
    addr: String,
    admin: String,
    /// The certificate's fingerprint.
    fp: String,
    data: PathBuf,
}

impl Server {
    fn start(data: &Path, config: &Path) -> Server {
        let p = common::Printed::run(&[
            "serve".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--data".as_ref(),
            data.as_os_str(),
            "--config".as_ref(),
            config.as_os_str(),
        ]);
        Server {
            addr: p.word_after("switchboard: listening on "),
            admin: p.word_after("switchboard: admin api on http://"),
            fp: p.word_after("certificate sha256 fingerprint "),
            data: data.to_owned(),
            p,
        }
    }

    /// Waits for a printed line containing `needle`.
    fn saw(&self, needle: &str) -> String {
        self.p.line(needle, T)
    }

    /// `switchboard ARGS --admin ADDR --data DATA`.
    fn cli(&self, args: &[&str]) -> Output {
        common::admin_cli(&self.admin, &self.data, args)
    }

    fn metric(&self, name: &str) -> u64 {
        common::metric_sum(
            &common::admin_get(&self.admin, &self.data, "/metrics"),
            name,
        )
    }

    fn hup(&self) {
        // SAFETY: sending SIGHUP to our own child process.
        unsafe { libc::kill(self.p.child.id() as i32, libc::SIGHUP) };
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn phone(n: u64) -> Phone {
    Phone::new(n).unwrap()
}

/// Generates a self-signed identity in `dir/tls` with the appliance's own command;
/// its fingerprint.
fn identity(dir: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["tls", "fingerprint", "--data"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_string()
}

/// Tries `ok` every 50 ms until it holds (at most `T`).
fn retry_until(mut ok: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + T;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `close`, which ends one connection, and waits until the server has counted it
/// closed (its log line, if any, is written by then).
fn closed_one(s: &Server, close: impl FnOnce()) {
    let before = s.metric("switchboard_gateway_closed_total");
    close();
    retry_until(
        || s.metric("switchboard_gateway_closed_total") > before,
        "the connection was not closed",
    );
}

fn connect(s: &Server, fp: &str) -> Result<Client, client::ClientError> {
    Client::connect(&s.addr, &Trust::Fingerprint(fp.to_string()), "localhost", T)
}

#[test]
fn knobs_change_a_running_appliance_without_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "workers = 1\nshards = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n[gateway]\naccepts_per_sec = 1000\n",
    )
    .unwrap();
    let s = Server::start(&data, &cfg);
    let fp = s.fp.clone();
    let sms = data.join("sms.log");
    let (a, b) = (phone(15550000001), phone(15550000002));
    let (mut ca, _) = common::register(&s.addr, &fp, &sms, a);
    let (mut cb, _) = common::register(&s.addr, &fp, &sms, b);

    // Listing and reading.
    let list = s.cli(&["knob", "list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    for k in ["accepts_per_sec", "outbound_bytes_max", "flush_interval_us"] {
        assert!(stdout(&list).contains(k), "{}", stdout(&list));
    }
    assert_eq!(
        stdout(&s.cli(&["knob", "get", "accepts_per_sec"])).trim(),
        "1000"
    );

    // Out of bounds and unknown: refused with the reason, nothing changes.
    let o = s.cli(&["knob", "set", "accepts_per_sec", "0"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("out of bounds (1 to"), "{}", stderr(&o));
    let o = s.cli(&["knob", "set", "no_such_knob", "5"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no knob named"), "{}", stderr(&o));
    assert_eq!(
        stdout(&s.cli(&["knob", "get", "accepts_per_sec"])).trim(),
        "1000"
    );

    // One accept per second: a burst of new connections is refused past the first...
    let o = s.cli(&["knob", "set", "accepts_per_sec", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "accepts_per_sec: 1000 -> 1");
    s.saw("knob accepts_per_sec: 1000 -> 1");
    // The worker picks a change up within a sweep (250 ms): bursts until it refuses.
    let before = s.metric("switchboard_gateway_refused_rate_total");
    let deadline = Instant::now() + T;
    while s.metric("switchboard_gateway_refused_rate_total") < before + 4 {
        assert!(
            Instant::now() < deadline,
            "the new accept rate was not applied"
        );
        let burst: Vec<TcpStream> = (0..6)
            .map(|_| TcpStream::connect(&s.addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        drop(burst);
    }
    // ...while the connections already up carry on, never reconnected.
    ca.send(b, 1, b"still here").unwrap();
    let (seq, from, id, body) = deliver(&mut cb);
    assert_eq!((from, id, &body[..]), (a, 1, &b"still here"[..]));
    cb.ack(seq).unwrap();
    ca.wait_for(T, |m| matches!(m, Incoming::Receipt { .. }))
        .unwrap();

    // Back up: new connections are accepted again.
    assert!(s
        .cli(&["knob", "set", "accepts_per_sec", "1000"])
        .status
        .success());
    retry_until(
        || connect(&s, &fp).is_ok(),
        "connections are not accepted again",
    );

    // The storage knob reaches the shard.
    let o = s.cli(&["knob", "set", "flush_interval_us", "5000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    s.saw("knob flush_interval_us: 1000 -> 5000");
    assert_eq!(
        stdout(&s.cli(&["knob", "get", "flush_interval_us"])).trim(),
        "5000"
    );
    // Messages still flow with the new interval.
    ca.send(b, 2, b"after").unwrap();
    let (seq, _, id, _) = deliver(&mut cb);
    assert_eq!(id, 2);
    cb.ack(seq).unwrap();

    // `switchboard stat`: a header, then one line per interval with the chosen figures.
    let o = s.cli(&[
        "stat",
        "--count",
        "2",
        "--columns",
        "gateway_connections,switchboard_router_messages_accepted_total,host_cpu_idle",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].contains("gateway_connections") && lines[0].contains("host_cpu_idle"));
    // Two connections are open: a and b.
    assert_eq!(lines[1].split_whitespace().nth(1), Some("2"), "{out}");
    let o = s.cli(&["stat", "--count", "1", "--columns", "no_such_figure"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no figure named \"no_such_figure\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_certificate_rotates_on_sighup_while_clients_stay_connected() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let (fp1, fp2) = (identity(&one), identity(&two));
    assert_ne!(fp1, fp2);
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let install = |from: &Path| {
        for f in ["cert.pem", "key.pem"] {
            std::fs::copy(from.join("tls").join(f), live.join(f)).unwrap();
        }
    };
    install(&one);
    let data = dir.path().join("data");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "workers = 1\nshards = 1\n[tls]\ncert = \"{0}/cert.pem\"\nkey = \"{0}/key.pem\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            live.display()
        ),
    )
    .unwrap();
    let s = Server::start(&data, &cfg);
    let sms = data.join("sms.log");
    let (a, b) = (phone(15550000011), phone(15550000012));
    let (mut ca, _) = common::register(&s.addr, &fp1, &sms, a);
    let (mut cb, _) = common::register(&s.addr, &fp1, &sms, b);

    install(&two);
    s.hup();
    s.saw("switchboard: reloaded: certificate reloaded");
    // New handshakes present the new certificate (the worker takes it at a sweep)...
    retry_until(
        || connect(&s, &fp2).is_ok(),
        "the new certificate is not presented",
    );
    assert!(connect(&s, &fp1).is_err());
    // ...and the connections made with the old one carry on.
    ca.send(b, 1, b"across the rotation").unwrap();
    let (seq, from, _, body) = deliver(&mut cb);
    assert_eq!((from, &body[..]), (a, &b"across the rotation"[..]));
    cb.ack(seq).unwrap();

    // A broken certificate: refused with the reason; the running one stays.
    std::fs::write(live.join("cert.pem"), "not a certificate\n").unwrap();
    s.hup();
    s.saw("reload refused, the running configuration stays");
    assert!(connect(&s, &fp2).is_ok());
    // A configuration that does not parse: the same, through `switchboard reload`.
    install(&two);
    std::fs::write(&cfg, "workers = \"many\"\n").unwrap();
    let o = s.cli(&["reload"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("reload refused"), "{}", stderr(&o));
    assert!(connect(&s, &fp2).is_ok());
    ca.send(b, 2, b"still fine").unwrap();
    let (_, _, id, _) = deliver(&mut cb);
    assert_eq!(id, 2);
}

/// Lines printed so far that contain `needle`.
fn count(s: &Server, needle: &str) -> usize {
    s.p.lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn the_log_level_and_the_alert_rules_change_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("c.toml");
    let base = "workers = 1\nshards = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    std::fs::write(&cfg, base).unwrap();
    let s = Server::start(&data, &cfg);
    let fp = s.fp.clone();
    let sms = data.join("sms.log");

    // The level is a knob that takes names; a bad one is refused with the names.
    assert_eq!(stdout(&s.cli(&["knob", "get", "log_level"])).trim(), "info");
    let o = s.cli(&["knob", "set", "log_level", "loud"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("one of error, warn, info, debug, trace"),
        "{}",
        stderr(&o)
    );
    // A knob of another role is named as such.
    let o = s.cli(&["knob", "set", "link_batch_bytes", "4096"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("does not apply to a serve process"),
        "{}",
        stderr(&o)
    );

    // At info, a login and a closed connection print nothing.
    let (_ca, _) = common::register(&s.addr, &fp, &sms, phone(15550000021));
    closed_one(&s, || drop(TcpStream::connect(&s.addr).unwrap()));
    assert_eq!(count(&s, "switchboard: debug: "), 0);

    // At debug, both do.
    let o = s.cli(&["knob", "set", "log_level", "debug"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "log_level: info -> debug");
    s.saw("knob log_level: info -> debug");
    let (_cb, _) = common::register(&s.addr, &fp, &sms, phone(15550000022));
    s.saw("debug: shard 0: +15550000022 logged in on connection");
    drop(TcpStream::connect(&s.addr).unwrap());
    s.saw("closed: ");

    // Back to warn: quiet again.
    assert!(s
        .cli(&["knob", "set", "log_level", "warn"])
        .status
        .success());
    let seen = count(&s, "switchboard: debug: ");
    let (_cc, _) = common::register(&s.addr, &fp, &sms, phone(15550000023));
    closed_one(&s, || drop(TcpStream::connect(&s.addr).unwrap()));
    assert_eq!(count(&s, "switchboard: debug: "), seen);

    // A rule added by a reload fires (three clients are connected)...
    std::fs::write(
        &cfg,
        format!(
            "{base}[log]\nlevel = \"info\"\n[[alerts.rule]]\nname = \"busy\"\nmetric = \"switchboard_gateway_connections\"\nabove = 0\n"
        ),
    )
    .unwrap();
    s.hup();
    let l = s.saw("switchboard: reloaded: ");
    assert!(l.contains("knobs: log_level warn -> info"), "{l}");
    assert!(l.contains("alert rules: 1 in force"), "{l}");
    s.saw("alert firing: {\"alert\":\"busy\"");
    // ...a rule naming no metric is refused, the running ones stay...
    std::fs::write(
        &cfg,
        format!("{base}[[alerts.rule]]\nname = \"x\"\nmetric = \"no_such\"\nabove = 0\n"),
    )
    .unwrap();
    let o = s.cli(&["reload"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no_such"), "{}", stderr(&o));
    // ...and removing it ends the alert.
    std::fs::write(&cfg, base).unwrap();
    let o = s.cli(&["reload"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("alert rules: 0 in force"),
        "{}",
        stdout(&o)
    );
    s.saw("alert busy: its rule was removed by a reload");
}
