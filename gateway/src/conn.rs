//! One client connection, sans-I/O: TLS (rustls' unbuffered API), frames, login state,
//! limits and timeouts. Driven by received bytes, router replies and a `now`; it leaves
//! the bytes to transmit in [`Conn::outgoing`] and the requests for the router in the
//! caller's vector. The io_uring driver is one user of it; the tests are another.
//!
//! An idle connection holds no buffer: the TLS state, a few words, and empty vectors
//! (capacity 0). Buffers exist only while bytes are in flight and are freed after.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};
use rustls::ServerConfig;
use wire::frame::{Frame, Kind};
use wire::link::{ConnId, ToClient, ToRouter};
use wire::{ErrorCode, FrameError, Phone, ENVELOPE_BYTES, PROTOCOL_VERSION};

/// Limits of one connection. Defaults in [`Limits::default`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame payload accepted and announced in `Welcome`. Default 64 KiB.
    pub frame_bytes_max: usize,
    /// Encrypted bytes waiting for the socket. Over it the client is too slow: the
    /// connection is closed (its messages stay in the log). Default 1 MiB.
    pub outbound_bytes_max: usize,
    /// TLS handshake and `Hello`. Default 10 s.
    pub handshake_timeout_ms: u64,
    /// Time from accept to login (registration included: a client waiting for its SMS
    /// reconnects to send `Verify`). Counted from the accept, whatever the client sends
    /// meanwhile. Default 60 s.
    pub login_timeout_ms: u64,
    /// Silence allowed after login; a ping goes out at half of it. Default 300 s.
    pub idle_timeout_ms: u64,
    /// PIN guesses (`Verify`) on one connection; one more closes it with
    /// `RateLimited`. Default 10.
    pub pin_guesses_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_bytes_max: wire::FRAME_BYTES_DEFAULT,
            outbound_bytes_max: 1 << 20,
            handshake_timeout_ms: 10_000,
            login_timeout_ms: 60_000,
            idle_timeout_ms: 300_000,
            pin_guesses_max: 10,
        }
    }
}

/// Largest partial TLS record kept between reads (a record is at most 16 KiB + 256).
const INCOMING_BYTES_MAX: usize = 18 * 1024;

/// Before login, the largest frame payload taken (the largest frame a client may send
/// then is a `Close` with its 256-byte reason) and the most bytes held between reads
/// (a partial TLS record and a partial frame together): a connection that has not
/// logged in costs little however it behaves. Over either, it is closed.
pub const PRELOGIN_FRAME_BYTES_MAX: usize = 258;
pub const PRELOGIN_HELD_BYTES_MAX: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// TLS handshake, then waiting for `Hello`.
    Handshake,
    /// `Welcome` sent; registration allowed; waiting for `Login`.
    Open,
    /// `Login` forwarded; waiting for the router.
    LoggingIn(Phone),
    LoggedIn(Phone),
    /// Nothing more is read; what is in `outgoing` is the last to send.
    Closed,
}

/// Why a connection ended (for logs and counters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// We closed it, with this code and reason sent to the client where TLS allowed.
    ByServer(ErrorCode, String),
    /// The TLS layer failed (garbage instead of TLS, bad record, alert).
    Tls(String),
    /// The client closed it (close_notify or `Close`).
    ByClient,
    /// Too many bytes waiting for a slow reader.
    SlowReader,
}

pub struct Conn {
    id: ConnId,
    peer: IpAddr,
    tls: UnbufferedServerConnection,
    /// TLS bytes received and not yet consumed: a partial record at most.
    incoming: Vec<u8>,
    /// Decrypted bytes not yet framed: a partial frame at most.
    plain: Vec<u8>,
    /// Plaintext frames waiting for the handshake to allow encryption.
    pending: Vec<u8>,
    /// Encrypted bytes for the socket.
    outgoing: Vec<u8>,
    phase: Phase,
    /// After the pending frames are encrypted, send close_notify and stop.
    closing: bool,
    ended: Option<Ended>,
    told_router: bool,
    started_ms: u64,
    last_rx_ms: u64,
    pinged: bool,
    /// `Verify` frames taken on this connection.
    guesses: u32,
    limits: Arc<Limits>,
}

/// What one decoded frame asks for, computed while the frame borrows `plain`.
enum Act {
    Router(ToRouter),
    Reply(ReplyFrame),
    Close(ErrorCode, String),
    Hello { min: u16, max: u16 },
    None,
}

