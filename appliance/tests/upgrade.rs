//! Upgrading a running `switchboard serve`: a new process takes the listening socket
//! over (`serve --takeover`) while a client keeps sending; the old process drains its
//! connections with `Reconnect` at the configured rate, releases its logs and exits;
//! every client reconnects and every message the server acknowledged is delivered. The
//! same for a split deployment's gateway (`gateway --takeover`), whose old and new
//! processes both serve while the old one drains.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use client::{Client, ClientError, Incoming, Trust};
use wire::{ErrorCode, Key, Phone};

use common::T;

use common::Printed as Proc;

fn serve(data: &Path, cfg: &Path, extra: &[&str]) -> Proc {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
        "--config".as_ref(),
        cfg.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    Proc::run(&args)
}

fn phone(n: u64) -> Phone {
    Phone::new(n).unwrap()
}

/// Connects and logs in, retrying while the upgrade is under way.
fn relogin(addr: &str, fp: &str, p: Phone, key: Key) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = Client::connect(addr, &Trust::Fingerprint(fp.into()), "localhost", T)
            .and_then(|mut c| c.login(p, key, T).map(|_| c));
        match attempt {
            Ok(c) => return c,
            Err(e) => {
                assert!(Instant::now() < deadline, "{p} could not come back: {e:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn a_new_process_takes_over_under_load_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "workers = 1\nshards = 1\n[upgrade]\ndrain_per_sec = 10\n[admin]\nenabled = false\n",
    )
    .unwrap();
    let old = serve(&data, &cfg, &[]);
    let fp = old.word_after("certificate sha256 fingerprint ");
    let addr = old.word_after("switchboard: listening on ");
    let sms = data.join("sms.log");
    let (a, b) = (phone(15550000041), phone(15550000042));
    let (mut ca, key_a) = common::register(&addr, &fp, &sms, a);
    let (mut cb, key_b) = common::register(&addr, &fp, &sms, b);
    // Idle users too, so the drain takes a while at 10 connections a second.
    let idle: Vec<(Client, Key, Phone)> = (0..4)
        .map(|i| {
            let p = phone(15550000050 + i);
            let (c, k) = common::register(&addr, &fp, &sms, p);
            (c, k, p)
        })
        .collect();

    let mut acked = BTreeSet::new();
    let mut reconnects = 0;
    let mut new: Option<Proc> = None;
    let started = Instant::now();
    // a sends 60 messages, one after the other; the upgrade starts after the 10th.
    for id in 1..=60u64 {
        if id == 11 {
            new = Some(serve(&data, &cfg, &["--takeover"]));
        }
        loop {
            let sent = ca
                .send(b, id, b"through the upgrade")
                .and_then(|_| ca.wait_for(T, |m| matches!(m, Incoming::ServerAck { .. })));
            match sent {
                Ok(_) => {
                    acked.insert(id);
                    break;
                }
                Err(ClientError::Closed {
                    code: ErrorCode::Reconnect,
                    ..
                }) => {
                    reconnects += 1;
                    ca = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        relogin(&addr, &fp, a, key_a)
                    }))
                    .unwrap_or_else(|_| {
                        panic!(
                            "old: {:?}\nnew: {:?}",
                            old.lines.lock().unwrap(),
                            new.as_ref().map(|n| n.lines.lock().unwrap().clone())
                        )
                    });
                    // The same message id again: stored once (the router deduplicates).
                }
                Err(e) => panic!("message {id}: {e:?}"),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(acked.len(), 60);
    assert_eq!(reconnects, 1, "a was asked to reconnect once");
    let new = new.unwrap();
    old.line(
        "handed the listeners to a new process; draining connections at 10/s",
        T,
    );
    old.line(
        "drained: every connection was asked to reconnect",
        Duration::from_secs(20),
    );
    new.line("took over 1 listener(s)", T);
    new.line("listening on", Duration::from_secs(20));
    // The old process stopped cleanly.
    let mut old = old;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = old.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the old process did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");

    // b was asked to reconnect too; back, it gets every acknowledged message.
    match cb.wait_for(Duration::from_secs(20), |_| false) {
        Err(ClientError::Closed {
            code: ErrorCode::Reconnect,
            ..
        }) => {}
        other => panic!("b: {other:?}"),
    }
    let mut cb2 = relogin(&addr, &fp, b, key_b);
    let mut got = BTreeSet::new();
    while got.len() < acked.len() {
        match cb2.wait_for(T, |m| matches!(m, Incoming::Deliver { .. })) {
            Ok(Incoming::Deliver { seq, msg_id, .. }) => {
                got.insert(msg_id);
                cb2.ack(seq).unwrap();
            }
            other => panic!("b after {} of {}: {other:?}", got.len(), acked.len()),
        }
    }
    assert_eq!(got, acked);
    // Every idle client was asked to reconnect, and can.
    for (mut c, k, p) in idle {
        match c.wait_for(T, |_| false) {
            Err(ClientError::Closed {
                code: ErrorCode::Reconnect,
                ..
            }) => {}
            other => panic!("{p}: {other:?}"),
        }
        drop(relogin(&addr, &fp, p, k));
    }
    // Six connections at 10 a second: the drain was paced, not a stampede.
    assert!(started.elapsed() >= Duration::from_millis(500));
}

/// Reads a socket-activated `serve`'s stdout until it says where it listens; returns
/// (said it took systemd's listener, the address, the certificate fingerprint), or
/// `None` when nothing came within `within`.
fn activated_start(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<(bool, String, String)> {
    // Lines come through a channel so that every wait is bounded.
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + within;
    let (mut fp, mut from_systemd) = (None, false);
    loop {
        let l = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()?;
        from_systemd |= l.contains("listener(s) from systemd socket activation");
        if let Some(f) = l.strip_prefix("switchboard: certificate sha256 fingerprint ") {
            fp = Some(f.to_string());
        }
        if let Some(rest) = l.strip_prefix("switchboard: listening on ") {
            let at = rest.split_whitespace().next()?.to_string();
            return Some((from_systemd, at, fp?));
        }
    }
}

/// Checks a socket-activated `serve` (stdout and stderr piped), then stops it: it said
/// it took the passed listener, listens at `addr`, and a client completes a handshake
/// there. `Err` when it never said where it listens: whether the process had exited,
/// and its stderr.
fn check_activated(
    child: &mut std::process::Child,
    addr: &str,
) -> Result<(), (Option<std::process::ExitStatus>, String)> {
    let started = activated_start(child, Duration::from_secs(30));
    let checked = started.map(|(from_systemd, at, fp)| {
        let c = Client::connect(addr, &Trust::Fingerprint(fp), "localhost", T);
        (from_systemd, at, c.err().map(|e| e.to_string()))
    });
    let exited = child.try_wait().ok().flatten();
    let _ = child.kill();
    let _ = child.wait();
    let Some((from_systemd, at, client_error)) = checked else {
        let mut why = String::new();
        let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut why);
        return Err((exited, why));
    };
    assert!(
        from_systemd,
        "serve did not say it took the passed listener"
    );
    assert_eq!(at, addr);
    assert_eq!(client_error, None);
    Ok(())
}

/// `serve` with `LISTEN_FDS` set as systemd sets it: the listener at descriptor 3,
/// `LISTEN_FDS=1`, `LISTEN_PID` the program's own pid (`sh` sets it to its own and
/// `exec`s the appliance, which keeps that pid). `--listen` names another address: the
/// passed socket must win.
fn socket_activated_serve(listener: &std::net::TcpListener, data: &Path) -> std::process::Child {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"",
        env!("CARGO_BIN_EXE_switchboard"),
        "serve",
        "--listen",
        "127.0.0.1:1",
        "--data",
    ])
    .arg(data)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // SAFETY: between fork and exec only dup2 and fcntl, which are async-signal-safe.
    // A copy made by dup2 has no close-on-exec flag; when the listener already is
    // descriptor 3, dup2 does nothing and the flag is cleared by hand.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

