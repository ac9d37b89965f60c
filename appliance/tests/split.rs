//! The split deployment on loopback: two `switchboard router` processes and one
//! `switchboard gateway`, joined by authenticated links. (The same on a real two-network
//! topology, built with namespaces: `tests/topology.rs`.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use client::{Client, ClientError, Incoming, Trust};
use common::*;
use wire::frame::ReceiptKind;
use wire::Phone;

#[test]
fn users_on_different_routers_exchange_messages_and_survive_a_router_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (p0, p1) = (free_port(), free_port());
    let routers = [
        (0, format!("127.0.0.1:{p0}"), "0-7"),
        (1, format!("127.0.0.1:{p1}"), "8-15"),
    ];
    let cfg = config(dir.path(), &routers, "127.0.0.1", None);
    let cfg = cfg.to_str().unwrap();
    let (d0, d1, dg) = (
        dir.path().join("r0"),
        dir.path().join("r1"),
        dir.path().join("gw"),
    );
    let r0 = router(None, cfg, 0, &d0);
    let r1 = router(None, cfg, 1, &d1);
    let gw = gateway(None, cfg, "127.0.0.1:0", &dg);
    let (addr, fp) = (
        gw.listen_addr("switchboard: gateway 1 listening on "),
        gw.fingerprint(),
    );
    let (a, b) = (phone_on(0, 0), phone_on(1, 0));
    let (mut ca, _) = register(&addr, &fp, &d0.join("sms.log"), a);
    let (mut cb, kb) = register(&addr, &fp, &d1.join("sms.log"), b);

    // A (router 0) → B (router 1): tick, delivery, receipts across routers.
    ca.send(b, 1, b"across routers").unwrap();
    assert_eq!(
        ca.wait_for(T, |m| matches!(m, Incoming::ServerAck { .. }))
            .unwrap(),
        Incoming::ServerAck { to: b, msg_id: 1 }
    );
    let (seq, from, id, body) = deliver(&mut cb);
    assert_eq!((from, id, &body[..]), (a, 1, &b"across routers"[..]));
    cb.ack(seq).unwrap();
    match ca
        .wait_for(T, |m| {
            matches!(
                m,
                Incoming::Receipt {
                    kind: ReceiptKind::Delivered,
                    ..
                }
            )
        })
        .unwrap()
    {
        Incoming::Receipt { seq, msg_id: 1, .. } => ca.ack(seq).unwrap(),
        other => panic!("{other:?}"),
    }

    // B goes offline; messages wait in router 1's log; router 1 is killed and restarted.
    // (No wait: what goes to a closing connection stays pending, unacknowledged.)
    drop(cb);
    for i in 10..20 {
        ca.send(b, i, format!("m{i}").as_bytes()).unwrap();
    }
    let mut acked = 0;
    while acked < 10 {
        if let Incoming::ServerAck { .. } = ca
            .wait_for(T, |m| matches!(m, Incoming::ServerAck { .. }))
            .unwrap()
        {
            acked += 1;
        }
    }
    r1.kill();
    let r1 = router(None, cfg, 1, &d1);
    // The gateway reconnects by itself (backoff ≤ 2 s); B logs in again and gets all ten.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut cb = loop {
        let mut c =
            Client::connect(&addr, &Trust::Fingerprint(fp.clone()), "localhost", T).unwrap();
        match c.login(b, kb, Duration::from_secs(3)) {
            Ok(n) => {
                assert_eq!(n, 10);
                break c;
            }
            Err(ClientError::Server { .. } | ClientError::Timeout) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(e) => panic!("{e}"),
        }
    };
    for i in 10..20 {
        let (seq, _, id, _) = deliver(&mut cb);
        assert_eq!(id, i);
        cb.ack(seq).unwrap();
    }
    for p in [gw, r0, r1] {
        p.kill();
    }
}

