//! The connection state machine against a real rustls client, in memory: handshake,
//! Hello/Welcome, registration and login requests, delivery, and every kind of bad
//! input, each closing only that connection with a clear reason.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use gateway::tls::{server_config, Identity};
use gateway::{Conn, Ended, Limits, Phase};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use wire::frame::{decode, Frame};
use wire::link::{ConnId, ToClient, ToRouter};
use wire::{ErrorCode, Key, Phone, Pin, PROTOCOL_VERSION};

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Pair {
    client: ClientConnection,
    server: Conn,
    to_router: Vec<ToRouter>,
    now: u64,
    received: Vec<u8>,
}

fn setup(limits: Limits) -> Pair {
    let (server_cfg, client_cfg) = configs(&[&rustls::version::TLS13, &rustls::version::TLS12]);
    pair(limits, &server_cfg, &client_cfg)
}

fn configs(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (Arc<rustls::ServerConfig>, Arc<ClientConfig>) {
    let dir = tempfile::tempdir().unwrap();
    let (id, _) = Identity::self_signed_in(dir.path(), &[]).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(id.chain[0].clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (server_config(id).unwrap(), Arc::new(client_config))
}

fn pair(
    limits: Limits,
    server_cfg: &Arc<rustls::ServerConfig>,
    client_cfg: &Arc<ClientConfig>,
) -> Pair {
    let name = ServerName::try_from("localhost").unwrap();
    let client = ClientConnection::new(Arc::clone(client_cfg), name).unwrap();
    let server = Conn::new(
        Arc::clone(server_cfg),
        Arc::new(limits),
        ConnId(7),
        PEER,
        1_000,
    )
    .unwrap();
    Pair {
        client,
        server,
        to_router: vec![],
        now: 1_000,
        received: vec![],
    }
}

#[test]
fn tls12_works_and_tickets_resume_sessions() {
    let (s12, c12) = configs(&[&rustls::version::TLS12]);
    let mut p = pair(Limits::default(), &s12, &c12);
    p.hello();
    assert_eq!(
        p.client.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );

    let (s, c) = configs(&[&rustls::version::TLS13]);
    let mut first = pair(Limits::default(), &s, &c);
    first.hello();
    assert_eq!(
        first.client.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    let mut second = pair(Limits::default(), &s, &c);
    second.hello();
    assert_eq!(
        second.client.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed),
        "a session ticket resumed it"
    );
}

impl Pair {
    /// Moves bytes both ways until neither side has anything to send.
    fn pump(&mut self) {
        for _ in 0..100 {
            let mut c2s = vec![];
            while self.client.wants_write() {
                self.client.write_tls(&mut c2s).unwrap();
            }
            if !c2s.is_empty() {
                self.server.receive(&c2s, self.now, &mut self.to_router);
            }
            let s2c = self.server.take_outgoing();
            if !s2c.is_empty() {
                let mut rd = &s2c[..];
                while !rd.is_empty() {
                    if self.client.read_tls(&mut rd).unwrap() == 0 {
                        break;
                    }
                    if self.client.process_new_packets().is_err() {
                        return;
                    }
                }
                let mut buf = vec![0u8; 1 << 16];
                while let Ok(n) = self.client.reader().read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    self.received.extend_from_slice(&buf[..n]);
                }
            }
            if c2s.is_empty() && s2c.is_empty() {
                return;
            }
        }
        panic!("no quiescence");
    }

    fn send(&mut self, f: Frame<'_>) {
        let mut buf = vec![];
        f.encode(&mut buf);
        self.send_raw(&buf);
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.client.writer().write_all(bytes).unwrap();
        self.pump();
    }

    /// Decoded frames received so far (as their Debug text, drained).
    fn frames(&mut self) -> Vec<String> {
        let mut out = vec![];
        let mut at = 0;
        while let Ok((f, n)) = decode(&self.received[at..], 1 << 20) {
            out.push(format!("{f:?}"));
            at += n;
        }
        self.received.drain(..at);
        out
    }

    fn hello(&mut self) {
        self.pump();
        self.send(Frame::Hello {
            min_version: 1,
            max_version: 3,
        });
        let f = self.frames();
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].starts_with(&format!("Welcome {{ version: {PROTOCOL_VERSION}")),
            "{f:?}"
        );
        assert_eq!(self.server.phase(), Phase::Open);
    }

    fn login(&mut self, user: Phone) {
        self.send(Frame::Login {
            phone: user,
            key: Key([1; 32]),
        });
        assert!(matches!(self.to_router.pop(), Some(ToRouter::Login { .. })));
        self.server.deliver(
            &ToClient::LoggedIn { user, pending: 0 },
            self.now,
            &mut self.to_router,
        );
        self.pump();
        assert_eq!(self.frames(), vec!["LoggedIn { pending: 0 }"]);
    }

    fn closed_with(&mut self, code: ErrorCode) {
        let f = self.frames();
        assert!(
            f.last()
                .is_some_and(|l| l.starts_with(&format!("Close {{ code: {code:?}"))),
            "{f:?}"
        );
        assert!(
            matches!(self.server.ended(), Some(Ended::ByServer(c, _)) if *c == code),
            "{:?}",
            self.server.ended()
        );
    }
}

