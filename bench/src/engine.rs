//! Many client connections driven by one thread: non-blocking sockets (mio, edge
//! triggered), rustls client sessions, the wire codec. The blocking SDK (`client`)
//! needs a thread per connection, which neither 20,000 connections per process nor an
//! honest figure for the generator's own cost allows.
//!
//! A connection goes TCP → TLS → `Hello`/`Welcome` → (`RegisterRequest` → PIN from
//! the SMS log → `Verify`) → `Login` → ready. The scenarios see [`Ev`]s and send with
//! [`Fleet::send`]; writes are flushed at the end of each [`Fleet::turn`].

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::core::{Event, Session};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use socket2::{Domain, Protocol, Socket, Type};
use wire::frame::Frame;
use wire::link::ToClient;
use wire::{ErrorCode, Key, Phone, Pin, PROTOCOL_VERSION};

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// TCP connect and TLS handshake, with `Hello` and `Login` (or
    /// `RegisterRequest`) queued behind it.
    Opening,
    Registering,
    WaitingPin,
    Verifying,
    LoggingIn,
    Ready,
    Closed,
}

/// What happened on a connection.
#[derive(Debug)]
pub enum Ev {
    /// Logged in. `key` is set when this connection registered the phone.
    Ready {
        id: usize,
        /// Connect → TLS handshake complete.
        handshake: Duration,
        /// Handshake complete → `LoggedIn` (Hello/Welcome, registration if any, login).
        login: Duration,
        key: Option<Key>,
        pending: u32,
    },
    Deliver {
        id: usize,
        seq: u64,
        body: Vec<u8>,
    },
    Receipt {
        id: usize,
        seq: u64,
    },
    ServerAck {
        id: usize,
    },
    Refused {
        id: usize,
        code: ErrorCode,
    },
    /// The connection is gone (server close, error, reset); the id may be reused.
    Closed {
        id: usize,
        phase: Phase,
        why: String,
    },
}

pub struct Conn {
    sock: TcpStream,
    tls: ClientConnection,
    /// The server's frames, read through the SDK's sans-I/O core.
    session: Session,
    pub phase: Phase,
    pub phone: Phone,
    key: Option<Key>,
    registered: bool,
    started: Instant,
    handshake_at: Option<Instant>,
    dirty: bool,
}

/// PINs read from the appliance's SMS log files (`<unix ms> <phone> <pin>` per line),
/// read incrementally as they grow.
pub struct PinBook {
    files: Vec<(PathBuf, u64, String)>,
    pins: HashMap<u64, Pin>,
}

impl PinBook {
    pub fn new(files: Vec<PathBuf>) -> PinBook {
        PinBook {
            files: files.into_iter().map(|f| (f, 0, String::new())).collect(),
            pins: HashMap::new(),
        }
    }

    fn refresh(&mut self) {
        for (path, offset, partial) in &mut self.files {
            let Ok(mut f) = std::fs::File::open(&*path) else {
                continue;
            };
            let mut bytes = Vec::new();
            use std::io::Seek;
            if f.seek(io::SeekFrom::Start(*offset)).is_err() || f.read_to_end(&mut bytes).is_err() {
                continue;
            }
            *offset += bytes.len() as u64;
            partial.push_str(&String::from_utf8_lossy(&bytes));
            let complete = partial.rfind('\n').map_or(0, |i| i + 1);
            for line in partial[..complete].lines() {
                let mut it = line.split_whitespace().skip(1);
                let (Some(phone), Some(pin)) = (it.next(), it.next()) else {
                    continue;
                };
                let (Ok(phone), Some(pin)) =
                    (phone.parse::<Phone>(), pin.parse().ok().and_then(Pin::new))
                else {
                    continue;
                };
                self.pins.insert(phone.get(), pin);
            }
            partial.drain(..complete);
        }
    }

    fn take(&mut self, phone: Phone) -> Option<Pin> {
        self.pins.remove(&phone.get())
    }
}

pub struct Fleet {
    poll: Poll,
    events: Events,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    dirty: Vec<usize>,
    waiting_pin: Vec<usize>,
    tls: Arc<ClientConfig>,
    name: ServerName<'static>,
    addr: SocketAddr,
    pins: PinBook,
    buf: Vec<u8>,
    rbuf: Vec<u8>,
    out: Vec<u8>,
}

impl Fleet {
    /// `tls` should have resumption disabled when full handshakes are measured.
    pub fn new(addr: SocketAddr, tls: Arc<ClientConfig>, pins: PinBook) -> io::Result<Fleet> {
        Ok(Fleet {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            conns: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            waiting_pin: Vec::new(),
            tls,
            name: ServerName::try_from("localhost").expect("valid name"),
            addr,
            pins,
            buf: vec![0; 64 * 1024],
            rbuf: vec![0; 64 * 1024],
            out: Vec::with_capacity(64 * 1024),
        })
    }

