//! Switchboard client SDK: a blocking client over TLS that speaks the protocol in
//! `docs/PROTOCOL.md`. Trusts the server by a CA file or a pinned certificate
//! fingerprint (SHA-256, as `switchboard serve` prints it).
//!
//! # Layout
//! - `lib.rs`: [`Client`], [`Trust`], [`Incoming`] (the server's own `wire::link::ToClient`),
//!   [`ClientError`].
//! - [`core`]: the client side of the protocol without I/O (`Session`), which this
//!   client and the load generator read the server through.
//! - The fingerprint-pinning verifier is the `certpin` crate (the links use it too).
//! - `main.rs`: the `switchboard-client` CLI.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use wire::frame::Frame;
use wire::{ErrorCode, Key, Phone, Pin, PROTOCOL_VERSION};

/// How the client decides the server is the right one.
#[derive(Clone, Debug)]
pub enum Trust {
    /// PEM file of the CA (or the self-signed certificate itself).
    CaFile(PathBuf),
    /// SHA-256 of the server's certificate, 64 hex digits.
    Fingerprint(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("trust: {0}")]
    Trust(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("server said {code:?}: {reason}")]
    Server { code: ErrorCode, reason: String },
    #[error("server closed the connection: {code:?}: {reason}")]
    Closed { code: ErrorCode, reason: String },
    #[error("no answer in time")]
    Timeout,
}

/// What the server sends a client: the server's own type for it (one vocabulary on
/// both sides of the connection; `LoggedIn` names the number this client logged in as).
pub use wire::link::ToClient as Incoming;

pub mod core;

/// A socket timeout (or a would-block read in poll mode): nothing came in time.
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

pub struct Client {
    tls: StreamOwned<ClientConnection, TcpStream>,
    session: core::Session,
    backlog: VecDeque<Incoming>,
    /// The server's maximum frame payload (from `Welcome`).
    pub frame_bytes_max: usize,
    closed: Option<(ErrorCode, String)>,
}

