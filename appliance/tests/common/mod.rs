//! Helpers for the split-deployment tests (loopback and namespaces).
#![allow(dead_code)] // each test binary uses a subset

use std::io::BufReader;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client::{Client, Incoming, Trust};
use wire::{Key, Phone, Pin};

pub const T: Duration = Duration::from_secs(10);
pub const PARTITIONS: u32 = 16;
pub const SECRET: &str = "split-test-secret-0123456789";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Proc {
    pub child: Child,
    pub lines: Vec<String>,
}

/// Starts `switchboard ARGS` (optionally inside a network namespace) and waits for a
/// stdout line starting with `ready`.
pub fn spawn(netns: Option<&str>, args: &[&str], ready: &str) -> Proc {
    let bin = env!("CARGO_BIN_EXE_switchboard");
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, bin]);
            c
        }
        None => Command::new(bin),
    };
    let mut child = cmd
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut it = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut lines = vec![];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "not ready: {lines:?}");
        let l = it
            .next()
            .unwrap_or_else(|| panic!("exited: {lines:?}"))
            .unwrap();
        let done = l.starts_with(ready);
        lines.push(l);
        if done {
            break;
        }
    }
    std::thread::spawn(move || for _ in it {});
    Proc { child, lines }
}

/// `switchboard router --id ID --config CFG --data DATA`, ready once it listens.
pub fn router(netns: Option<&str>, cfg: &str, id: u16, data: &Path) -> Proc {
    spawn(
        netns,
        &[
            "router",
            "--id",
            &id.to_string(),
            "--config",
            cfg,
            "--data",
            data.to_str().unwrap(),
        ],
        &format!("switchboard: router {id} listening"),
    )
}

/// `switchboard gateway --id 1 --config CFG --listen LISTEN --data DATA`, ready once it
/// listens.
pub fn gateway(netns: Option<&str>, cfg: &str, listen: &str, data: &Path) -> Proc {
    spawn(
        netns,
        &[
            "gateway",
            "--id",
            "1",
            "--config",
            cfg,
            "--listen",
            listen,
            "--data",
            data.to_str().unwrap(),
        ],
        "switchboard: gateway 1 listening",
    )
}

/// A test that fails half-way must not leave its processes running.
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
    pub fn fingerprint(&self) -> String {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix("switchboard: certificate sha256 fingerprint "))
            .unwrap()
            .to_string()
    }
    pub fn listen_addr(&self, prefix: &str) -> String {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }
}

pub fn config(
    dir: &Path,
    routers: &[(u16, String, &str)],
    gateway_source: &str,
    interface: Option<&str>,
) -> PathBuf {
    let mut t = format!("workers = 1\n[router]\npartitions = {PARTITIONS}\n[storage]\nsegment_bytes = 1048576\nprefault = false\n[cluster]\nsecret = \"{SECRET}\"\n");
    for (id, addr, parts) in routers {
        t += &format!(
            "[[cluster.router]]\nid = {id}\naddress = \"{addr}\"\npartitions = \"{parts}\"\n"
        );
    }
    t += &format!("[[cluster.gateway]]\nid = 1\nsource = \"{gateway_source}\"\n");
    if let Some(ifc) = interface {
        t += &format!("interface = \"{ifc}\"\n");
    }
    let p = dir.join("cluster.toml");
    std::fs::write(&p, t).unwrap();
    p
}

/// Adds lines to the configuration file `cfg`: each `(after, lines)` puts `lines` right
/// after the first occurrence of `after` (a section header such as `"[storage]\n"`, or
/// a whole line).
pub fn add_to_config(cfg: &Path, additions: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(cfg).unwrap();
    for (after, lines) in additions {
        let at = text
            .find(after)
            .unwrap_or_else(|| panic!("no {after:?} in {text}"));
        text.insert_str(at + after.len(), lines);
    }
    std::fs::write(cfg, text).unwrap();
}

/// The `secret = ...` line of [`config`], to add lines to `[cluster]` after.
pub fn secret_line() -> String {
    format!("secret = \"{SECRET}\"\n")
}

/// One router (id 0, every partition, data in `dir/r0`) and one gateway (id 1) on
/// loopback, started from [`config`] with `additions` ([`add_to_config`]).
pub struct OneRouter {
    pub r0: Proc,
    pub gw: Proc,
    /// The gateway's public address and certificate fingerprint.
    pub addr: String,
    pub fp: String,
    /// The router's data directory (its `sms.log` has the PINs).
    pub d0: PathBuf,
    /// The configuration file (to start a role again).
    pub cfg: String,
}