enum ReplyFrame {
    Pong(u64),
}

impl Conn {
    pub fn new(
        config: Arc<ServerConfig>,
        limits: Arc<Limits>,
        id: ConnId,
        peer: IpAddr,
        now_ms: u64,
    ) -> Result<Conn, rustls::Error> {
        Ok(Conn {
            id,
            peer,
            tls: UnbufferedServerConnection::new(config)?,
            incoming: Vec::new(),
            plain: Vec::new(),
            pending: Vec::new(),
            outgoing: Vec::new(),
            phase: Phase::Handshake,
            closing: false,
            ended: None,
            told_router: false,
            started_ms: now_ms,
            last_rx_ms: now_ms,
            pinged: false,
            guesses: 0,
            limits,
        })
    }

    /// The client's address.
    pub fn peer(&self) -> IpAddr {
        self.peer
    }

    pub fn id(&self) -> ConnId {
        self.id
    }

    /// New limits (a runtime knob changed): they apply from the next event.
    pub fn set_limits(&mut self, limits: Arc<Limits>) {
        self.limits = limits;
    }

    /// The TLS handshake is not finished (whatever the framing phase).
    pub fn tls_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// The handshake resumed an earlier session (a ticket).
    pub fn resumed(&self) -> bool {
        self.tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn user(&self) -> Option<Phone> {
        match self.phase {
            Phase::LoggedIn(p) => Some(p),
            _ => None,
        }
    }

    /// Set once the connection is over; flush [`Conn::outgoing`], then close the socket.
    pub fn ended(&self) -> Option<&Ended> {
        self.ended.as_ref()
    }

    /// Bytes to write to the socket.
    pub fn outgoing(&self) -> &[u8] {
        &self.outgoing
    }

    /// Takes every byte of [`Conn::outgoing`] to be written (the buffer moves; no copy).
    pub fn take_outgoing(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.outgoing)
    }

    /// Bytes held by this connection's buffers (capacity), for memory accounting.
    pub fn buffered_bytes(&self) -> usize {
        self.incoming.capacity()
            + self.plain.capacity()
            + self.pending.capacity()
            + self.outgoing.capacity()
    }

    /// Bytes arrived from the socket.
    pub fn receive(&mut self, data: &[u8], now_ms: u64, to_router: &mut Vec<ToRouter>) {
        if self.ended.is_some() {
            return;
        }
        self.last_rx_ms = now_ms;
        self.pinged = false;
        self.incoming.extend_from_slice(data);
        self.pump(now_ms, to_router);
        if self.ended.is_none() && self.incoming.len() > INCOMING_BYTES_MAX {
            self.end(Ended::Tls("a TLS record over the size limit".into()));
        }
        if self.ended.is_none() && self.before_login() && !self.tls.is_handshaking() {
            if self.incoming.len() + self.plain.len() > PRELOGIN_HELD_BYTES_MAX {
                self.close(
                    ErrorCode::FrameTooLarge,
                    "too many bytes held before login",
                    now_ms,
                    to_router,
                );
            } else {
                // What a connection that has not logged in keeps is what it holds now,
                // not the largest read it ever made.
                self.incoming.shrink_to_fit();
                self.plain.shrink_to_fit();
            }
        }
        free_if_empty(&mut self.incoming);
        free_if_empty(&mut self.plain);
        self.after_write();
    }

    fn before_login(&self) -> bool {
        matches!(
            self.phase,
            Phase::Handshake | Phase::Open | Phase::LoggingIn(_)
        )
    }

    /// The socket reached end of file or failed.
    pub fn peer_gone(&mut self) {
        if self.ended.is_none() {
            self.end(Ended::ByClient);
        }
    }

    /// A reply from the router for this connection.
    pub fn deliver(&mut self, msg: &ToClient, now_ms: u64, to_router: &mut Vec<ToRouter>) {
        if self.queue(msg, now_ms, to_router) {
            self.flush(now_ms, to_router);
        }
    }

    /// Like [`Conn::deliver`], but only encodes the frame: [`Conn::flush`] encrypts
    /// everything queued as one TLS record. A worker queues every reply of a loop turn,
    /// then flushes each connection once. `false` when nothing was queued (the
    /// connection ended, or the message closed it and is already written).
    pub fn queue(&mut self, msg: &ToClient, now_ms: u64, to_router: &mut Vec<ToRouter>) -> bool {
        if self.ended.is_some() {
            return false;
        }
        match msg {
            ToClient::Close { code, reason } => {
                self.close(*code, reason, now_ms, to_router);
                return false;
            }
            ToClient::LoggedIn { user, .. } => self.phase = Phase::LoggedIn(*user),
            _ => {}
        }
        msg.frame().encode(&mut self.pending);
        true
    }