    /// Starts a connection for `phone`: logs in with `key`, or registers first.
    pub fn open(
        &mut self,
        phone: Phone,
        key: Option<Key>,
        source: Option<IpAddr>,
    ) -> io::Result<usize> {
        let sock = Socket::new(
            Domain::for_address(self.addr),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        sock.set_nonblocking(true)?;
        sock.set_tcp_nodelay(true)?;
        if let Some(ip) = source {
            // Let connect() pick the port for the whole 4-tuple: bind() alone would
            // reserve a port per source address and run out after ~28,000, counting the
            // TIME_WAIT ports of earlier runs.
            set_bind_address_no_port(&sock)?;
            sock.bind(&SocketAddr::new(ip, 0).into())?;
        }
        match sock.connect(&self.addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let mut sock = TcpStream::from_std(sock.into());
        let tls = ClientConnection::new(Arc::clone(&self.tls), self.name.clone())
            .map_err(io::Error::other)?;
        let id = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        self.poll.registry().register(
            &mut sock,
            Token(id),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let mut c = Conn {
            sock,
            tls,
            session: Session::new(),
            phase: Phase::Opening,
            phone,
            key,
            registered: false,
            started: Instant::now(),
            handshake_at: None,
            dirty: false,
        };
        // Queued in rustls until the handshake is done. Login (or RegisterRequest) goes
        // with Hello, without waiting for Welcome: the server takes frames in order
        // (docs/PROTOCOL.md), and a phone saves a round trip.
        write_frame(
            &mut c,
            &mut self.out,
            Frame::Hello {
                min_version: 1,
                max_version: PROTOCOL_VERSION,
            },
        );
        // Every connection logs in as its phone, at once or after registering.
        c.session.logging_in(phone);
        match key {
            Some(key) => {
                c.phase = Phase::LoggingIn;
                write_frame(&mut c, &mut self.out, Frame::Login { phone, key });
            }
            None => {
                c.phase = Phase::Registering;
                write_frame(&mut c, &mut self.out, Frame::RegisterRequest { phone });
            }
        }
        self.conns[id] = Some(c);
        Ok(id)
    }

    /// Queues a frame on a ready connection (flushed at the end of the next turn).
    pub fn send(&mut self, id: usize, f: Frame<'_>) -> bool {
        let Some(c) = self.conns.get_mut(id).and_then(|c| c.as_mut()) else {
            return false;
        };
        if c.phase == Phase::Closed {
            return false;
        }
        write_frame(c, &mut self.out, f);
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(id);
        }
        true
    }

    /// Drops a connection. `polite`: `Close` and close_notify first; otherwise the
    /// socket is just closed (a phone losing its network).
    pub fn close(&mut self, id: usize, polite: bool) {
        let Some(mut c) = self.conns.get_mut(id).and_then(|c| c.take()) else {
            return;
        };
        if polite {
            write_frame(
                &mut c,
                &mut self.out,
                Frame::Close {
                    code: ErrorCode::Normal,
                    reason: "bye",
                },
            );
            c.tls.send_close_notify();
            let _ = flush(&mut c);
        } else {
            // A reset, as when a phone's network drops: no TIME_WAIT left on this side
            // (a storm of 10,000 would otherwise hold 10,000 ports for a minute).
            let _ = socket2::SockRef::from(&c.sock).set_linger(Some(Duration::ZERO));
        }
        let _ = self.poll.registry().deregister(&mut c.sock);
        self.free.push(id);
    }

    /// Waits up to `timeout` for socket events, handles them, flushes queued writes.
    pub fn turn(&mut self, timeout: Duration, evs: &mut Vec<Ev>) -> io::Result<()> {
        if !self.waiting_pin.is_empty() {
            self.pins.refresh();
            let mut still = Vec::new();
            for id in std::mem::take(&mut self.waiting_pin) {
                let Some(c) = self.conns.get_mut(id).and_then(|c| c.as_mut()) else {
                    continue;
                };
                match self.pins.take(c.phone) {
                    Some(pin) => {
                        c.phase = Phase::Verifying;
                        let phone = c.phone;
                        self.send(id, Frame::Verify { phone, pin });
                    }
                    None => still.push(id),
                }
            }
            self.waiting_pin = still;
        }
        let timeout = if self.waiting_pin.is_empty() && self.dirty.is_empty() {
            timeout
        } else {
            timeout.min(Duration::from_millis(2))
        };
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
        for id in ready {
            self.pump(id, evs);
        }
        for id in std::mem::take(&mut self.dirty) {
            let Some(c) = self.conns.get_mut(id).and_then(|c| c.as_mut()) else {
                continue;
            };
            c.dirty = false;
            if let Err(e) = flush(c) {
                self.fail(id, format!("write: {e}"), evs);
            }
        }
        Ok(())
    }

    fn fail(&mut self, id: usize, why: String, evs: &mut Vec<Ev>) {
        if let Some(c) = self.conns.get(id).and_then(|c| c.as_ref()) {
            evs.push(Ev::Closed {
                id,
                phase: c.phase,
                why,
            });
            self.close(id, false);
        }
    }

    /// Reads what the socket has, runs the frames, writes what rustls has.
    fn pump(&mut self, id: usize, evs: &mut Vec<Ev>) {
        let Some(c) = self.conns.get_mut(id).and_then(|c| c.as_mut()) else {
            return;
        };
        // One read into our buffer, handed to rustls piece by piece; a short read means
        // the socket is drained (TCP), so no extra read just to see EAGAIN.
        let mut eof = false;
        loop {
            let n = match c.sock.read(&mut self.rbuf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.fail(id, format!("read: {e}"), evs),
            };
            let mut rd = &self.rbuf[..n];
            while !rd.is_empty() {
                if let Err(e) = c.tls.read_tls(&mut rd) {
                    return self.fail(id, format!("TLS: {e}"), evs);
                }
                if let Err(e) = c.tls.process_new_packets() {
                    return self.fail(id, format!("TLS: {e}"), evs);
                }
                loop {
                    match c.tls.reader().read(&mut self.buf) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => c.session.received(&self.buf[..n]),
                        Err(_) => break,
                    }
                }
            }
            if n < self.rbuf.len() {
                break;
            }
        }
        if c.handshake_at.is_none() && !c.tls.is_handshaking() {
            c.handshake_at = Some(Instant::now());
        }
        if let Err(why) = self.frames(id, evs) {
            return self.fail(id, why, evs);
        }
        let Some(c) = self.conns.get_mut(id).and_then(|c| c.as_mut()) else {
            return;
        };
        if let Err(e) = flush(c) {
            return self.fail(id, format!("write: {e}"), evs);
        }
        if eof {
            self.fail(id, "closed by the server".into(), evs);
        }
    }

    /// Runs every complete frame the connection received.
    fn frames(&mut self, id: usize, evs: &mut Vec<Ev>) -> Result<(), String> {
        loop {
            let c = self.conns[id].as_mut().expect("open");
            match c.session.poll().map_err(|e| e.to_string())? {
                None => return Ok(()),
                Some(e) => self.event(id, e, evs)?,
            }
        }
    }

    fn event(&mut self, id: usize, e: Event, evs: &mut Vec<Ev>) -> Result<(), String> {
        let c = self.conns[id].as_mut().expect("open");
        let phone = c.phone;
        let m = match e {
            Event::Welcome { .. } => return Ok(()), // Login or RegisterRequest went with Hello
            Event::Ping { nonce } => {
                self.send(id, Frame::Pong { nonce });
                return Ok(());
            }
            Event::Pong { .. } => return Ok(()),
            Event::Msg(m) => m,
        };
        match m {
            ToClient::RegisterPending { .. } => {
                c.phase = Phase::WaitingPin;
                self.waiting_pin.push(id);
            }
            ToClient::Registered { key, .. } => {
                c.key = Some(key);
                c.registered = true;
                c.phase = Phase::LoggingIn;
                self.send(id, Frame::Login { phone, key });
            }
            ToClient::LoggedIn { pending, .. } => {
                c.phase = Phase::Ready;
                let now = Instant::now();
                let hs = c.handshake_at.unwrap_or(now);
                evs.push(Ev::Ready {
                    id,
                    handshake: hs - c.started,
                    login: now - hs,
                    key: c.registered.then_some(c.key).flatten(),
                    pending,
                });
            }
            ToClient::Deliver { seq, body, .. } => evs.push(Ev::Deliver { id, seq, body }),
            ToClient::Receipt { seq, .. } => evs.push(Ev::Receipt { id, seq }),
            ToClient::ServerAck { .. } => evs.push(Ev::ServerAck { id }),
            ToClient::Refused { code, .. } => evs.push(Ev::Refused { id, code }),
            ToClient::Error { code, reason } | ToClient::Close { code, reason } => {
                return Err(format!("server: {code:?}: {reason}"))
            }
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn set_bind_address_no_port(sock: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a valid descriptor and a c_int option value.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_bind_address_no_port(_: &Socket) -> io::Result<()> {
    Ok(())
}

fn write_frame(c: &mut Conn, out: &mut Vec<u8>, f: Frame<'_>) {
    out.clear();
    f.encode(out);
    // Buffered by rustls (before the handshake too); cannot fail short of a bug.
    c.tls
        .writer()
        .write_all(out)
        .expect("rustls buffers plaintext");
}

/// Writes what rustls has queued until the socket would block.
fn flush(c: &mut Conn) -> io::Result<()> {
    while c.tls.wants_write() {
        match c.tls.write_tls(&mut c.sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