/// Socket activation: the listener comes from `LISTEN_FDS`. The socket is bound here
/// first, so no other test can take its port in between (the version through
/// `systemd-socket-activate` below cannot promise that).
#[test]
fn a_socket_activated_serve_uses_the_listener_it_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut child = socket_activated_serve(&listener, &dir.path().join("data"));
    drop(listener); // the child has its own copy
    if let Err((_, why)) = check_activated(&mut child, &addr) {
        panic!("serve never said where it listens; stderr: {why}");
    }
}

/// The same through systemd's own tool, which binds the address and starts the
/// program at the first connection.
#[test]
fn a_serve_started_by_systemd_socket_activate_uses_its_listener() {
    let Ok(tool) = which("systemd-socket-activate") else {
        eprintln!("skipped: systemd-socket-activate is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", common::free_port());
    let mut child = Command::new(tool)
        .args(["-l", &addr, env!("CARGO_BIN_EXE_switchboard"), "serve"])
        .args(["--listen", "127.0.0.1:1", "--data"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let _wake = loop {
        if let Ok(Some(status)) = child.try_wait() {
            // It could not bind: another test took the port between `free_port` and
            // now. Not the appliance's doing; the test above covers the same ground.
            let mut why = String::new();
            let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut why);
            eprintln!("skipped: systemd-socket-activate exited ({status}): {why}");
            return;
        }
        match std::net::TcpStream::connect(&addr) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "{addr}: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    if let Err((exited, why)) = check_activated(&mut child, &addr) {
        if exited.is_some_and(|s| !s.success()) {
            // As above, found only after connecting (to whoever took the port).
            eprintln!("skipped: systemd-socket-activate exited: {why}");
            return;
        }
        panic!("serve never said where it listens; stderr: {why}");
    }
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

/// `switchboard gateway --id 1` of a one-router cluster (`extra`: `--takeover`).
fn split_gateway(cfg: &Path, data: &Path, listen: &str, extra: &[&str]) -> Proc {
    let mut args: Vec<&std::ffi::OsStr> = ["gateway", "--id", "1", "--listen", listen, "--config"]
        .into_iter()
        .map(std::ffi::OsStr::new)
        .collect();
    args.extend([cfg.as_os_str(), "--data".as_ref(), data.as_os_str()]);
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    Proc::run(&args)
}

/// Waits for `Reconnect` on a client of the old gateway.
fn told_to_reconnect(c: &mut Client, who: Phone) {
    match c.wait_for(Duration::from_secs(30), |_| false) {
        Err(ClientError::Closed {
            code: ErrorCode::Reconnect,
            ..
        }) => {}
        other => panic!("{who}: {other:?}"),
    }
}

/// A split gateway upgraded: the new process takes the listener, and while the old one
/// drains, the connections of both are served at once (each process has its own links
/// to the router, its connections their own ids), so a client still on the old process
/// and one already on the new exchange messages both ways.
#[test]
fn a_split_gateway_hands_over_and_both_serve_while_the_old_drains() {
    let dir = tempfile::tempdir().unwrap();
    let routers = [(0, format!("127.0.0.1:{}", common::free_port()), "0-15")];
    let cfg = common::config(dir.path(), &routers, "127.0.0.1", None);
    // The router without an admin API; the gateway's on a fixed port, which the new
    // process gets once the old one has drained.
    let admin_port = common::free_port();
    let base = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{base}[admin]\nenabled = false\n")).unwrap();
    let (d0, dg) = (dir.path().join("r0"), dir.path().join("gw"));
    let _r0 = common::router(None, cfg.to_str().unwrap(), 0, &d0);
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "{base}[upgrade]\ndrain_per_sec = 1\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n"
        ),
    )
    .unwrap();
    let old = split_gateway(&cfg, &dg, "127.0.0.1:0", &[]);
    let addr = old.word_after("switchboard: gateway 1 listening on ");
    let fp = old.word_after("certificate sha256 fingerprint ");
    old.line(&format!("admin api on http://127.0.0.1:{admin_port}"), T);
    let sms = d0.join("sms.log");
    let olds: Vec<(Client, Key, Phone)> = (0..4)
        .map(|i| {
            let p = common::phone_on(0, i);
            let (c, k) = common::register(&addr, &fp, &sms, p);
            (c, k, p)
        })
        .collect();

    // The new process: same port, same data directory.
    let new = split_gateway(&cfg, &dg, &addr, &["--takeover"]);
    new.line("took over 1 listener(s)", T);
    new.line("switchboard: gateway 1 listening on ", T);
    old.line("draining connections at 1/s", T);
    let p_new = common::phone_on(0, 10);
    let (mut cn, _) = common::register(&addr, &fp, &sms, p_new);

    // Every old client not drained yet: a message to the new client (its server
    // acknowledgement comes back over the old process's link), and one back.
    let mut both_ways = 0;
    let mut olds: Vec<(Option<Client>, Key, Phone)> =
        olds.into_iter().map(|(c, k, p)| (Some(c), k, p)).collect();
    let mut acked = BTreeSet::new();
    for (i, (c, _, p)) in olds.iter_mut().enumerate() {
        let id = 100 + i as u64;
        let co = c.as_mut().unwrap();
        let sent = co
            .send(p_new, id, b"from the old process")
            .and_then(|_| co.wait_for(T, |m| matches!(m, Incoming::ServerAck { .. })));
        match sent {
            Ok(_) => {
                acked.insert(id);
            }
            Err(ClientError::Closed {
                code: ErrorCode::Reconnect,
                ..
            }) => {
                *c = None;
                continue;
            }
            Err(e) => panic!("{p}: {e:?}"),
        }
        cn.send(*p, 1, b"from the new process").unwrap();
        match co.wait_for(T, |m| matches!(m, Incoming::Deliver { .. })) {
            Ok(Incoming::Deliver { seq, msg_id: 1, .. }) => {
                co.ack(seq).unwrap();
                both_ways += 1;
            }
            Err(ClientError::Closed {
                code: ErrorCode::Reconnect,
                ..
            }) => *c = None,
            other => panic!("{p}: {other:?}"),
        }
    }
    assert!(
        both_ways >= 1,
        "no old connection lived long enough to test\nold: {:?}\nnew: {:?}",
        old.lines.lock().unwrap(),
        new.lines.lock().unwrap()
    );
    // The new client got every message the old ones had acknowledged.
    let mut got = BTreeSet::new();
    while got.len() < acked.len() {
        match cn.wait_for(T, |m| matches!(m, Incoming::Deliver { .. })) {
            Ok(Incoming::Deliver { seq, msg_id, .. }) => {
                got.insert(msg_id);
                cn.ack(seq).unwrap();
            }
            other => panic!("new client after {got:?} of {acked:?}: {other:?}"),
        }
    }
    assert_eq!(got, acked);

    // The old process drains everyone, stops, and hands the admin address over.
    for (c, _, p) in olds.iter_mut() {
        if let Some(mut c) = c.take() {
            told_to_reconnect(&mut c, *p);
        }
    }
    old.line("drained: every connection was asked to reconnect", T);
    new.line(&format!("admin api on http://127.0.0.1:{admin_port}"), T);
    // Everyone comes back through the new process.
    for (_, k, p) in &olds {
        let mut c = relogin(&addr, &fp, *p, *k);
        cn.send(*p, 2, b"welcome back").unwrap();
        match c.wait_for(T, |m| matches!(m, Incoming::Deliver { .. })) {
            Ok(Incoming::Deliver { msg_id: 2, .. }) => {}
            other => panic!("{p}: {other:?}"),
        }
    }
}