    /// Encrypts what [`Conn::queue`] left into [`Conn::outgoing`].
    pub fn flush(&mut self, now_ms: u64, to_router: &mut Vec<ToRouter>) {
        if self.pending.is_empty() || self.ended.is_some() {
            return;
        }
        self.pump(now_ms, to_router);
        self.after_write();
    }

    /// Timeouts and pings. Call at [`Conn::deadline_ms`] or later (a coarse sweep is fine).
    pub fn timer(&mut self, now_ms: u64, to_router: &mut Vec<ToRouter>) {
        if self.ended.is_some() {
            return;
        }
        let l = &self.limits;
        match self.phase {
            Phase::Handshake if now_ms >= self.started_ms + l.handshake_timeout_ms => self.close(
                ErrorCode::HandshakeTimeout,
                "no TLS handshake and Hello in time",
                now_ms,
                to_router,
            ),
            Phase::Open | Phase::LoggingIn(_) if now_ms >= self.started_ms + l.login_timeout_ms => {
                self.close(
                    ErrorCode::LoginTimeout,
                    "no login in time",
                    now_ms,
                    to_router,
                )
            }
            Phase::LoggedIn(_) if now_ms >= self.last_rx_ms + l.idle_timeout_ms => {
                self.close(ErrorCode::IdleTimeout, "silent too long", now_ms, to_router)
            }
            Phase::LoggedIn(_)
                if !self.pinged && now_ms >= self.last_rx_ms + l.idle_timeout_ms / 2 =>
            {
                self.pinged = true;
                Frame::Ping { nonce: now_ms }.encode(&mut self.pending);
                self.pump(now_ms, to_router);
                self.after_write();
            }
            _ => {}
        }
    }

    /// When [`Conn::timer`] next has something to do.
    pub fn deadline_ms(&self) -> u64 {
        let l = &self.limits;
        match self.phase {
            Phase::Handshake => self.started_ms + l.handshake_timeout_ms,
            Phase::Open | Phase::LoggingIn(_) => self.started_ms + l.login_timeout_ms,
            Phase::LoggedIn(_) if !self.pinged => self.last_rx_ms + l.idle_timeout_ms / 2,
            Phase::LoggedIn(_) => self.last_rx_ms + l.idle_timeout_ms,
            Phase::Closed => u64::MAX,
        }
    }

    /// The router must forget this connection's session: returns that request once,
    /// when the connection has ended and was logged in.
    pub fn take_closed_notice(&mut self) -> Option<ToRouter> {
        if self.ended.is_none() || self.told_router {
            return None;
        }
        self.told_router = true;
        let user = match self.phase {
            Phase::LoggedIn(u) | Phase::LoggingIn(u) => u,
            _ => return None,
        };
        Some(ToRouter::Closed {
            conn: self.id,
            user,
        })
    }

    /// Ends the connection with a reason: a `Close` frame and close_notify where TLS is
    /// up, nothing where it is not.
    pub fn close(
        &mut self,
        code: ErrorCode,
        reason: &str,
        now_ms: u64,
        to_router: &mut Vec<ToRouter>,
    ) {
        if self.ended.is_some() {
            return;
        }
        if self.tls.is_handshaking() {
            self.end(Ended::ByServer(code, reason.into()));
            return;
        }
        Frame::Close { code, reason }.encode(&mut self.pending);
        self.closing = true;
        self.ended = Some(Ended::ByServer(code, reason.into()));
        self.phase_after_end();
        self.pump(now_ms, to_router);
    }

    fn end(&mut self, why: Ended) {
        self.ended = Some(why);
        self.phase_after_end();
        self.pending = Vec::new();
        self.plain = Vec::new();
        self.incoming = Vec::new();
    }

    fn phase_after_end(&mut self) {
        // Keep who was logged in until the router is told.
        if !matches!(self.phase, Phase::LoggedIn(_) | Phase::LoggingIn(_)) {
            self.phase = Phase::Closed;
        }
    }

    fn after_write(&mut self) {
        if self.outgoing.len() > self.limits.outbound_bytes_max
            && !matches!(self.ended, Some(Ended::SlowReader))
        {
            self.end(Ended::SlowReader);
            self.outgoing = Vec::new();
        }
        free_if_empty(&mut self.pending);
    }

