//! The split deployment on a real two-network topology (`scripts/topology.sh`): the
//! client on a public network with the gateway; the gateway and two routers on a private
//! one. Skipped, with a message, where network namespaces cannot be created.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use client::Incoming;
use common::*;
use wire::frame::ReceiptKind;

struct Topology(String);

impl Topology {
    fn up(prefix: &str, n: u32) -> Option<Topology> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/topology.sh");
        let ok = Command::new(script)
            .args(["up", prefix, &n.to_string()])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            let _ = Command::new(script).args(["down", prefix]).output();
            return None;
        }
        Some(Topology(prefix.into()))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/topology.sh");
        let _ = Command::new(script).args(["down", &self.0]).output();
    }
}

/// Two routers and a gateway on a topology: its namespaces (prefix `p`, subnet number
/// `n`), the cluster config and the data directories.
struct Site {
    p: String,
    n: u32,
    cfg: String,
    d0: PathBuf,
    d1: PathBuf,
    dg: PathBuf,
    _dir: tempfile::TempDir,
    _topo: Topology,
}

impl Site {
    /// Builds the topology, or `None` (with a message) where namespaces cannot be made.
    /// With `bind_interface`, the gateway's links must leave by its private interface
    /// (SO_BINDTODEVICE).
    fn up(p: &str, n: u32, bind_interface: bool) -> Option<Site> {
        let Some(topo) = Topology::up(p, n) else {
            eprintln!("SKIPPED: cannot build network namespaces here (needs root and iproute2)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let routers = [
            (0, format!("10.202.{n}.1:7500"), "0-7"),
            (1, format!("10.202.{n}.2:7500"), "8-15"),
        ];
        let interface = bind_interface.then(|| format!("{p}-gw-i"));
        let cfg = config(
            dir.path(),
            &routers,
            &format!("10.202.{n}.10"),
            interface.as_deref(),
        );
        Some(Site {
            p: p.into(),
            n,
            cfg: cfg.to_str().unwrap().into(),
            d0: dir.path().join("r0"),
            d1: dir.path().join("r1"),
            dg: dir.path().join("gw"),
            _dir: dir,
            _topo: topo,
        })
    }

    fn router(&self, id: u16) -> Proc {
        let data = if id == 0 { &self.d0 } else { &self.d1 };
        router(Some(&format!("{}-r{id}", self.p)), &self.cfg, id, data)
    }

    /// The gateway's public (TLS) address.
    fn public(&self) -> String {
        format!("10.201.{}.1:7443", self.n)
    }

    fn gateway(&self) -> Proc {
        let ns = format!("{}-gw", self.p);
        gateway(Some(&ns), &self.cfg, &self.public(), &self.dg)
    }
}

/// Moves the calling thread into a network namespace (sockets it opens live there).
fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
    // SAFETY: setns on a namespace file we opened; affects only this thread.
    assert_eq!(
        unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) },
        0,
        "setns {ns}"
    );
}