pub fn one_router(dir: &Path, additions: &[(&str, &str)]) -> OneRouter {
    let routers = [(0, format!("127.0.0.1:{}", free_port()), "0-15")];
    let cfg = config(dir, &routers, "127.0.0.1", None);
    add_to_config(&cfg, additions);
    let cfg = cfg.to_str().unwrap().to_string();
    let d0 = dir.join("r0");
    let r0 = router(None, &cfg, 0, &d0);
    let gw = gateway(None, &cfg, "127.0.0.1:0", &dir.join("gw"));
    let (addr, fp) = (
        gw.listen_addr("switchboard: gateway 1 listening on "),
        gw.fingerprint(),
    );
    OneRouter {
        r0,
        gw,
        addr,
        fp,
        d0,
        cfg,
    }
}

/// A phone number whose partition belongs to router `r` (partitions 0-7 → 0, 8-15 → 1).
pub fn phone_on(r: u16, nth: u64) -> Phone {
    (15550000000u64..)
        .map(|n| Phone::new(n).unwrap())
        .filter(|p| (router::partition_of(*p, PARTITIONS) >= 8) == (r == 1))
        .nth(nth as usize)
        .unwrap()
}

pub fn pin_from(sms_log: &Path, phone: Phone) -> Pin {
    let deadline = Instant::now() + T;
    loop {
        let text = std::fs::read_to_string(sms_log).unwrap_or_default();
        if let Some(pin) = text.lines().rev().find_map(|l| {
            let mut it = l.split_whitespace().skip(1);
            (it.next() == Some(&phone.to_string()))
                .then(|| it.next())
                .flatten()
        }) {
            return Pin::new(pin.parse().unwrap()).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no PIN for {phone} in {}",
            sms_log.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn register(addr: &str, fp: &str, sms_log: &Path, p: Phone) -> (Client, Key) {
    let mut c = Client::connect(addr, &Trust::Fingerprint(fp.into()), "localhost", T).unwrap();
    c.request_pin(p, T).unwrap();
    let key = c.verify(p, pin_from(sms_log, p), T).unwrap();
    c.login(p, key, T).unwrap();
    (c, key)
}

/// Waits for the next delivery: (seq, from, msg_id, body).
pub fn deliver(c: &mut Client) -> (u64, Phone, u64, Vec<u8>) {
    deliver_within(c, T)
}

/// [`deliver`], waiting up to `t`.
pub fn deliver_within(c: &mut Client, t: Duration) -> (u64, Phone, u64, Vec<u8>) {
    match c
        .wait_for(t, |m| matches!(m, Incoming::Deliver { .. }))
        .unwrap()
    {
        Incoming::Deliver {
            seq,
            from,
            msg_id,
            body,
            ..
        } => (seq, from, msg_id, body),
        _ => unreachable!(),
    }
}

/// Plays a gateway without the secret against the router at `addr`: reads the
/// challenge, answers with a made-up MAC, then asks to register `victim` from `source`.
/// Asserts the router sends nothing back; returns the bytes it wrote.
pub fn forged_gateway(addr: &str, victim: Phone, source: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut challenge = [0u8; 40];
    s.read_exact(&mut challenge).unwrap();
    let mut buf = vec![];
    wire::linkcodec::LinkMsg::Auth {
        peer: wire::linkcodec::PeerKind::Gateway,
        id: 9,
        nonce: [1; 32],
        mac: [2; 32],
    }
    .encode(&mut buf);
    let req = wire::link::ToRouter::Register {
        conn: wire::link::ConnId(9 << 56),
        phone: victim,
        source: source.parse().unwrap(),
    };
    wire::linkcodec::LinkMsg::Req(req).encode(&mut buf);
    let _ = s.write_all(&buf);
    let mut rest = vec![];
    let _ = s.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "the router answered an unauthenticated peer: {rest:?}"
    );
    buf
}

/// A mock HTTP endpoint (an SMS provider, an alert webhook): records every POST body;
/// answers 503 to the first when `fail_first`, 200 otherwise. Its URL and the bodies.
pub fn mock_http(fail_first: bool) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/send", listener.local_addr().unwrap());
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).unwrap();
            seen.lock().unwrap().push(String::from_utf8(body).unwrap());
            let status = if n == 0 && fail_first {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (url, bodies)
}

/// A `switchboard` process whose printed lines (stdout and stderr) are all kept; killed
/// on drop.
pub struct Printed {
    pub child: Child,
    pub lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Printed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Printed {
    /// Starts `switchboard ARGS`.
    pub fn run(args: &[&std::ffi::OsStr]) -> Printed {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let l = std::sync::Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    l.lock().unwrap().push(line);
                }
            });
        }
        Printed { child, lines }
    }

    /// The first printed line containing `needle` (waits for it at most `within`).
    pub fn line(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needle:?}: {:?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The word after `prefix` in the first line that has it (an address, a fingerprint).
    pub fn word_after(&self, prefix: &str) -> String {
        let l = self.line(prefix, Duration::from_secs(30));
        l.split(prefix)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap()
            .to_string()
    }
}