#[test]
fn a_peer_without_the_secret_gets_nothing_accepted_and_the_public_port_refuses_link_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let p0 = free_port();
    let routers = [(0, format!("127.0.0.1:{p0}"), "0-15")];
    let cfg = config(dir.path(), &routers, "127.0.0.1", None);
    let cfg = cfg.to_str().unwrap();
    let d0 = dir.path().join("r0");
    let r0 = router(None, cfg, 0, &d0);

    // A fake gateway: reads the challenge, answers with a made-up MAC, then tries a request.
    let victim = Phone::new(15551234567).unwrap();
    let buf = forged_gateway(&format!("127.0.0.1:{p0}"), victim, "127.0.0.1");
    std::thread::sleep(Duration::from_millis(300));
    let sms = std::fs::read_to_string(d0.join("sms.log")).unwrap_or_default();
    assert!(
        !sms.contains(&victim.to_string()),
        "an injected request was acted on"
    );

    // Link bytes sent to a gateway's public (TLS) port go nowhere.
    let gw = gateway(None, cfg, "127.0.0.1:0", &dir.path().join("gw"));
    let addr = gw.listen_addr("switchboard: gateway 1 listening on ");
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(&buf);
    let mut back = vec![];
    let _ = s.read_to_end(&mut back);
    assert!(
        back.len() < 64 && !back.windows(4).any(|w| w == [0x11, 0, 0, 0]),
        "the public port spoke link: {back:?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let sms = std::fs::read_to_string(d0.join("sms.log")).unwrap_or_default();
    assert!(!sms.contains(&victim.to_string()));
    gw.kill();
    r0.kill();
}