#[test]
fn gateway_and_routers_over_a_private_network() {
    let n = 20 + std::process::id() % 200;
    let p = format!("sb{}", std::process::id() % 100_000);
    let Some(site) = Site::up(&p, n, true) else {
        return;
    };
    let (d0, d1) = (site.d0.clone(), site.d1.clone());
    let r0 = site.router(0);
    let mut r1 = Some(site.router(1));
    let public = site.public();
    let gw = site.gateway();
    let fp = gw.fingerprint();

    // The client runs in the client namespace; the main thread restarts router 1 when asked.
    let (ask_tx, ask_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (c_fp, c_public, c_d0, c_d1, c_n, c_ns) = (
        fp.clone(),
        public.clone(),
        d0.clone(),
        d1.clone(),
        n,
        format!("{p}-client"),
    );
    let client = std::thread::spawn(move || {
        enter(&c_ns);
        // Routers listen only on the private network: unreachable from here.
        let private = format!("10.202.{c_n}.1:7500").parse().unwrap();
        assert!(
            std::net::TcpStream::connect_timeout(&private, Duration::from_secs(1)).is_err(),
            "a router is reachable from the public network"
        );

        let (a, b) = (phone_on(0, 0), phone_on(1, 0));
        let (mut ca, _) = register(&c_public, &c_fp, &c_d0.join("sms.log"), a);
        let (mut cb, _) = register(&c_public, &c_fp, &c_d1.join("sms.log"), b);
        ca.send(b, 1, b"over the private network").unwrap();
        let got = cb
            .wait_for(T, |m| matches!(m, Incoming::Deliver { .. }))
            .unwrap();
        let Incoming::Deliver { seq, msg_id: 1, .. } = got else {
            panic!("{got:?}")
        };
        cb.ack(seq).unwrap();
        assert!(matches!(
            ca.wait_for(T, |m| matches!(
                m,
                Incoming::Receipt {
                    kind: ReceiptKind::Delivered,
                    ..
                }
            ))
            .unwrap(),
            Incoming::Receipt { msg_id: 1, .. }
        ));

        // Steady traffic A → B while router 1 (B's) is killed and restarted.
        let total = 300u64;
        let mut sent_at: BTreeMap<u64, Instant> = BTreeMap::new();
        let (mut acked, mut delivered) = (BTreeSet::new(), BTreeSet::new());
        let mut next = 100u64;
        let mut asked = false;
        let deadline = Instant::now() + Duration::from_secs(60);
        while (acked.len() as u64) < total || !acked.is_subset(&delivered) {
            assert!(
                Instant::now() < deadline,
                "acked {} delivered {}",
                acked.len(),
                delivered.len()
            );
            while sent_at.len() < 20 && next < 100 + total {
                ca.send(b, next, b"steady").unwrap();
                sent_at.insert(next, Instant::now());
                next += 1;
            }
            if !asked && next >= 100 + total / 3 {
                asked = true;
                ask_tx.send(()).unwrap();
                done_rx.recv().unwrap();
            }
            while let Some(m) = ca.next(Duration::from_millis(5)).unwrap() {
                match m {
                    Incoming::ServerAck { msg_id, .. } if msg_id >= 100 => {
                        sent_at.remove(&msg_id);
                        acked.insert(msg_id);
                    }
                    Incoming::Refused { msg_id, .. } => {
                        sent_at.insert(msg_id, Instant::now() - Duration::from_secs(10));
                        // resend now
                    }
                    Incoming::Receipt { seq, .. } => ca.ack(seq).unwrap(),
                    _ => {}
                }
            }
            while let Some(m) = cb.next(Duration::from_millis(5)).unwrap() {
                if let Incoming::Deliver { seq, msg_id, .. } = m {
                    if msg_id >= 100 {
                        delivered.insert(msg_id);
                    }
                    cb.ack(seq).unwrap();
                }
            }
            // No tick in 3 s: resend with the same id (the router stores it once).
            let stale: Vec<u64> = sent_at
                .iter()
                .filter(|(_, t)| t.elapsed() > Duration::from_secs(3))
                .map(|(id, _)| *id)
                .collect();
            for id in stale {
                ca.send(b, id, b"steady").unwrap();
                sent_at.insert(id, Instant::now());
            }
        }
        (acked.len(), delivered.len())
    });
    ask_rx.recv().unwrap();
    r1.take().unwrap().kill();
    let r1 = site.router(1);
    done_tx.send(()).unwrap();
    let (acked, delivered) = client.join().unwrap();
    assert!(
        acked >= 300 && delivered >= acked,
        "acked {acked}, delivered {delivered}"
    );
    for proc in [gw, r0, r1] {
        proc.kill();
    }
}

#[test]
fn offline_messages_survive_a_router_kill_and_intruders_get_nothing_over_the_topology() {
    let n = 20 + (std::process::id() + 101) % 200;
    let p = format!("sc{}", std::process::id() % 100_000);
    let Some(site) = Site::up(&p, n, false) else {
        return;
    };
    let (d0, d1) = (site.d0.clone(), site.d1.clone());
    let r0 = site.router(0);
    let r1 = site.router(1);
    let public = site.public();
    let gw = site.gateway();
    let fp = gw.fingerprint();
    let (a, b) = (phone_on(0, 1), phone_on(1, 1));

    // A fake gateway on the private network, without the secret.
    let (gw_ns, r0_addr, victim) = (
        format!("{p}-gw"),
        format!("10.202.{n}.1:7500"),
        phone_on(0, 5),
    );
    std::thread::spawn(move || {
        enter(&gw_ns);
        forged_gateway(&r0_addr, victim, "10.0.0.9");
    })
    .join()
    .unwrap();

    let (c_ns, c_public, c_fp, c_d0, c_d1) = (
        format!("{p}-client"),
        public.clone(),
        fp.clone(),
        d0.clone(),
        d1.clone(),
    );
    let (ask_tx, ask_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        enter(&c_ns);
        // Link bytes to the public port: a TLS listener, they go nowhere.
        {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(&c_public).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = vec![];
            wire::linkcodec::LinkMsg::Challenge { nonce: [0; 32] }.encode(&mut buf);
            let _ = s.write_all(&buf);
            let mut back = vec![];
            let _ = s.read_to_end(&mut back);
            assert!(
                back.len() < 64,
                "the public port answered link traffic with {} bytes",
                back.len()
            );
        }
        let (mut ca, _) = register(&c_public, &c_fp, &c_d0.join("sms.log"), a);
        let (cb, kb) = register(&c_public, &c_fp, &c_d1.join("sms.log"), b);
        drop(cb); // b offline
        std::thread::sleep(Duration::from_millis(200));
        for i in 0..10u64 {
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
        ask_tx.send(()).unwrap(); // kill and restart router 1
        done_rx.recv().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut cb = loop {
            let mut c = client::Client::connect(
                &c_public,
                &client::Trust::Fingerprint(c_fp.clone()),
                "localhost",
                T,
            )
            .unwrap();
            match c.login(b, kb, Duration::from_secs(3)) {
                Ok(n) => {
                    assert_eq!(n, 10);
                    break c;
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(e) => panic!("{e}"),
            }
        };
        for i in 0..10u64 {
            let (seq, _, msg_id, _) = deliver(&mut cb);
            assert_eq!(msg_id, i);
            cb.ack(seq).unwrap();
        }
    });
    ask_rx.recv().unwrap();
    r1.kill();
    let r1 = site.router(1);
    done_tx.send(()).unwrap();
    client.join().unwrap();
    let sms = std::fs::read_to_string(d0.join("sms.log")).unwrap_or_default();
    assert!(
        !sms.contains(&victim.to_string()),
        "a request from the fake peer was acted on"
    );
    for proc in [gw, r0, r1] {
        proc.kill();
    }
}