/// `GET path` on an admin API, with the token from `data/admin.token`: the body.
pub fn admin_get(admin: &str, data: &Path, path: &str) -> String {
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        token.trim()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n")
        .map_or(text.clone(), |(_, b)| b.to_string())
}

/// The value of one series of a Prometheus text (`name{labels}`), if present.
pub fn series(text: &str, name_and_labels: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name_and_labels)?
            .strip_prefix(' ')?
            .parse()
            .ok()
    })
}

/// `switchboard ARGS --admin ADMIN --data DATA`: an operator command against a running
/// process's admin API, with the token from its data directory.
pub fn admin_cli(admin: &str, data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .args(["--admin", admin, "--data"])
        .arg(data)
        .output()
        .unwrap()
}

/// The sum of a metric over its label sets in a Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            (series.split('{').next()? == name).then(|| v.parse::<u64>().ok())?
        })
        .sum()
}

/// Moves one thread of a process into a v1 `cpu` cgroup limited to `permille` of a CPU
/// for the life of the value: a shard that is slow but alive (root only).
pub struct Throttled {
    dir: std::path::PathBuf,
    tid: String,
}

impl Throttled {
    pub fn thread(pid: u32, name: &str, permille: u32) -> Option<Throttled> {
        let tid = std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
            .find(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name)
            })?
            .file_name()
            .to_string_lossy()
            .into_owned();
        let dir = std::path::PathBuf::from(format!("/sys/fs/cgroup/cpu/switchboard-test-{pid}"));
        std::fs::create_dir_all(&dir).ok()?;
        let t = Throttled { dir, tid };
        std::fs::write(t.dir.join("cpu.cfs_period_us"), "1000000").ok()?;
        std::fs::write(
            t.dir.join("cpu.cfs_quota_us"),
            (permille * 1000).to_string(),
        )
        .ok()?;
        std::fs::write(t.dir.join("tasks"), &t.tid).ok()?;
        Some(t)
    }
}

impl Drop for Throttled {
    fn drop(&mut self) {
        let _ = std::fs::write("/sys/fs/cgroup/cpu/tasks", &self.tid);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Anonymous resident memory (the log's mapped segments are file pages, not counted).
pub fn rss_anon_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Sends `n` messages of `body` from `c` to `to` as fast as the connection takes them
/// (counting them in `sent`), then waits for every `ServerAck` (receipts are ignored).
pub fn send_pipelined(
    mut c: Client,
    to: Phone,
    n: u64,
    body: Vec<u8>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut acked = 0;
        for i in 0..n {
            c.send(to, i, &body).unwrap();
            sent.store(i + 1, std::sync::atomic::Ordering::Relaxed);
            while let Some(m) = c.next(Duration::ZERO).unwrap() {
                match m {
                    Incoming::ServerAck { .. } => acked += 1,
                    Incoming::Receipt { .. } => {} // the recipient's ticks
                    other => panic!("{other:?}"),
                }
            }
        }
        while acked < n {
            c.wait_for(Duration::from_secs(60), |m| {
                matches!(m, Incoming::ServerAck { .. })
            })
            .unwrap();
            acked += 1;
        }
    })
}

/// What a slow but live shard must do to a sender of `n` messages that had sent
/// `stalled_at` when measured: stall it (under half sent), while each process's
/// anonymous memory, `(name, before kB, after kB)`, grows by under 64 MB.
pub fn assert_pushed_back(stalled_at: u64, n: u64, memory: &[(&str, u64, u64)]) {
    assert!(
        stalled_at < n / 2,
        "the sender was not slowed: {stalled_at} of {n}"
    );
    for (name, before, after) in memory {
        assert!(
            *after < before + 64 * 1024,
            "the {name} grew: {before} -> {after} kB"
        );
    }
}

/// Receives and acknowledges deliveries on `c` until `n` distinct message ids came.
pub fn receive_all(mut c: Client, n: u64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut got = std::collections::BTreeSet::new();
        while (got.len() as u64) < n {
            let (seq, _, id, _) = deliver_within(&mut c, Duration::from_secs(60));
            got.insert(id);
            c.ack(seq).unwrap();
        }
    })
}