fn phone(n: u64) -> Phone {
    Phone::new(n).unwrap()
}

#[test]
fn hello_register_login_send_deliver() {
    let mut p = setup(Limits::default());
    p.hello();
    p.send(Frame::RegisterRequest {
        phone: phone(15550000001),
    });
    assert!(
        matches!(p.to_router.pop(), Some(ToRouter::Register { phone: ph, .. }) if ph == phone(15550000001))
    );
    p.send(Frame::Verify {
        phone: phone(15550000001),
        pin: Pin::new(12345).unwrap(),
    });
    assert!(matches!(p.to_router.pop(), Some(ToRouter::Verify { .. })));
    p.login(phone(15550000001));
    p.send(Frame::Send {
        to: phone(15550000002),
        msg_id: 9,
        body: b"hi",
    });
    match p.to_router.pop() {
        Some(ToRouter::Send {
            from,
            to,
            msg_id: 9,
            body,
            conn: ConnId(7),
        }) => {
            assert_eq!(
                (from, to, &body[..]),
                (phone(15550000001), phone(15550000002), &b"hi"[..])
            );
        }
        other => panic!("{other:?}"),
    }
    p.server.deliver(
        &ToClient::Deliver {
            seq: 3,
            from: phone(15550000002),
            msg_id: 4,
            timestamp_ms: 5,
            body: b"yo".to_vec(),
        },
        p.now,
        &mut p.to_router,
    );
    p.pump();
    assert_eq!(p.frames().len(), 1);
    p.send(Frame::Ack { seq: 3 });
    assert!(matches!(
        p.to_router.pop(),
        Some(ToRouter::Ack { seq: 3, .. })
    ));
    p.send(Frame::Ping { nonce: 77 });
    assert_eq!(p.frames(), vec!["Pong { nonce: 77 }"]);
    assert!(p.server.ended().is_none());
}

#[test]
fn plain_bytes_instead_of_tls_end_the_connection() {
    let mut p = setup(Limits::default());
    p.server.receive(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        1_000,
        &mut p.to_router,
    );
    assert!(
        matches!(p.server.ended(), Some(Ended::Tls(_))),
        "{:?}",
        p.server.ended()
    );
    assert!(p.to_router.is_empty());
}

#[test]
fn garbage_after_the_handshake_closes_with_a_reason() {
    let mut p = setup(Limits::default());
    p.hello();
    p.send_raw(&[0xde, 0xad, 0xbe, 0xef, 0x99, 0, 0, 0]);
    p.closed_with(ErrorCode::FrameTooLarge); // its "length" is 4 GB

    let mut p = setup(Limits::default());
    p.hello();
    p.send_raw(&[4, 0, 0, 0, 0x99, 0, 0, 0, 1, 2, 3, 4]);
    p.closed_with(ErrorCode::UnknownKind);
}

#[test]
fn a_frame_over_the_limit_is_refused_from_its_header() {
    let mut p = setup(Limits {
        frame_bytes_max: 1024,
        ..Limits::default()
    });
    p.hello();
    p.send_raw(&[0x00, 0x10, 0x00, 0x00, 0x20, 0, 0, 0]); // 4 KiB Send announced
    p.closed_with(ErrorCode::FrameTooLarge);
}