    /// Drives rustls until it needs more bytes from the peer.
    fn pump(&mut self, now_ms: u64, to_router: &mut Vec<ToRouter>) {
        loop {
            let status = self.tls.process_tls_records(&mut self.incoming);
            let mut discard = status.discard;
            let mut again = true;
            let mut read = false;
            let mut failed = None;
            match status.state {
                Err(e) => failed = Some(Ended::Tls(e.to_string())),
                Ok(ConnectionState::ReadTraffic(mut r)) => {
                    while let Some(rec) = r.next_record() {
                        match rec {
                            Ok(rec) => {
                                discard += rec.discard;
                                self.plain.extend_from_slice(rec.payload);
                            }
                            Err(e) => {
                                failed = Some(Ended::Tls(e.to_string()));
                                break;
                            }
                        }
                    }
                    read = true;
                }
                Ok(ConnectionState::ReadEarlyData(mut r)) => {
                    // 0-RTT is not enabled; drop whatever arrives as early data.
                    while let Some(Ok(rec)) = r.next_record() {
                        discard += rec.discard;
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    let start = self.outgoing.len();
                    let mut size = 4096;
                    loop {
                        self.outgoing.resize(start + size, 0);
                        match e.encode(&mut self.outgoing[start..]) {
                            Ok(n) => {
                                self.outgoing.truncate(start + n);
                                break;
                            }
                            Err(EncodeError::InsufficientSize(s)) if s.required_size > size => {
                                size = s.required_size
                            }
                            Err(other) => {
                                self.outgoing.truncate(start);
                                failed = Some(Ended::Tls(format!(
                                    "encoding a handshake message: {other:?}"
                                )));
                                break;
                            }
                        }
                    }
                }
                Ok(ConnectionState::TransmitTlsData(t)) => t.done(), // `outgoing` is sent in order
                Ok(ConnectionState::BlockedHandshake) => again = false,
                Ok(ConnectionState::WriteTraffic(mut w)) => {
                    if !self.pending.is_empty() {
                        let start = self.outgoing.len();
                        // TLS 1.3 adds 22 bytes per record of at most 16 KiB; a short guess is
                        // corrected below (`InsufficientSize`).
                        let need = self.pending.len() + (self.pending.len() / 16384 + 1) * 64;
                        self.outgoing.resize(start + need, 0);
                        match w.encrypt(&self.pending, &mut self.outgoing[start..]) {
                            Ok(n) => self.outgoing.truncate(start + n),
                            Err(EncryptError::InsufficientSize(s)) => {
                                self.outgoing.resize(start + s.required_size, 0);
                                match w.encrypt(&self.pending, &mut self.outgoing[start..]) {
                                    Ok(n) => self.outgoing.truncate(start + n),
                                    Err(e) => failed = Some(Ended::Tls(format!("{e:?}"))),
                                }
                            }
                            Err(e) => failed = Some(Ended::Tls(format!("{e:?}"))),
                        }
                        self.pending.clear();
                    }
                    if self.closing {
                        let start = self.outgoing.len();
                        self.outgoing.resize(start + 64, 0);
                        let n = w
                            .queue_close_notify(&mut self.outgoing[start..])
                            .unwrap_or(0);
                        self.outgoing.truncate(start + n);
                        self.closing = false;
                    }
                    again = false;
                }
                Ok(ConnectionState::PeerClosed) | Ok(ConnectionState::Closed) => {
                    if self.ended.is_none() {
                        failed = Some(Ended::ByClient);
                    }
                    again = false;
                }
                Ok(_) => again = false, // future states: wait for more input
            }
            let discard = discard.min(self.incoming.len());
            self.incoming.drain(..discard);
            if let Some(why) = failed {
                if self.ended.is_none() {
                    self.end(why);
                }
                return;
            }
            if read {
                self.frames(now_ms, to_router);
            }
            if !again {
                return;
            }
        }
    }

    /// Decodes and acts on every complete frame in `plain`.
    fn frames(&mut self, now_ms: u64, to_router: &mut Vec<ToRouter>) {
        let mut at = 0;
        while self.ended.is_none() {
            let max = if self.before_login() {
                PRELOGIN_FRAME_BYTES_MAX.min(self.limits.frame_bytes_max)
            } else {
                self.limits.frame_bytes_max
            };
            let act = match wire::decode(&self.plain[at..], max) {
                Err(FrameError::Incomplete { .. }) => break,
                Err(e) => Act::Close(e.code(), e.to_string()),
                Ok((frame, n)) => {
                    at += n;
                    classify(self.phase, frame, self.id, self.peer)
                }
            };
            match act {
                Act::Router(req) => {
                    match req {
                        ToRouter::Login { phone, .. } => self.phase = Phase::LoggingIn(phone),
                        ToRouter::Verify { .. } => {
                            self.guesses += 1;
                            if self.guesses > self.limits.pin_guesses_max {
                                self.close(
                                    ErrorCode::RateLimited,
                                    "too many PIN guesses on this connection",
                                    now_ms,
                                    to_router,
                                );
                                continue;
                            }
                        }
                        _ => {}
                    }
                    to_router.push(req);
                }
                Act::Reply(ReplyFrame::Pong(nonce)) => {
                    Frame::Pong { nonce }.encode(&mut self.pending)
                }
                Act::Hello { min, max } => {
                    if min > PROTOCOL_VERSION || max < 1 {
                        self.close(
                            ErrorCode::UnsupportedVersion,
                            "no protocol version in common",
                            now_ms,
                            to_router,
                        );
                    } else {
                        self.phase = Phase::Open;
                        Frame::Welcome {
                            version: max.min(PROTOCOL_VERSION),
                            ping_interval_s: (self.limits.idle_timeout_ms / 2000)
                                .min(u16::MAX as u64)
                                as u16,
                            frame_bytes_max: self.limits.frame_bytes_max as u32,
                            server_time_ms: now_ms,
                        }
                        .encode(&mut self.pending);
                    }
                }
                Act::Close(code, reason) => self.close(code, &reason, now_ms, to_router),
                Act::None => {}
            }
        }
        let at = at.min(self.plain.len());
        self.plain.drain(..at);
    }
}

/// What a frame means in a phase; every frame not allowed there closes the connection.
fn classify(phase: Phase, frame: Frame<'_>, conn: ConnId, source: IpAddr) -> Act {
    let violation = |what: &str| Act::Close(ErrorCode::ProtocolViolation, what.to_string());
    match (phase, frame) {
        (
            Phase::Handshake,
            Frame::Hello {
                min_version,
                max_version,
            },
        ) => Act::Hello {
            min: min_version,
            max: max_version,
        },
        (Phase::Handshake, _) => violation("the first frame must be Hello"),
        (_, Frame::Hello { .. }) => violation("Hello was already sent"),
        (_, Frame::Ping { nonce }) => Act::Reply(ReplyFrame::Pong(nonce)),
        (_, Frame::Pong { .. }) => Act::None,
        (_, Frame::Close { .. }) => Act::Close(ErrorCode::Normal, "closed by the client".into()),
        (_, Frame::RegisterRequest { phone }) => Act::Router(ToRouter::Register {
            conn,
            phone,
            source,
        }),
        (_, Frame::Verify { phone, pin }) => Act::Router(ToRouter::Verify { conn, phone, pin }),
        (Phase::Open, Frame::Login { phone, key }) => {
            Act::Router(ToRouter::Login { conn, phone, key })
        }
        (_, Frame::Login { .. }) => violation("already logged in or logging in"),
        (Phase::LoggedIn(from), Frame::Send { to, msg_id, body }) => Act::Router(ToRouter::Send {
            conn,
            from,
            to,
            msg_id,
            body: body.to_vec(),
        }),
        (Phase::LoggedIn(user), Frame::Ack { seq }) => {
            Act::Router(ToRouter::Ack { conn, user, seq })
        }
        (Phase::LoggedIn(user), Frame::Read { from, msg_id }) => Act::Router(ToRouter::Read {
            conn,
            user,
            from,
            msg_id,
        }),
        (_, Frame::Send { .. } | Frame::Ack { .. } | Frame::Read { .. }) => Act::Close(
            ErrorCode::NotLoggedIn,
            "log in before sending, acknowledging or reading".into(),
        ),
        (_, f) => violation(&format!("{:?} is a server frame", f.kind())),
    }
}

fn free_if_empty(v: &mut Vec<u8>) {
    if v.is_empty() && v.capacity() > 0 {
        *v = Vec::new();
    }
}

// The envelope is read before the payload arrives; the decoder relies on it.
const _: () = assert!(ENVELOPE_BYTES == 8);
const _: Kind = Kind::Hello;