#[test]
fn a_full_link_stops_reading_the_client_instead_of_buffering_or_refusing() {
    let dir = tempfile::tempdir().unwrap();
    // A tiny link queue; and room for 320 MB pending for one user (the default 256 MB
    // limit would refuse some with QueueFull while the receiver catches up).
    let OneRouter {
        r0,
        gw,
        addr,
        fp,
        d0,
        ..
    } = one_router(
        dir.path(),
        &[
            (&secret_line(), "link_queue = 16\n"),
            ("[storage]\n", "user_bytes_max = 1073741824\n"),
        ],
    );
    let (a, b) = (phone_on(0, 2), phone_on(1, 2));
    let (mut ca, _) = register(&addr, &fp, &d0.join("sms.log"), a);
    let (mut cb, _) = register(&addr, &fp, &d0.join("sms.log"), b);

    // 320 MB: well past what the kernel's socket buffers on the path can hold (loopback
    // buffers autotune up to 32 MB each here), so only backpressure can explain a stall.
    const N: u64 = 40_000;
    let body = vec![7u8; 8 * 1024];
    // Freeze the router: its link stops draining, the gateway's link queue fills.
    // SAFETY: signalling a child process we started.
    unsafe { libc::kill(r0.child.id() as i32, libc::SIGSTOP) };
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s2 = sent.clone();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen2 = seen.clone();
    let sender = std::thread::spawn(move || {
        let (mut acked, mut refused) = (0, 0);
        for i in 0..N {
            ca.send(b, i, &body).unwrap();
            s2.store(i + 1, std::sync::atomic::Ordering::Relaxed);
            while let Some(m) = ca.next(Duration::ZERO).unwrap() {
                match m {
                    Incoming::ServerAck { .. } => acked += 1,
                    Incoming::Refused { code, .. } => {
                        assert_eq!(code, wire::ErrorCode::TryAgain);
                        refused += 1
                    }
                    _ => {}
                }
                seen2.store(
                    acked * 1_000_000 + refused,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        }
        while acked + refused < N {
            match ca
                .wait_for(Duration::from_secs(30), |m| {
                    matches!(m, Incoming::ServerAck { .. } | Incoming::Refused { .. })
                })
                .unwrap()
            {
                Incoming::ServerAck { .. } => acked += 1,
                _ => refused += 1,
            }
        }
        refused
    });
    std::thread::sleep(Duration::from_secs(2));
    let stalled_at = sent.load(std::sync::atomic::Ordering::Relaxed);
    let x = seen.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "at 2 s: sent {stalled_at}, acked {}, refused {}",
        x / 1_000_000,
        x % 1_000_000
    );
    assert!(
        stalled_at < N / 2,
        "the client was not slowed down: {stalled_at} of {N} × 8 KiB went through a frozen router"
    );
    // SAFETY: as above.
    unsafe { libc::kill(r0.child.id() as i32, libc::SIGCONT) };
    let receiver = std::thread::spawn(move || {
        let mut got = std::collections::BTreeSet::new();
        while (got.len() as u64) < N {
            match cb
                .wait_for(Duration::from_secs(30), |m| {
                    matches!(m, Incoming::Deliver { .. })
                })
                .unwrap()
            {
                Incoming::Deliver { seq, msg_id, .. } => {
                    got.insert(msg_id);
                    cb.ack(seq).unwrap();
                }
                _ => unreachable!(),
            }
        }
        got.len()
    });
    let refused = sender.join().unwrap();
    assert_eq!(
        refused, 0,
        "requests were refused while the link was up: backpressure must slow the client instead"
    );
    assert_eq!(receiver.join().unwrap() as u64, N);
    eprintln!("client stalled after {stalled_at} of {N} messages while the router was frozen");
    gw.kill();
    r0.kill();
}

#[test]
fn links_run_over_tls_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (p0, p1) = (free_port(), free_port());
    let (d0, d1, dg) = (
        dir.path().join("r0"),
        dir.path().join("r1"),
        dir.path().join("gw"),
    );
    // Each router's certificate made up front, so the map can pin it.
    let fp = |d: &std::path::Path| {
        std::fs::create_dir_all(d.join("tls")).unwrap();
        gateway::tls::Identity::self_signed_in(&d.join("tls"), &[])
            .unwrap()
            .0
            .fingerprint()
    };
    let (f0, f1) = (fp(&d0), fp(&d1));
    let routers = [
        (0, format!("127.0.0.1:{p0}"), "0-7"),
        (1, format!("127.0.0.1:{p1}"), "8-15"),
    ];
    let cfg = config(dir.path(), &routers, "127.0.0.1", None);
    add_to_config(
        &cfg,
        &[
            (&secret_line(), "link_tls = true\n"),
            (
                "partitions = \"0-7\"\n",
                &format!("fingerprint = \"{f0}\"\n"),
            ),
            (
                "partitions = \"8-15\"\n",
                &format!("fingerprint = \"{f1}\"\n"),
            ),
        ],
    );
    let cfg = cfg.to_str().unwrap();
    let r0 = router(None, cfg, 0, &d0);
    assert!(
        r0.lines.last().unwrap().contains("with TLS"),
        "{:?}",
        r0.lines
    );
    let r1 = router(None, cfg, 1, &d1);
    let gw = gateway(None, cfg, "127.0.0.1:0", &dg);
    let (addr, gfp) = (
        gw.listen_addr("switchboard: gateway 1 listening on "),
        gw.fingerprint(),
    );
    let (a, b) = (phone_on(0, 3), phone_on(1, 3));
    let (mut ca, _) = register(&addr, &gfp, &d0.join("sms.log"), a);
    let (mut cb, _) = register(&addr, &gfp, &d1.join("sms.log"), b);
    ca.send(b, 1, b"over TLS links").unwrap();
    let (seq, from, id, _) = deliver(&mut cb);
    assert_eq!((from, id), (a, 1));
    cb.ack(seq).unwrap();
    // The delivered receipt crossed the router-to-router TLS link.
    assert!(matches!(
        ca.wait_for(T, |m| matches!(m, Incoming::Receipt { .. }))
            .unwrap(),
        Incoming::Receipt {
            kind: ReceiptKind::Delivered,
            ..
        }
    ));
    // Plain link bytes to a TLS router link port get nothing back.
    let mut s = TcpStream::connect(("127.0.0.1", p0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![];
    wire::linkcodec::LinkMsg::Challenge { nonce: [0; 32] }.encode(&mut buf);
    let _ = s.write_all(&buf);
    let mut back = vec![];
    let _ = s.read_to_end(&mut back);
    assert!(
        !back.windows(4).any(|w| w == [0x01, 0, 0, 0]),
        "a plain Challenge came back from a TLS link port"
    );
    for p in [gw, r0, r1] {
        p.kill();
    }
}

/// `switchboard ARGS --admin ADMIN --data DATA`: (success, stdout, stderr).
fn admin_cli(admin: &str, data: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let o = common::admin_cli(admin, data, args);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn the_split_roles_have_their_knobs_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let routers = [(0, format!("127.0.0.1:{}", free_port()), "0-15")];
    let cfg = config(dir.path(), &routers, "127.0.0.1", None);
    let base = std::fs::read_to_string(&cfg).unwrap();
    let admin = "[admin]\nlisten = \"127.0.0.1:0\"\n";
    std::fs::write(&cfg, format!("{base}{admin}")).unwrap();
    let (d0, dg) = (dir.path().join("r0"), dir.path().join("gw"));
    let run = |args: &[&str], data: &std::path::Path| {
        let mut a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_ref()).collect();
        a.extend(["--config".as_ref(), cfg.as_os_str(), "--data".as_ref()]);
        a.push(data.as_os_str());
        Printed::run(&a)
    };
    let r0 = run(&["router", "--id", "0"], &d0);
    r0.line("router 0 listening", T);
    let gw = run(&["gateway", "--id", "1", "--listen", "127.0.0.1:0"], &dg);
    let addr = gw.word_after("switchboard: gateway 1 listening on ");
    let fp = gw.word_after("certificate sha256 fingerprint ");
    let (ra, ga) = (
        r0.word_after("admin api on http://"),
        gw.word_after("admin api on http://"),
    );

    // Each role lists the knobs that apply to it and names the others.
    let (ok, list, _) = admin_cli(&ra, &d0, &["knob", "list"]);
    assert!(ok);
    for k in ["flush_interval_us", "link_batch_bytes", "log_level"] {
        assert!(list.contains(k), "{list}");
    }
    assert!(!list.contains("accepts_per_sec"), "{list}");
    let (ok, _, err) = admin_cli(&ra, &d0, &["knob", "set", "accepts_per_sec", "5"]);
    assert!(
        !ok && err.contains("does not apply to a router process"),
        "{err}"
    );
    let (ok, list, _) = admin_cli(&ga, &dg, &["knob", "list"]);
    assert!(ok);
    for k in ["accepts_per_sec", "outbound_bytes_max", "link_batch_bytes"] {
        assert!(list.contains(k), "{list}");
    }
    assert!(!list.contains("flush_interval_us"), "{list}");

    // The link's batch size and the log level, changed on the running gateway.
    for (k, v) in [("link_batch_bytes", "2048"), ("log_level", "debug")] {
        let (ok, out, err) = admin_cli(&ga, &dg, &["knob", "set", k, v]);
        assert!(ok, "{err}");
        assert!(out.contains(&format!("-> {v}")), "{out}");
    }
    let (a, b) = (phone_on(0, 0), phone_on(0, 1));
    let (mut ca, _) = register(&addr, &fp, &d0.join("sms.log"), a);
    let (mut cb, _) = register(&addr, &fp, &d0.join("sms.log"), b);
    ca.send(b, 1, b"batched").unwrap();
    let (seq, _, id, _) = deliver(&mut cb);
    assert_eq!(id, 1);
    cb.ack(seq).unwrap();
    gw.line("debug: link batch: ", T);
    gw.line("(link_batch_bytes 2048)", T);

    // SIGHUP: the router takes its storage knob from the file, the gateway its
    // certificate and knobs (back to the file's values).
    std::fs::write(
        &cfg,
        format!(
            "{}{admin}",
            base.replace(
                "prefault = false\n",
                "prefault = false\ngroup_interval_us = 5000\n"
            )
        ),
    )
    .unwrap();
    for p in [&r0, &gw] {
        // SAFETY: sending SIGHUP to our own child process.
        unsafe { libc::kill(p.child.id() as i32, libc::SIGHUP) };
    }
    let l = r0.line("switchboard: reloaded: ", T);
    assert!(l.contains("flush_interval_us 1000 -> 5000"), "{l}");
    let l = gw.line("switchboard: reloaded: ", T);
    assert!(l.contains("certificate reloaded"), "{l}");
    assert!(l.contains("link_batch_bytes 2048 -> 65536"), "{l}");
    assert!(l.contains("log_level debug -> info"), "{l}");
    let (_, v, _) = admin_cli(&ra, &d0, &["knob", "get", "flush_interval_us"]);
    assert_eq!(v.trim(), "5000");
    // Messages still flow.
    ca.send(b, 2, b"after the reload").unwrap();
    let (_, _, id, _) = deliver(&mut cb);
    assert_eq!(id, 2);
}

#[test]
fn link_queues_are_measured_and_alerted_on_while_a_router_is_away() {
    let dir = tempfile::tempdir().unwrap();
    let routers = [(0, format!("127.0.0.1:{}", free_port()), "0-15")];
    let cfg = config(dir.path(), &routers, "127.0.0.1", None);
    let base = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "{base}[admin]\nlisten = \"127.0.0.1:0\"\n[[alerts.rule]]\nname = \"link backlog\"\nmetric = \"switchboard_link_queue\"\nabove = 3\n"
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let (d0, dg) = (dir.path().join("r0"), dir.path().join("gw"));
    let router_args = ["router", "--id", "0", "--config", cfg, "--data"];
    let start_router = || {
        let mut a: Vec<&std::ffi::OsStr> = router_args.iter().map(|s| s.as_ref()).collect();
        a.push(d0.as_os_str());
        let p = Printed::run(&a);
        p.line("router 0 listening", T);
        p
    };
    let r0 = start_router();
    let ra = r0.word_after("admin api on http://");
    let mut a: Vec<&std::ffi::OsStr> = ["gateway", "--id", "1", "--listen", "127.0.0.1:0"]
        .iter()
        .map(|s| s.as_ref())
        .collect();
    a.extend([
        "--config".as_ref(),
        cfg.as_ref(),
        "--data".as_ref(),
        dg.as_os_str(),
    ]);
    let gw = Printed::run(&a);
    let addr = gw.word_after("switchboard: gateway 1 listening on ");
    let fp = gw.word_after("certificate sha256 fingerprint ");
    let ga = gw.word_after("admin api on http://");
    let (a, b) = (phone_on(0, 0), phone_on(0, 1));
    let (mut ca, _) = register(&addr, &fp, &d0.join("sms.log"), a);
    let (mut cb, _) = register(&addr, &fp, &d0.join("sms.log"), b);

    // Idle: every queue is measured and empty.
    let m = admin_get(&ra, &d0, "/metrics");
    assert_eq!(
        series(&m, "switchboard_shard_inbox{shard=\"0\"}"),
        Some(0),
        "{m}"
    );
    assert_eq!(
        series(&m, "switchboard_link_queue{link=\"gateway 1\"}"),
        Some(0),
        "{m}"
    );
    let m = admin_get(&ga, &dg, "/metrics");
    assert_eq!(
        series(&m, "switchboard_link_queue{link=\"router 0\"}"),
        Some(0),
        "{m}"
    );

    // The router goes away: five messages wait in the gateway's queue for it, the
    // gauge says exactly that, and the alert on it fires.
    drop(r0);
    gw.line("link to router 0 down", T);
    for id in 1..=5 {
        ca.send(b, id, b"held").unwrap();
    }
    let deadline = Instant::now() + T;
    loop {
        let m = admin_get(&ga, &dg, "/metrics");
        if series(&m, "switchboard_link_queue{link=\"router 0\"}") == Some(5) {
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        std::thread::sleep(Duration::from_millis(20));
    }
    gw.line("alert firing: {\"alert\":\"link backlog\"", T);

    // Back: the queue drains, the alert resolves, every message is delivered.
    let _r0 = start_router();
    for id in 1..=5 {
        let (seq, _, got, _) = deliver(&mut cb);
        assert_eq!(got, id);
        cb.ack(seq).unwrap();
    }
    gw.line("alert resolved: {\"alert\":\"link backlog\"", T);
    let m = admin_get(&ga, &dg, "/metrics");
    assert_eq!(
        series(&m, "switchboard_link_queue{link=\"router 0\"}"),
        Some(0),
        "{m}"
    );
}

#[test]
fn a_split_gateway_tees_its_traffic_to_a_shadow_router() {
    let dir = tempfile::tempdir().unwrap();
    let shadow_dir = dir.path().join("shadow");
    std::fs::create_dir_all(&shadow_dir).unwrap();
    let shadow_port = free_port();
    let shadow_cfg = config(
        &shadow_dir,
        &[(1, format!("127.0.0.1:{shadow_port}"), "0-15")],
        "127.0.0.1",
        None,
    );
    let text =
        std::fs::read_to_string(&shadow_cfg).unwrap() + "[admin]\nlisten = \"127.0.0.1:0\"\n";
    std::fs::write(&shadow_cfg, text).unwrap();
    let sd = shadow_dir.join("data");
    let shadow = router(None, shadow_cfg.to_str().unwrap(), 1, &sd);
    let sa = shadow.listen_addr("switchboard: admin api on http://");

    let routers = [(0, format!("127.0.0.1:{}", free_port()), "0-15")];
    let cfg = config(dir.path(), &routers, "127.0.0.1", None);
    let text = std::fs::read_to_string(&cfg).unwrap()
        + &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[tee]\nenabled = true\nsample_percent = 100\n[tee.cluster]\nsecret = \"{SECRET}\"\n\
             [[tee.cluster.router]]\nid = 1\naddress = \"127.0.0.1:{shadow_port}\"\npartitions = \"0-15\"\n"
        );
    std::fs::write(&cfg, text).unwrap();
    let cfg = cfg.to_str().unwrap();
    let (d0, dg) = (dir.path().join("r0"), dir.path().join("gw"));
    let _r0 = router(None, cfg, 0, &d0);
    let gw = gateway(None, cfg, "127.0.0.1:0", &dg);
    assert!(gw
        .lines
        .iter()
        .any(|l| l.contains("tee: mirroring 100 % of users to 1 shadow router(s)")));
    let ga = gw.listen_addr("switchboard: admin api on http://");
    let (addr, fp) = (
        gw.listen_addr("switchboard: gateway 1 listening on "),
        gw.fingerprint(),
    );
    let (a, b) = (phone_on(0, 0), phone_on(0, 1));
    let (mut ca, _) = register(&addr, &fp, &d0.join("sms.log"), a);
    let (mut cb, _) = register(&addr, &fp, &d0.join("sms.log"), b);
    for id in 1..=10 {
        ca.send(b, id, b"mirrored").unwrap();
        let (seq, _, got, _) = deliver(&mut cb);
        assert_eq!(got, id);
        cb.ack(seq).unwrap();
    }
    // Every request the gateway made was offered to the tee; the shadow got each one
    // the tee sent.
    let deadline = Instant::now() + T;
    loop {
        let g = admin_get(&ga, &dg, "/metrics");
        let (sent, dropped) = (
            metric_sum(&g, "switchboard_tee_sent_total"),
            metric_sum(&g, "switchboard_tee_dropped_total"),
        );
        let requests = metric_sum(&g, "switchboard_gateway_requests_total");
        let shadow_got = metric_sum(
            &admin_get(&sa, &sd, "/metrics"),
            "switchboard_router_requests_total",
        );
        if sent > 0 && sent + dropped == requests && shadow_got == sent {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sent {sent} dropped {dropped} requests {requests} shadow {shadow_got}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let g = admin_get(&ga, &dg, "/knobs/tee_sample_percent");
    assert_eq!(g.trim(), "100");
}

/// Issue 15, 2: a send on its way to a router that dies is answered: the gateway
/// answers `Refused{TryAgain}` for everything its lost link had not had answered, and
/// the resend (same id) is stored once and delivered.
#[test]
fn sends_in_flight_when_a_router_dies_are_answered_try_again() {
    let dir = tempfile::tempdir().unwrap();
    let OneRouter {
        r0,
        gw,
        addr,
        fp,
        d0,
        cfg,
    } = one_router(dir.path(), &[]);
    let (a, b) = (phone_on(0, 5), phone_on(1, 5));
    let (mut ca, _) = register(&addr, &fp, &d0.join("sms.log"), a);
    let (mut cb, _) = register(&addr, &fp, &d0.join("sms.log"), b);
    ca.send(b, 1, b"before").unwrap();
    ca.wait_for(T, |m| matches!(m, Incoming::ServerAck { .. }))
        .unwrap();
    let (seq, _, _, _) = deliver(&mut cb);
    cb.ack(seq).unwrap();

    // SAFETY: signalling a child process we started.
    unsafe { libc::kill(r0.child.id() as i32, libc::SIGSTOP) };
    for id in 2..10 {
        ca.send(b, id, b"in flight").unwrap();
    }
    assert!(
        matches!(ca.next(Duration::from_millis(300)), Ok(None)),
        "a frozen router answers nothing"
    );
    r0.kill();
    let r0 = router(None, &cfg, 0, &d0);
    let mut answered = std::collections::BTreeSet::new();
    while answered.len() < 8 {
        match ca
            .wait_for(Duration::from_secs(20), |m| {
                matches!(m, Incoming::ServerAck { .. } | Incoming::Refused { .. })
            })
            .unwrap()
        {
            Incoming::Refused {
                msg_id,
                code: wire::ErrorCode::TryAgain,
                ..
            } => assert!(answered.insert(msg_id), "{msg_id} answered twice"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(answered, (2..10).collect());
    // Resent with the same ids once the router is back: acknowledged and delivered once.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pending: Vec<u64> = (2..10).collect();
    while !pending.is_empty() {
        assert!(Instant::now() < deadline, "not taken again: {pending:?}");
        for id in &pending {
            ca.send(b, *id, b"in flight").unwrap();
        }
        let mut left = vec![];
        for _ in 0..pending.len() {
            match ca
                .wait_for(T, |m| {
                    matches!(m, Incoming::ServerAck { .. } | Incoming::Refused { .. })
                })
                .unwrap()
            {
                Incoming::ServerAck { .. } => {}
                Incoming::Refused { msg_id, .. } => left.push(msg_id),
                other => panic!("{other:?}"),
            }
        }
        pending = left;
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let mut got = std::collections::BTreeSet::new();
    while got.len() < 8 {
        let (seq, from, id, _) = deliver(&mut cb);
        assert_eq!(from, a);
        assert!(got.insert(id), "{id} delivered twice");
        cb.ack(seq).unwrap();
    }
    for p in [gw, r0] {
        p.kill();
    }
}

/// Issue 16, 1, split: a router whose shard is slow but alive (0.5 % of a CPU) pushes
/// back over the link: its link thread waits at the inbox's bound, the gateway's link
/// queue fills, the gateway stops reading the sender; neither process grows, and every
/// acknowledged message is delivered once the shard catches up.
#[test]
fn a_slow_router_shard_pushes_back_over_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let OneRouter {
        r0,
        gw,
        addr,
        fp,
        d0,
        ..
    } = one_router(
        dir.path(),
        &[
            ("[router]\n", "inbox_requests_max = 256\n"),
            (&secret_line(), "link_queue = 256\n"),
            ("[storage]\n", "user_bytes_max = 1073741824\n"),
        ],
    );
    let (a, b) = (phone_on(0, 7), phone_on(1, 7));
    let (ca, _) = register(&addr, &fp, &d0.join("sms.log"), a);
    let (cb, _) = register(&addr, &fp, &d0.join("sms.log"), b);
    let Some(slow) = Throttled::thread(r0.child.id(), "shard-0", 5) else {
        eprintln!(
            "skipped: cannot put a thread in a cpu cgroup here (needs root and cgroup v1 cpu)"
        );
        return;
    };
    const N: u64 = 20_000;
    let body = vec![7u8; 8 * 1024];
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sender = send_pipelined(ca, b, N, body, sent.clone());
    let receiver = receive_all(cb, N);
    std::thread::sleep(Duration::from_millis(500));
    let (r_before, g_before) = (rss_anon_kb(r0.child.id()), rss_anon_kb(gw.child.id()));
    std::thread::sleep(Duration::from_secs(3));
    let stalled_at = sent.load(std::sync::atomic::Ordering::Relaxed);
    let (r_after, g_after) = (rss_anon_kb(r0.child.id()), rss_anon_kb(gw.child.id()));
    eprintln!(
        "slow router shard: sent {stalled_at} of {N}; router {r_before} -> {r_after} kB, gateway {g_before} -> {g_after} kB"
    );
    assert_pushed_back(
        stalled_at,
        N,
        &[
            ("router", r_before, r_after),
            ("gateway", g_before, g_after),
        ],
    );
    drop(slow);
    sender.join().unwrap();
    receiver.join().unwrap();
    for p in [gw, r0] {
        p.kill();
    }
}