#[test]
fn frames_before_login_are_refused() {
    let mut p = setup(Limits::default());
    p.hello();
    p.send(Frame::Send {
        to: phone(15550000002),
        msg_id: 1,
        body: b"x",
    });
    p.closed_with(ErrorCode::NotLoggedIn);
    assert!(p.to_router.is_empty(), "nothing reached the router");
}

#[test]
fn the_first_frame_must_be_hello_and_versions_must_meet() {
    let mut p = setup(Limits::default());
    p.pump();
    p.send(Frame::Ping { nonce: 1 });
    p.closed_with(ErrorCode::ProtocolViolation);
    let mut p = setup(Limits::default());
    p.pump();
    p.send(Frame::Hello {
        min_version: 2,
        max_version: 9,
    });
    p.closed_with(ErrorCode::UnsupportedVersion);
}

#[test]
fn server_frames_from_a_client_are_violations() {
    let mut p = setup(Limits::default());
    p.hello();
    p.send(Frame::Welcome {
        version: 1,
        ping_interval_s: 1,
        frame_bytes_max: 1,
        server_time_ms: 1,
    });
    p.closed_with(ErrorCode::ProtocolViolation);
}

#[test]
fn a_truncated_frame_then_silence_times_out() {
    let mut p = setup(Limits {
        login_timeout_ms: 5_000,
        ..Limits::default()
    });
    p.hello();
    p.send_raw(&[16, 0, 0, 0, 0x14, 0, 0]); // half an envelope
    assert!(p.server.ended().is_none(), "incomplete is not invalid");
    assert_eq!(p.server.deadline_ms(), 1_000 + 5_000);
    p.now = 6_000;
    p.server.timer(p.now, &mut p.to_router);
    p.pump();
    p.closed_with(ErrorCode::LoginTimeout);
}

#[test]
fn handshake_timeout_and_idle_ping_then_timeout() {
    let mut p = setup(Limits {
        handshake_timeout_ms: 2_000,
        ..Limits::default()
    });
    p.server.timer(3_000, &mut p.to_router);
    assert!(matches!(
        p.server.ended(),
        Some(Ended::ByServer(ErrorCode::HandshakeTimeout, _))
    ));

    let mut p = setup(Limits {
        idle_timeout_ms: 10_000,
        ..Limits::default()
    });
    p.hello();
    p.login(phone(15550000001));
    p.now += 5_000;
    p.server.timer(p.now, &mut p.to_router);
    p.pump();
    assert_eq!(p.frames().len(), 1, "a ping at half the idle timeout");
    p.now += 5_000;
    p.server.timer(p.now, &mut p.to_router);
    p.pump();
    p.closed_with(ErrorCode::IdleTimeout);
    assert_eq!(
        p.server.take_closed_notice(),
        Some(ToRouter::Closed {
            conn: ConnId(7),
            user: phone(15550000001)
        })
    );
    assert_eq!(p.server.take_closed_notice(), None, "once");
}

#[test]
fn the_router_can_close_a_connection_with_a_reason() {
    let mut p = setup(Limits::default());
    p.hello();
    p.login(phone(15550000001));
    p.server.deliver(
        &ToClient::Close {
            code: ErrorCode::LoggedInElsewhere,
            reason: "registered on another device".into(),
        },
        p.now,
        &mut p.to_router,
    );
    p.pump();
    p.closed_with(ErrorCode::LoggedInElsewhere);
}

#[test]
fn a_slow_reader_is_cut_off_instead_of_buffered() {
    let mut p = setup(Limits {
        outbound_bytes_max: 64 * 1024,
        ..Limits::default()
    });
    p.hello();
    p.login(phone(15550000001));
    let body = vec![7u8; 8000];
    for seq in 0..20 {
        // The client never reads: nothing is taken from `outgoing`.
        p.server.deliver(
            &ToClient::Deliver {
                seq,
                from: phone(15550000002),
                msg_id: seq,
                timestamp_ms: 0,
                body: body.clone(),
            },
            p.now,
            &mut p.to_router,
        );
    }
    assert_eq!(p.server.ended(), Some(&Ended::SlowReader));
    assert!(p.server.outgoing().is_empty());
}