/// The rustls client configuration for `trust` (aws-lc-rs; TLS 1.3 and 1.2).
pub fn tls_config(trust: &Trust) -> Result<Arc<ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let config = match trust {
        Trust::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| ClientError::Trust(format!("{}: {e}", path.display())))?
            {
                roots.add(
                    cert.map_err(|e| ClientError::Trust(format!("{}: {e}", path.display())))?,
                )?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Fingerprint(hex) => {
            let verifier = certpin::Pinned::new(hex, provider).map_err(ClientError::Trust)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

impl Client {
    /// Connects, handshakes (TLS, then `Hello`/`Welcome`).
    pub fn connect(
        addr: &str,
        trust: &Trust,
        server_name: &str,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let sa: SocketAddr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| ClientError::Protocol(format!("{addr}: no address")))?;
        let tcp = TcpStream::connect_timeout(&sa, timeout)?;
        tcp.set_nodelay(true)?;
        // The TLS handshake runs inside the first write and reads the server's answer:
        // bounded too, or a server that accepts and never answers holds us forever.
        // Later reads set their own timeout; writes keep this one.
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| ClientError::Trust(e.to_string()))?;
        let conn = ClientConnection::new(tls_config(trust)?, name)?;
        let mut c = Client {
            tls: StreamOwned::new(conn, tcp),
            session: core::Session::new(),
            backlog: VecDeque::new(),
            frame_bytes_max: wire::FRAME_BYTES_DEFAULT,
            closed: None,
        };
        match c.write(Frame::Hello {
            min_version: 1,
            max_version: PROTOCOL_VERSION,
        }) {
            Err(ClientError::Io(e)) if timed_out(&e) => return Err(ClientError::Timeout),
            other => other?,
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
            match c.read_frame(left)? {
                None => {}
                Some(core::Event::Welcome { frame_bytes_max }) => {
                    c.frame_bytes_max = frame_bytes_max as usize;
                    return Ok(c);
                }
                Some(core::Event::Msg(
                    Incoming::Close { code, reason } | Incoming::Error { code, reason },
                )) => return Err(ClientError::Closed { code, reason }),
                Some(other) => {
                    return Err(ClientError::Protocol(format!(
                        "expected Welcome, got {other:?}"
                    )))
                }
            }
        }
    }

    fn write(&mut self, f: Frame<'_>) -> Result<(), ClientError> {
        let mut buf = Vec::with_capacity(f.encoded_len());
        f.encode(&mut buf);
        self.tls.write_all(&buf)?;
        self.tls.flush()?;
        Ok(())
    }

    /// Reads until one frame is complete and takes it from `inbox`. `None` on timeout.
    fn read_frame(&mut self, timeout: Duration) -> Result<Option<core::Event>, ClientError> {
        loop {
            if let Some(event) = self
                .session
                .poll()
                .map_err(|e| ClientError::Protocol(e.to_string()))?
            {
                return Ok(Some(event));
            }
            // A zero timeout is a poll: read what is there, without waiting.
            self.tls.sock.set_nonblocking(timeout.is_zero())?;
            if !timeout.is_zero() {
                self.tls.sock.set_read_timeout(Some(timeout))?;
            }
            let mut buf = [0u8; 16 * 1024];
            let read = self.tls.read(&mut buf);
            if timeout.is_zero() {
                self.tls.sock.set_nonblocking(false)?;
            }
            match read {
                Ok(0) => {
                    let (code, reason) = self
                        .closed
                        .clone()
                        .unwrap_or((ErrorCode::Normal, "connection closed".into()));
                    return Err(ClientError::Closed { code, reason });
                }
                Ok(n) => self.session.received(&buf[..n]),
                Err(e) if timed_out(&e) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next message from the server, waiting up to `timeout` (`None`: nothing came).
    /// Pings are answered here.
    fn next_msg(&mut self, deadline: Instant) -> Result<Option<Incoming>, ClientError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left)? {
                None => return Ok(None),
                Some(core::Event::Ping { nonce }) => self.write(Frame::Pong { nonce })?,
                Some(core::Event::Welcome { .. }) | Some(core::Event::Pong { .. }) => {}
                Some(core::Event::Msg(m)) => {
                    if let Incoming::Close { code, reason } = &m {
                        self.closed = Some((*code, reason.clone()));
                    }
                    return Ok(Some(m));
                }
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }

    /// The next thing the server sent, waiting up to `timeout` (`None`: nothing came).
    pub fn next(&mut self, timeout: Duration) -> Result<Option<Incoming>, ClientError> {
        if let Some(m) = self.backlog.pop_front() {
            return Ok(Some(m));
        }
        self.next_msg(Instant::now() + timeout)
    }

    /// Waits for the first message that `want` accepts; keeps the others for `next`.
    /// An `Error` or `Close` that `want` does not accept ends the wait with an error.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(&Incoming) -> bool,
    ) -> Result<Incoming, ClientError> {
        if let Some(i) = self.backlog.iter().position(&mut want) {
            return Ok(self.backlog.remove(i).expect("present"));
        }
        let deadline = Instant::now() + timeout;
        let mut seen = VecDeque::new();
        let result = loop {
            let m = match self.next_msg(deadline) {
                Ok(Some(m)) => m,
                Ok(None) => break Err(ClientError::Timeout),
                Err(e) => break Err(e),
            };
            if want(&m) {
                break Ok(m);
            }
            match m {
                Incoming::Error { code, reason } => {
                    break Err(ClientError::Server { code, reason })
                }
                Incoming::Close { code, reason } => {
                    break Err(ClientError::Closed { code, reason })
                }
                other => seen.push_back(other),
            }
        };
        self.backlog.extend(seen);
        result
    }

    /// Asks for a registration PIN by SMS; returns its validity in seconds.
    pub fn request_pin(&mut self, phone: Phone, timeout: Duration) -> Result<u32, ClientError> {
        self.write(Frame::RegisterRequest { phone })?;
        match self.wait_for(timeout, |m| matches!(m, Incoming::RegisterPending { .. }))? {
            Incoming::RegisterPending { expires_in_s, .. } => Ok(expires_in_s),
            _ => unreachable!(),
        }
    }

    /// Verifies the PIN; returns the device key (issued once: keep it).
    pub fn verify(
        &mut self,
        phone: Phone,
        pin: Pin,
        timeout: Duration,
    ) -> Result<Key, ClientError> {
        self.write(Frame::Verify { phone, pin })?;
        match self.wait_for(timeout, |m| matches!(m, Incoming::Registered { .. }))? {
            Incoming::Registered { key, .. } => Ok(key),
            _ => unreachable!(),
        }
    }

    /// Logs in; returns how many stored messages and receipts will follow.
    pub fn login(&mut self, phone: Phone, key: Key, timeout: Duration) -> Result<u32, ClientError> {
        self.session.logging_in(phone);
        self.write(Frame::Login { phone, key })?;
        match self.wait_for(timeout, |m| matches!(m, Incoming::LoggedIn { .. }))? {
            Incoming::LoggedIn { pending, .. } => Ok(pending),
            _ => unreachable!(),
        }
    }

    /// Sends a message; the server's `ServerAck` (or `Refused`) comes later via `next`.
    pub fn send(&mut self, to: Phone, msg_id: u64, body: &[u8]) -> Result<(), ClientError> {
        self.write(Frame::Send { to, msg_id, body })
    }

    /// Acknowledges a `Deliver` or `Receipt` (the server then erases it).
    pub fn ack(&mut self, seq: u64) -> Result<(), ClientError> {
        self.write(Frame::Ack { seq })
    }

    /// Tells `from` its message was read.
    pub fn read(&mut self, from: Phone, msg_id: u64) -> Result<(), ClientError> {
        self.write(Frame::Read { from, msg_id })
    }

    /// Writes raw bytes inside the TLS session (for tests of the server's defences).
    #[doc(hidden)]
    pub fn send_raw_for_tests(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.tls.write_all(bytes)?;
        self.tls.flush()?;
        Ok(())
    }

    pub fn ping(&mut self, nonce: u64) -> Result<(), ClientError> {
        self.write(Frame::Ping { nonce })
    }

    /// Sends `Close` and close_notify.
    pub fn close(mut self) -> Result<(), ClientError> {
        self.write(Frame::Close {
            code: ErrorCode::Normal,
            reason: "bye",
        })?;
        self.tls.conn.send_close_notify();
        self.tls.flush()?;
        Ok(())
    }
}
