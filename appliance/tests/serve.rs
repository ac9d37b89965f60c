//! The real `switchboard serve` process on a free loopback port, driven by the client
//! SDK: registration through the `log` SMS sink, messages with ticks and receipts,
//! offline delivery, SIGKILL and restart, re-registration, wrong PINs, and bad input
//! that closes one connection while others carry on.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client::{Client, ClientError, Incoming, Trust};
use wire::frame::ReceiptKind;
use wire::{ErrorCode, Key, Phone, Pin};

use common::{deliver, T};

struct Server {
    child: Child,
    addr: String,
    fingerprint: String,
    data: PathBuf,
}

/// A test that fails half-way must not leave its server running.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(data: &Path) -> Server {
        Server::start_with(data, &[])
    }

    /// Starts with `toml` as its configuration (written to `dir`), data in `dir/data`.
    fn with_config(dir: &Path, toml: &str) -> Server {
        let config = dir.join("test.toml");
        std::fs::write(&config, toml).unwrap();
        Server::start_with(&dir.join("data"), &["--config", config.to_str().unwrap()])
    }

    fn start_with(data: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut addr, mut fingerprint) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while addr.is_none() {
            assert!(Instant::now() < deadline, "serve did not start");
            let line = lines.next().expect("serve exited").unwrap();
            if let Some(f) = line.strip_prefix("switchboard: certificate sha256 fingerprint ") {
                fingerprint = Some(f.to_string());
            }
            if let Some(rest) = line.strip_prefix("switchboard: listening on ") {
                addr = rest.split_whitespace().next().map(str::to_string);
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr: addr.unwrap(),
            fingerprint: fingerprint.unwrap(),
            data: data.to_owned(),
        }
    }

    fn client(&self) -> Client {
        Client::connect(
            &self.addr,
            &Trust::Fingerprint(self.fingerprint.clone()),
            "localhost",
            T,
        )
        .unwrap()
    }

    /// The last PIN the SMS log has for `phone`.
    fn pin(&self, phone: Phone) -> Pin {
        common::pin_from(&self.data.join("sms.log"), phone)
    }

    fn register(&self, phone: Phone) -> (Client, Key) {
        common::register(
            &self.addr,
            &self.fingerprint,
            &self.data.join("sms.log"),
            phone,
        )
    }

    fn kill(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    fn stop(mut self) {
        // SAFETY: sending SIGTERM to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "clean stop: {status}");
    }
}

fn phone(n: u64) -> Phone {
    Phone::new(n).unwrap()
}

fn receipt(c: &mut Client, kind: ReceiptKind) -> (u64, u64) {
    match c
        .wait_for(
            T,
            |m| matches!(m, Incoming::Receipt { kind: k, .. } if *k == kind),
        )
        .unwrap()
    {
        Incoming::Receipt { seq, msg_id, .. } => (seq, msg_id),
        _ => unreachable!(),
    }
}

/// `--config` for the other way the all-in-one runs: one gateway worker with the
/// router shard in its thread (the default elsewhere here is a thread per shard).
fn inline(dir: &Path) -> Vec<String> {
    let cfg = dir.join("inline.toml");
    std::fs::write(&cfg, "workers = 1\nshards = 1\n").unwrap();
    vec!["--config".into(), cfg.to_str().unwrap().into()]
}

#[test]
fn two_users_online_exchange_messages_with_ticks_and_receipts() {
    exchange(&[]);
}