#[test]
fn an_idle_connection_holds_no_buffer() {
    let mut p = setup(Limits::default());
    p.hello();
    p.login(phone(15550000001));
    p.send(Frame::Send {
        to: phone(15550000002),
        msg_id: 1,
        body: &[1u8; 5000],
    });
    assert_eq!(
        p.server.buffered_bytes(),
        0,
        "all buffers are released between messages"
    );
}

/// Counts the heap bytes this thread holds, so a test can weigh what it keeps.
struct Counting;

thread_local! {
    static HELD: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only adds bookkeeping in a thread-local
// `Cell` (no allocation, no destructor).
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        let _ = HELD.try_with(|h| h.set(h.get() + l.size() as isize));
        std::alloc::System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        let _ = HELD.try_with(|h| h.set(h.get() - l.size() as isize));
        std::alloc::System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        let _ = HELD.try_with(|h| h.set(h.get() + new as isize - l.size() as isize));
        std::alloc::System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The memory budget of an idle, logged-in connection (issue 6: at most 4 KB per
/// connection in all, with the allocator's rounding and the router's session entry on
/// top): the `Conn`, its rustls session and everything they keep on the heap.
#[test]
fn an_idle_logged_in_connection_holds_little_heap() {
    let (s, c) = configs(&[&rustls::version::TLS13]);
    let n = 200;
    let mut conns = Vec::with_capacity(n);
    let before = HELD.with(|h| h.get());
    for i in 0..n {
        let mut p = pair(Limits::default(), &s, &c);
        p.hello();
        p.login(Phone::new(15550000000 + i as u64).unwrap());
        let Pair { server, .. } = p;
        conns.push(server);
    }
    let per = (HELD.with(|h| h.get()) - before) as usize / n;
    println!(
        "idle logged-in connection: {per} heap bytes + {} inline",
        std::mem::size_of::<Conn>()
    );
    assert!(
        per + std::mem::size_of::<Conn>() <= 3_000,
        "{per} heap bytes + {} inline per idle connection",
        std::mem::size_of::<Conn>()
    );
    drop(conns);
}

/// Issue 15, 6: the time to log in counts from the accept; pinging does not extend it.
#[test]
fn pings_do_not_extend_the_time_to_log_in() {
    let mut p = setup(Limits {
        login_timeout_ms: 5_000,
        ..Limits::default()
    });
    p.hello();
    for t in [2_000, 4_000, 5_500] {
        p.now = t;
        p.send(Frame::Ping { nonce: t });
        assert!(p.server.ended().is_none());
    }
    assert_eq!(p.server.deadline_ms(), 1_000 + 5_000);
    p.now = 6_000;
    p.server.timer(p.now, &mut p.to_router);
    p.pump();
    p.closed_with(ErrorCode::LoginTimeout);
}

/// Issue 15, 6: before login a connection may hold only a little: a frame announced
/// larger than any pre-login frame is refused from its envelope, and a partial TLS
/// record past the pre-login bound closes the connection; what is held stays small.
#[test]
fn a_connection_that_has_not_logged_in_holds_little() {
    let mut p = setup(Limits::default());
    p.hello();
    // An envelope announcing 60,000 bytes (a Send, before login).
    p.send_raw(&[0x60, 0xea, 0, 0, 0x20, 0, 0, 0, 1, 2, 3]);
    p.closed_with(ErrorCode::FrameTooLarge);

    let mut p = setup(Limits::default());
    p.hello();
    p.send_raw(&[0x10, 0, 0, 0, 0x14, 0, 0, 0]); // the start of a small frame: fine
    assert!(p.server.ended().is_none());
    assert!(
        p.server.buffered_bytes() <= gateway::conn::PRELOGIN_HELD_BYTES_MAX,
        "{}",
        p.server.buffered_bytes()
    );
    // Half of a 10 KB TLS record, fed by hand: more than a pre-login connection keeps.
    p.client.writer().write_all(&[0u8; 10_000]).unwrap();
    let mut tls = vec![];
    while p.client.wants_write() {
        p.client.write_tls(&mut tls).unwrap();
    }
    p.server.receive(&tls[..5_000], p.now, &mut p.to_router);
    p.pump();
    p.closed_with(ErrorCode::FrameTooLarge);
}