#[test]
fn two_users_exchange_messages_with_the_shard_in_the_worker_thread() {
    let cfg = tempfile::tempdir().unwrap();
    let args = inline(cfg.path());
    exchange(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

fn exchange(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), extra);
    let (a, b) = (phone(15550000001), phone(15550000002));
    let (mut ca, _) = s.register(a);
    let (mut cb, _) = s.register(b);
    ca.send(b, 1, b"hello bob").unwrap();
    assert_eq!(
        ca.wait_for(T, |m| matches!(m, Incoming::ServerAck { .. }))
            .unwrap(),
        Incoming::ServerAck { to: b, msg_id: 1 }
    );
    let (seq, from, id, body) = deliver(&mut cb);
    assert_eq!((from, id, &body[..]), (a, 1, &b"hello bob"[..]));
    cb.ack(seq).unwrap();
    let (rseq, rid) = receipt(&mut ca, ReceiptKind::Delivered);
    assert_eq!(rid, 1);
    ca.ack(rseq).unwrap();
    cb.read(a, 1).unwrap();
    let (rseq, _) = receipt(&mut ca, ReceiptKind::Read);
    ca.ack(rseq).unwrap();
    s.stop();
    // A clean stop closes every connection with a reason.
    match ca.wait_for(T, |_| false) {
        Err(ClientError::Closed {
            code: ErrorCode::ServerShutdown,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_offline_recipient_gets_everything_in_order_and_nothing_acked_is_lost_to_sigkill() {
    offline(&[], true);
}

#[test]
fn with_the_shard_in_the_worker_thread_nothing_acked_is_lost_to_sigkill_or_a_stop() {
    let cfg = tempfile::tempdir().unwrap();
    let args = inline(cfg.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    offline(&args, true);
    offline(&args, false);
}

/// `a` sends 50 messages to the offline `b`; once all are acknowledged the server is
/// killed (`kill`) or stopped with SIGTERM, and `b` gets all 50, in order, after the
/// restart.
fn offline(extra: &[&str], kill: bool) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), extra);
    let (a, b) = (phone(15550000011), phone(15550000012));
    let (mut ca, _) = s.register(a);
    let (cb, kb) = s.register(b);
    // b goes offline (no need to wait: messages sent to a connection that is closing
    // stay pending, unacknowledged, like those stored for an offline user).
    drop(cb);
    for i in 0..50u64 {
        ca.send(b, i, format!("m{i}").as_bytes()).unwrap();
    }
    let mut acked = 0;
    while acked < 50 {
        if let Incoming::ServerAck { .. } = ca
            .wait_for(T, |m| matches!(m, Incoming::ServerAck { .. }))
            .unwrap()
        {
            acked += 1;
        }
    }
    // Everything acknowledged must survive.
    if kill {
        s.kill();
    } else {
        s.stop();
    }
    let s = Server::start_with(dir.path(), extra);
    let mut cb = s.client();
    assert_eq!(cb.login(b, kb, T).unwrap(), 50);
    for i in 0..50u64 {
        let (seq, from, id, body) = deliver(&mut cb);
        assert_eq!((from, id, body), (a, i, format!("m{i}").into_bytes()));
        cb.ack(seq).unwrap();
    }
    s.stop();
}

#[test]
fn re_registration_closes_the_old_device_and_five_wrong_pins_void_the_pin() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let a = phone(15550000021);
    let (mut old, old_key) = s.register(a);
    let (_new, _) = s.register(a);
    match old.wait_for(T, |_| false) {
        Err(ClientError::Closed {
            code: ErrorCode::LoggedInElsewhere,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let mut c = s.client();
    assert!(matches!(
        c.login(a, old_key, T),
        Err(ClientError::Closed {
            code: ErrorCode::AuthFailed,
            ..
        })
    ));

    let b = phone(15550000022);
    let mut c = s.client();
    c.request_pin(b, T).unwrap();
    let pin = s.pin(b);
    let wrong = Pin::new((pin.get() + 1) % 100_000).unwrap();
    for _ in 0..5 {
        assert!(matches!(
            c.verify(b, wrong, T),
            Err(ClientError::Server {
                code: ErrorCode::PinWrong,
                ..
            })
        ));
    }
    assert!(matches!(
        c.verify(b, pin, T),
        Err(ClientError::Server {
            code: ErrorCode::PinInvalid,
            ..
        })
    ));
    s.stop();
}

/// Opens a raw TLS-less or TLS connection, sends bytes, returns what came back (until
/// the server closes it, or 5 s).
fn raw(s: &Server, bytes: &[u8]) -> Vec<u8> {
    let mut t = TcpStream::connect(&s.addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    t.write_all(bytes).unwrap();
    let mut out = vec![];
    let _ = t.read_to_end(&mut out);
    out
}

#[test]
fn bad_input_closes_that_connection_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let (a, b) = (phone(15550000031), phone(15550000032));
    let (mut ca, _) = s.register(a);
    let (mut cb, _) = s.register(b);

    // Plain bytes instead of TLS: closed, nothing sent back in clear.
    let back = raw(&s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!back.starts_with(b"HTTP"), "{back:?}");

    // Over TLS: garbage, a frame over the limit, frames before login, an unknown kind.
    let cases: [(&[u8], ErrorCode); 4] = [
        (
            &[0xde, 0xad, 0xbe, 0xef, 0x99, 0, 0, 0],
            ErrorCode::FrameTooLarge,
        ),
        (
            &[0x00, 0x00, 0x10, 0x00, 0x20, 0, 0, 0],
            ErrorCode::FrameTooLarge,
        ),
        (
            &[
                24, 0, 0, 0, 0x20, 0, 0, 0, 0x3c, 0xb5, 0xa6, 0x9f, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0,
                0, 0, b'h', b'i', b'!', b'!', b'!', b'!', b'!', b'!',
            ],
            ErrorCode::NotLoggedIn,
        ),
        (
            &[4, 0, 0, 0, 0x7e, 0, 0, 0, 1, 2, 3, 4],
            ErrorCode::UnknownKind,
        ),
    ];
    for (bytes, code) in cases {
        let mut c = s.client();
        c.send_raw_for_tests(bytes).unwrap();
        match c.wait_for(T, |_| false) {
            Err(ClientError::Closed { code: got, reason }) => assert_eq!(got, code, "{reason}"),
            other => panic!("{code:?}: {other:?}"),
        }
    }

    // A truncated frame followed by silence: still open (incomplete is not invalid).
    let mut c = s.client();
    c.send_raw_for_tests(&[16, 0, 0]).unwrap();
    assert!(matches!(c.next(Duration::from_millis(300)), Ok(None)));

    // The unrelated users kept working all along.
    ca.send(b, 9, b"still here").unwrap();
    let (seq, _, id, _) = deliver(&mut cb);
    assert_eq!(id, 9);
    cb.ack(seq).unwrap();
    s.stop();
}

/// A stand-in SMS provider: answers 503 to the first request and 200 after, and keeps
/// the JSON bodies it was sent.
#[test]
fn pins_go_to_an_http_sms_provider_with_retries() {
    let (url, bodies) = common::mock_http(true);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sms.toml");
    std::fs::write(
        &config,
        format!("[sms]\nkind = \"http\"\nurl = \"{url}\"\nretries = 2\ntimeout_ms = 2000\n"),
    )
    .unwrap();
    let s = Server::start_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let a = phone(15550000041);
    let mut c = s.client();
    c.request_pin(a, T).unwrap();
    let deadline = Instant::now() + T;
    while bodies.lock().unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the provider was not retried: {:?}",
            bodies.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let body = bodies.lock().unwrap()[1].clone();
    assert!(body.contains("\"to\":\"+15550000041\""), "{body}");
    let pin: u32 = body.split("\"pin\":\"").nth(1).unwrap()[..5]
        .parse()
        .unwrap();
    c.verify(a, Pin::new(pin).unwrap(), T).unwrap();
    assert!(
        !s.data.join("sms.log").exists(),
        "the http sink does not write the log file"
    );
    s.stop();
}

#[test]
fn a_bad_config_is_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[sms]\nkind = \"http\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sms.url"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&config, "workers = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn a_truncated_frame_then_silence_is_closed_with_a_timeout_reason() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::with_config(dir.path(), "[limits]\nlogin_timeout_ms = 1000\n");
    let mut c = s.client();
    c.send_raw_for_tests(&[16, 0, 0]).unwrap();
    assert!(
        matches!(c.next(Duration::from_millis(300)), Ok(None)),
        "incomplete is not invalid"
    );
    match c.wait_for(Duration::from_secs(5), |_| false) {
        Err(ClientError::Closed {
            code: ErrorCode::LoginTimeout,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    s.stop();
}

#[test]
fn a_connection_storm_is_refused_past_the_accept_rate_and_established_users_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::with_config(dir.path(), "workers = 1\n[gateway]\naccepts_per_sec = 5\n");
    let (a, b) = (phone(15550000051), phone(15550000052));
    let (mut ca, _) = s.register(a);
    std::thread::sleep(Duration::from_millis(1100)); // a fresh one-second window
    let (mut cb, _) = s.register(b);
    std::thread::sleep(Duration::from_millis(1100));
    let mut ok = 0;
    for _ in 0..30 {
        if Client::connect(
            &s.addr,
            &Trust::Fingerprint(s.fingerprint.clone()),
            "localhost",
            Duration::from_secs(2),
        )
        .is_ok()
        {
            ok += 1;
        }
    }
    assert!(
        (1..=10).contains(&ok),
        "{ok} of 30 accepted within about a second at 5/s"
    );
    ca.send(b, 1, b"through the storm").unwrap();
    let (seq, _, id, _) = deliver(&mut cb);
    assert_eq!(id, 1);
    cb.ack(seq).unwrap();
    s.stop();
}

/// Issue 15, 1: 200 offline messages of 60,000 bytes used to close the recipient's login
/// as a slow reader before `LoggedIn` (64 × 60 KB pushed at once is over the 1 MiB
/// outbound limit). The window is bounded in bytes too: all of them arrive.
#[test]
fn an_inbox_of_large_messages_drains_to_a_reading_client() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let (a, b) = (phone(15550000041), phone(15550000042));
    let (mut ca, _) = s.register(a);
    let (cb, kb) = s.register(b);
    drop(cb);
    const N: u64 = 200;
    let body = vec![0x5a; 60_000];
    for i in 0..N {
        ca.send(b, i, &body).unwrap();
        ca.wait_for(T, |m| matches!(m, Incoming::ServerAck { .. }))
            .unwrap();
    }
    let mut cb = s.client();
    assert_eq!(cb.login(b, kb, T).unwrap(), N as u32);
    for i in 0..N {
        let (seq, from, id, got) = deliver(&mut cb);
        assert_eq!((from, id, got.len()), (a, i, body.len()));
        cb.ack(seq).unwrap();
    }
    s.stop();
}

/// Issue 15, 3: a `Read` is forwarded only for a message the reader received. X claims
/// to have read A's messages to B; A hears only B's real read receipt.
#[test]
fn read_receipts_come_only_from_who_received_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let (a, b, x) = (phone(15550000051), phone(15550000052), phone(15550000053));
    let (mut ca, _) = s.register(a);
    let (mut cb, _) = s.register(b);
    let (mut cx, _) = s.register(x);
    for i in 1..=3 {
        ca.send(b, i, b"for b").unwrap();
        ca.wait_for(T, |m| matches!(m, Incoming::ServerAck { .. }))
            .unwrap();
    }
    for _ in 1..=3 {
        let (seq, _, _, _) = deliver(&mut cb);
        cb.ack(seq).unwrap();
    }
    for _ in 1..=3 {
        let (seq, _) = receipt(&mut ca, ReceiptKind::Delivered);
        ca.ack(seq).unwrap();
    }
    for i in 1..=3 {
        cx.read(a, i).unwrap();
    }
    cb.read(a, 4).unwrap(); // never sent
    cb.read(a, 2).unwrap();
    match ca
        .wait_for(T, |m| matches!(m, Incoming::Receipt { .. }))
        .unwrap()
    {
        Incoming::Receipt {
            by,
            msg_id,
            kind: ReceiptKind::Read,
            ..
        } => assert_eq!((by, msg_id), (b, 2), "the first read receipt is B's"),
        other => panic!("{other:?}"),
    }
    // X's reads went in before B's, on the same path: nothing else comes.
    let more = ca.next(Duration::from_millis(300)).unwrap();
    assert!(more.is_none(), "a made-up read receipt reached A: {more:?}");
    s.stop();
}

/// Issue 15, 6: a client that never logs in but keeps talking is closed when the time
/// to log in (from the accept) runs out, and a pre-login frame larger than any
/// pre-login frame is refused from its envelope.
#[test]
fn talking_without_logging_in_does_not_keep_a_connection() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::with_config(dir.path(), "[limits]\nlogin_timeout_ms = 1000\n");
    let mut c = s.client();
    let started = Instant::now();
    let ended = loop {
        assert!(started.elapsed() < Duration::from_secs(10), "still open");
        if let Err(e) = c.ping(1) {
            break e;
        }
        match c.next(Duration::from_millis(200)) {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            ended,
            ClientError::Closed {
                code: ErrorCode::LoginTimeout,
                ..
            }
        ),
        "{ended:?}"
    );
    let mut c = s.client();
    c.send_raw_for_tests(&[0x60, 0xea, 0, 0, 0x20, 0, 0, 0])
        .unwrap();
    match c.wait_for(Duration::from_secs(5), |_| false) {
        Err(ClientError::Closed {
            code: ErrorCode::FrameTooLarge,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    s.stop();
}

fn code_of<T: std::fmt::Debug>(r: Result<T, ClientError>) -> Option<ErrorCode> {
    match r {
        Ok(_) => None,
        Err(ClientError::Server { code, .. } | ClientError::Closed { code, .. }) => Some(code),
        Err(e) => panic!("{e}"),
    }
}

/// Issue 15, 4 and 5: the limits per source address hold for the whole appliance (two
/// workers, two shards: they used to count per shard), PIN guesses are limited per
/// source, and a connection that keeps guessing is closed.
#[test]
fn limits_per_source_and_per_connection_hold_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::with_config(
        dir.path(),
        "workers = 2\nshards = 2\n[router]\npin_requests_per_source_hour = 5\n\
         pin_guesses_per_source_hour = 7\n[limits]\npin_guesses_per_connection = 3\n",
    );
    // Twelve numbers (spread over both shards), each on its own connection (spread over
    // both workers): five PINs, then RateLimited.
    let answers: Vec<Option<ErrorCode>> = (0..12)
        .map(|i| code_of(s.client().request_pin(phone(15550001000 + i), T)))
        .collect();
    assert_eq!(
        answers.iter().filter(|a| a.is_none()).count(),
        5,
        "{answers:?}"
    );
    assert!(answers[5..]
        .iter()
        .all(|a| *a == Some(ErrorCode::RateLimited)));

    // Guesses: three per connection, the fourth closes it.
    let wrong = Pin::new(1).unwrap();
    let mut c = s.client();
    for _ in 0..3 {
        assert_eq!(
            code_of(c.verify(phone(15550001000), wrong, T)),
            Some(ErrorCode::PinWrong)
        );
    }
    assert_eq!(
        code_of(c.verify(phone(15550001000), wrong, T)),
        Some(ErrorCode::RateLimited)
    );
    // Per source: seven in the hour over all connections (three used), then refused.
    let mut c = s.client();
    for _ in 0..3 {
        assert_eq!(
            code_of(c.verify(phone(15550001001), wrong, T)),
            Some(ErrorCode::PinWrong)
        );
    }
    let mut c = s.client();
    assert_eq!(
        code_of(c.verify(phone(15550001002), wrong, T)),
        Some(ErrorCode::PinWrong)
    );
    assert_eq!(
        code_of(c.verify(phone(15550001002), wrong, T)),
        Some(ErrorCode::RateLimited)
    );
    s.stop();
}

/// Issue 15, 8: a message id reused for another body is refused with `IdReused`, while
/// pending and after delivery; a resend of the same body is acknowledged and stored once.
#[test]
fn a_reused_message_id_with_another_body_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let (a, b) = (phone(15550000061), phone(15550000062));
    let (mut ca, _) = s.register(a);
    let (cb, kb) = s.register(b);
    drop(cb);
    let answer = |c: &mut Client, id: u64, body: &[u8]| {
        c.send(b, id, body).unwrap();
        match c
            .wait_for(T, |m| {
                matches!(m, Incoming::ServerAck { .. } | Incoming::Refused { .. })
            })
            .unwrap()
        {
            Incoming::ServerAck { msg_id, .. } if msg_id == id => None,
            Incoming::Refused { msg_id, code, .. } if msg_id == id => Some(code),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(answer(&mut ca, 1, b"first"), None);
    assert_eq!(answer(&mut ca, 1, b"other"), Some(ErrorCode::IdReused));
    assert_eq!(answer(&mut ca, 1, b"first"), None, "a resend");
    let mut cb = s.client();
    assert_eq!(cb.login(b, kb, T).unwrap(), 1, "stored once");
    let (seq, _, id, body) = deliver(&mut cb);
    assert_eq!((id, &body[..]), (1, &b"first"[..]));
    cb.ack(seq).unwrap();
    receipt(&mut ca, ReceiptKind::Delivered);
    // After delivery, the same: another body is refused, the same is a resend.
    assert_eq!(answer(&mut ca, 1, b"later"), Some(ErrorCode::IdReused));
    assert_eq!(answer(&mut ca, 1, b"first"), None);
    assert!(matches!(cb.next(Duration::from_millis(300)), Ok(None)));
    s.stop();
}
