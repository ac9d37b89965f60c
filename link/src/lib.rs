//! Links over the private network: framed, batched TCP (optionally TLS) between gateways
//! and routers and between routers. A link is used only after a challenge–response with
//! the cluster secret (HMAC-SHA256, both ways); before that, any other frame closes it.
//!
//! Each link is one loop ([`Link::run`]) on a non-blocking socket: it waits (`poll`) on
//! the socket and on an eventfd that [`LinkSender`] rings when a frame is queued, so a
//! TLS session is never shared between threads and nothing waits on a timer.
//!
//! [`dial`] keeps a link to a router up for ever (backoff, re-announcing who dials);
//! the router side accepts with [`Link::accept`]. The frames are `wire::linkcodec`'s.

use crossbeam_channel::{Receiver, SendError, Sender, TrySendError};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway::wake;
use hmac::{KeyInit, Mac};
use rustls::pki_types::ServerName;
use wire::linkcodec::{decode_link, LinkError, LinkMsg, PeerKind};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// The client's proof: MAC over the server's challenge, who the client is, and its own
/// nonce. One definition, used to compute (client) and to check (server).
fn client_proof(
    secret: &[u8],
    ns: &[u8; 32],
    peer: PeerKind,
    id: u16,
    nc: &[u8; 32],
) -> HmacSha256 {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(secret).expect("any key length");
    for part in [
        &b"switchboard-link-v1 client"[..],
        ns,
        &[peer as u8],
        &id.to_le_bytes(),
        nc,
    ] {
        m.update(part);
    }
    m
}

/// The server's proof: MAC over the client's nonce and its own challenge.
fn server_proof(secret: &[u8], nc: &[u8; 32], ns: &[u8; 32]) -> HmacSha256 {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(secret).expect("any key length");
    for part in [&b"switchboard-link-v1 server"[..], nc, ns] {
        m.update(part);
    }
    m
}

fn finish(m: HmacSha256) -> [u8; 32] {
    m.finalize().into_bytes().into()
}

fn nonce() -> io::Result<[u8; 32]> {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(n)
}

fn refused(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why.to_string())
}

/// The queue of frames for one link; sending rings the link's eventfd.
#[derive(Clone)]
pub struct LinkSender {
    tx: Sender<LinkMsg>,
    wake: Arc<OwnedFd>,
}

pub struct LinkReceiver {
    rx: Receiver<LinkMsg>,
    wake: Arc<OwnedFd>,
}

pub fn link_channel(capacity: usize) -> io::Result<(LinkSender, LinkReceiver)> {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let wake = Arc::new(wake::eventfd()?);
    Ok((
        LinkSender {
            tx,
            wake: Arc::clone(&wake),
        },
        LinkReceiver { rx, wake },
    ))
}

impl LinkReceiver {
    /// Takes every frame waiting in the queue (a link that went down gives back what
    /// it had not sent yet).
    pub fn take_all(&self) -> Vec<LinkMsg> {
        self.rx.try_iter().collect()
    }
}

impl LinkSender {
    pub fn try_send(&self, m: LinkMsg) -> Result<(), TrySendError<LinkMsg>> {
        self.tx.try_send(m)?;
        wake::wake(&self.wake);
        Ok(())
    }

    /// Frames waiting in the queue (for the queue gauges; read by the admin thread,
    /// nothing on the sending path counts).
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    /// Blocks while the queue is full.
    pub fn send(&self, m: LinkMsg) -> Result<(), SendError<LinkMsg>> {
        self.tx.send(m)?;
        wake::wake(&self.wake);
        Ok(())
    }
}

/// TLS for links (off by default: the private network is trusted).
#[derive(Clone)]
pub enum LinkTls {
    Off,
    /// Router side: its certificate.
    Server(Arc<rustls::ServerConfig>),
    /// Dialing side: trust the router by its pinned certificate fingerprint.
    Client(Arc<rustls::ClientConfig>),
}

impl LinkTls {
    /// A client config trusting one certificate fingerprint (SHA-256, hex).
    pub fn pinned(fingerprint: &str) -> Result<LinkTls, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = certpin::Pinned::new(fingerprint, Arc::clone(&provider))?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(LinkTls::Client(Arc::new(config)))
    }
}

/// An authenticated link.
pub struct Link {
    sock: TcpStream,
    tls: Option<rustls::Connection>,
    /// Plaintext received, not yet decoded.
    inbuf: Vec<u8>,
    /// Bytes for the socket (already encrypted when TLS).
    outbuf: Vec<u8>,
}

impl Link {
    fn new(sock: TcpStream, tls: &LinkTls) -> io::Result<Link> {
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(AUTH_TIMEOUT))?;
        sock.set_write_timeout(Some(AUTH_TIMEOUT))?;
        let tls = match tls {
            LinkTls::Off => None,
            LinkTls::Server(c) => Some(rustls::Connection::Server(
                rustls::ServerConnection::new(Arc::clone(c)).map_err(io::Error::other)?,
            )),
            LinkTls::Client(c) => {
                let name = ServerName::try_from("switchboard-router").expect("valid name");
                Some(rustls::Connection::Client(
                    rustls::ClientConnection::new(Arc::clone(c), name).map_err(io::Error::other)?,
                ))
            }
        };
        let mut link = Link {
            sock,
            tls,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
        };
        if let Some(t) = link.tls.as_mut() {
            while t.is_handshaking() {
                t.complete_io(&mut link.sock)?;
            }
        }
        Ok(link)
    }

    /// Blocking: writes one frame.
    fn send_now(&mut self, m: &LinkMsg) -> io::Result<()> {
        let mut b = vec![];
        m.encode(&mut b);
        match self.tls.as_mut() {
            None => self.sock.write_all(&b),
            Some(t) => {
                t.writer().write_all(&b)?;
                while t.wants_write() {
                    t.write_tls(&mut self.sock)?;
                }
                Ok(())
            }
        }
    }

    /// Blocking: reads one frame (during authentication).
    fn recv_now(&mut self) -> io::Result<LinkMsg> {
        loop {
            match decode_link(&self.inbuf) {
                Ok((m, n)) => {
                    self.inbuf.drain(..n);
                    return Ok(m);
                }
                Err(LinkError::Incomplete { .. }) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads what the socket has into `inbuf` (decrypting); 0 at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        let mut buf = [0u8; LINK_CHUNK];
        let n = self.sock.read(&mut buf)?;
        if n == 0 {
            return Ok(0);
        }
        match self.tls.as_mut() {
            None => self.inbuf.extend_from_slice(&buf[..n]),
            Some(t) => {
                let mut rd = &buf[..n];
                while !rd.is_empty() {
                    t.read_tls(&mut rd)?;
                    let state = t.process_new_packets().map_err(io::Error::other)?;
                    let plain = state.plaintext_bytes_to_read();
                    if plain > 0 {
                        let at = self.inbuf.len();
                        self.inbuf.resize(at + plain, 0);
                        t.reader().read_exact(&mut self.inbuf[at..])?;
                    }
                }
                // Handshake messages or tickets the peer is owed go out with the next write.
                while t.wants_write() {
                    t.write_tls(&mut self.outbuf)?;
                }
            }
        }
        Ok(n)
    }

    /// Server side: TLS if configured, then the challenge. Returns who the peer is.
    pub fn accept(
        sock: TcpStream,
        tls: &LinkTls,
        secret: &[u8],
    ) -> io::Result<(Link, PeerKind, u16)> {
        let mut link = Link::new(sock, tls)?;
        let ns = nonce()?;
        link.send_now(&LinkMsg::Challenge { nonce: ns })?;
        let LinkMsg::Auth {
            peer,
            id,
            nonce: nc,
            mac: tag,
        } = link.recv_now()?
        else {
            return Err(refused("the first frame was not Auth"));
        };
        if client_proof(secret, &ns, peer, id, &nc)
            .verify_slice(&tag)
            .is_err()
        {
            return Err(refused("bad link authentication"));
        }
        link.send_now(&LinkMsg::AuthOk {
            mac: finish(server_proof(secret, &nc, &ns)),
        })?;
        Ok((link, peer, id))
    }

    /// Client side: TLS if configured, then proves it knows the secret and checks the
    /// server does.
    pub fn connect(
        sock: TcpStream,
        tls: &LinkTls,
        secret: &[u8],
        peer: PeerKind,
        id: u16,
    ) -> io::Result<Link> {
        let mut link = Link::new(sock, tls)?;
        let LinkMsg::Challenge { nonce: ns } = link.recv_now()? else {
            return Err(refused("the first frame was not Challenge"));
        };
        let nc = nonce()?;
        let proof = finish(client_proof(secret, &ns, peer, id, &nc));
        link.send_now(&LinkMsg::Auth {
            peer,
            id,
            nonce: nc,
            mac: proof,
        })?;
        let LinkMsg::AuthOk { mac: answer } = link.recv_now()? else {
            return Err(refused("the server did not accept our authentication"));
        };
        if server_proof(secret, &nc, &ns)
            .verify_slice(&answer)
            .is_err()
        {
            return Err(refused("the server does not know the cluster secret"));
        }
        Ok(link)
    }

    /// Queues a frame to go out first when [`Link::run`] starts (e.g. `Attach`).
    pub fn queue(&mut self, m: &LinkMsg) -> io::Result<()> {
        let mut b = vec![];
        m.encode(&mut b);
        self.push(&b)
    }

    fn push(&mut self, plain: &[u8]) -> io::Result<()> {
        match self.tls.as_mut() {
            None => self.outbuf.extend_from_slice(plain),
            Some(t) => {
                t.writer().write_all(plain)?;
                while t.wants_write() {
                    t.write_tls(&mut self.outbuf)?;
                }
            }
        }
        Ok(())
    }

    /// Runs the link: frames from `rx` go out in batches of up to `batch` bytes (all
    /// that is queued, so a batch ends when it fills or the queue is empty; `batch` is
    /// read once per turn: the `link_batch_bytes` knob); frames
    /// received go to `on_frame` (which returns false to close). Ends when the peer
    /// closes, on an error, or when `stop` is set.
    pub fn run(
        self,
        rx: &LinkReceiver,
        batch_bytes: &AtomicUsize,
        stop: &AtomicBool,
        on_frame: impl FnMut(LinkMsg) -> bool,
    ) -> io::Result<()> {
        self.run_paced(rx, batch_bytes, stop, || true, on_frame)
    }

    /// Like [`Link::run`], but frames are read from the peer only while `may_read`
    /// says so: a router whose shard is behind stops reading a gateway's link (TCP then
    /// pushes back to the gateway) while it goes on writing its replies, so the shard,
    /// which may wait for room in this link's queue, is never waited on in turn.
    pub fn run_paced(
        mut self,
        rx: &LinkReceiver,
        batch_bytes: &AtomicUsize,
        stop: &AtomicBool,
        may_read: impl Fn() -> bool,
        mut on_frame: impl FnMut(LinkMsg) -> bool,
    ) -> io::Result<()> {
        self.sock.set_nonblocking(true)?;
        let fd = self.sock.as_raw_fd();
        let mut plain = Vec::new();
        loop {
            if stop.load(Ordering::Acquire) {
                return Ok(());
            }
            let batch = batch_bytes.load(Ordering::Relaxed);
            // Take queued frames while there is room (backpressure on the queue beyond).
            if self.outbuf.len() < batch {
                plain.clear();
                let mut frames = 0usize;
                while plain.len() < batch {
                    match rx.rx.try_recv() {
                        Ok(m) => {
                            m.encode(&mut plain);
                            frames += 1;
                        }
                        Err(_) => break,
                    }
                }
                if !plain.is_empty() {
                    tracing::debug!(
                        "link batch: {frames} frames, {} bytes (link_batch_bytes {batch})",
                        plain.len()
                    );
                    let p = std::mem::take(&mut plain);
                    self.push(&p)?;
                    plain = p;
                }
            }
            // Write what we can.
            while !self.outbuf.is_empty() {
                match self.sock.write(&self.outbuf) {
                    Ok(n) => {
                        self.outbuf.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            let reading = may_read();
            let events = if reading { libc::POLLIN } else { 0 }
                | if self.outbuf.is_empty() {
                    0
                } else {
                    libc::POLLOUT
                };
            // Paused: look again for room every millisecond.
            let timeout = if reading { 100 } else { 1 };
            let (revents, woken) = wake::poll_two(fd, events, rx.wake.as_raw_fd(), timeout)?;
            if woken {
                wake::drain_eventfd(&rx.wake);
            }
            // Frames left from before a pause go first.
            if !self.take_frames(&may_read, &mut on_frame)? {
                return Ok(());
            }
            // Read a chunk (64 KiB) at a time and act on its frames before the next, so
            // what waits here is one chunk at most when the reader pauses. A hang-up is
            // read even while paused (to see the end of the link).
            if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                while may_read() || self.inbuf.len() < LINK_CHUNK || revents & libc::POLLIN == 0 {
                    match self.fill() {
                        Ok(0) => return Ok(()), // the peer closed
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                    if !self.take_frames(&may_read, &mut on_frame)? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Acts on the complete frames received, while `may_read` allows; `false`: close.
    fn take_frames(
        &mut self,
        may_read: &impl Fn() -> bool,
        on_frame: &mut impl FnMut(LinkMsg) -> bool,
    ) -> io::Result<bool> {
        while may_read() {
            match decode_link(&self.inbuf) {
                Ok((m, n)) => {
                    self.inbuf.drain(..n);
                    if !on_frame(m) {
                        return Ok(false);
                    }
                }
                Err(LinkError::Incomplete { .. }) => break,
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
        Ok(true)
    }
}

/// What a link reads from its socket at a time.
const LINK_CHUNK: usize = 64 * 1024;

/// What happens on a dialed link.
pub enum LinkEvent<'a> {
    /// A frame from the router.
    Frame(LinkMsg),
    /// The link that was up went down; its queue (what was not sent yet) is there to
    /// take. Dialing starts again after this.
    Down(&'a LinkReceiver),
}

/// Where and as whom a link is dialed.
pub struct Dial {
    /// The router dialed, by its id in the cluster map and its private address.
    pub router: u16,
    pub address: SocketAddr,
    /// The local address and interface links leave from (`SO_BINDTODEVICE`: Linux;
    /// elsewhere routing from `source` picks the interface).
    pub source: Option<IpAddr>,
    pub interface: Option<String>,
    pub secret: Vec<u8>,
    pub tls: LinkTls,
    /// Who dials: its kind and id (a gateway's `ConnId::origin`, a router's id).
    pub peer: PeerKind,
    pub id: u16,
}

/// Dials `to.router` for ever (with backoff) and runs the link: `rx`'s frames go out,
/// received frames and the link going down go to `on_event`. `on_connect` queues frames
/// that must go first (session re-attachment). `up` says whether the link is up.
pub fn dial(
    to: Dial,
    rx: LinkReceiver,
    batch: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    up: Arc<AtomicBool>,
    on_connect: impl Fn(&mut Link) -> io::Result<()>,
    mut on_event: impl FnMut(LinkEvent<'_>),
) {
    let Dial {
        router,
        address,
        source,
        interface,
        secret,
        tls,
        peer,
        id,
    } = to;
    let mut backoff = Duration::from_millis(50);
    while !stop.load(Ordering::Acquire) {
        let connected = (|| -> io::Result<Link> {
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(address),
                socket2::Type::STREAM,
                None,
            )?;
            if let Some(ifc) = &interface {
                #[cfg(target_os = "linux")]
                sock.bind_device(Some(ifc.as_bytes()))?;
                // Elsewhere routing from `source` picks the interface (cluster.rs says so).
                #[cfg(not(target_os = "linux"))]
                tracing::debug!("interface {ifc}: not bound (SO_BINDTODEVICE is Linux's)");
            }
            if let Some(src) = source {
                sock.bind(&SocketAddr::new(src, 0).into())?;
            }
            sock.connect_timeout(&address.into(), Duration::from_secs(2))?;
            let mut link = Link::connect(sock.into(), &tls, &secret, peer, id)?;
            on_connect(&mut link)?;
            Ok(link)
        })();
        let link = match connected {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(
                    "link to router {} ({}): {e}; retrying in {backoff:?}",
                    router,
                    address
                );
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        up.store(true, Ordering::Release);
        backoff = Duration::from_millis(50);
        tracing::info!("link to router {router} ({address}) up");
        let ended = link.run(&rx, &batch, &stop, |m| {
            on_event(LinkEvent::Frame(m));
            true
        });
        up.store(false, Ordering::Release);
        if stop.load(Ordering::Acquire) {
            return;
        }
        on_event(LinkEvent::Down(&rx));
        tracing::warn!(
            "link to router {} down ({}); reconnecting",
            router,
            ended.err().map_or("closed".to_string(), |e| e.to_string())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (l.accept().unwrap().0, c)
    }

    const SECRET: &[u8] = b"0123456789abcdef-secret";

    fn tls_pair() -> (LinkTls, LinkTls) {
        let dir = tempfile::tempdir().unwrap();
        let (id, _) =
            gateway::tls::Identity::self_signed_in(dir.path(), &["switchboard-router".into()])
                .unwrap();
        let fp = id.fingerprint();
        (
            LinkTls::Server(gateway::tls::server_config(id).unwrap()),
            LinkTls::pinned(&fp).unwrap(),
        )
    }

    fn round_trip(server_tls: LinkTls, client_tls: LinkTls) {
        let (s, c) = pair();
        let t = std::thread::spawn(move || {
            let (link, peer, id) = Link::accept(s, &server_tls, SECRET).unwrap();
            assert_eq!((peer, id), (PeerKind::Gateway, 7));
            let (_tx, rx) = link_channel(4).unwrap();
            let mut got = vec![];
            let stop = AtomicBool::new(false);
            link.run(&rx, &AtomicUsize::new(4096), &stop, |m| {
                got.push(m);
                got.len() < 100
            })
            .unwrap();
            got.len()
        });
        let link = Link::connect(c, &client_tls, SECRET, PeerKind::Gateway, 7).unwrap();
        let (tx, rx) = link_channel(1000).unwrap();
        let sender = std::thread::spawn(move || {
            for i in 0..100u64 {
                let m = LinkMsg::Req(wire::link::ToRouter::Ack {
                    conn: wire::link::ConnId(i),
                    user: wire::Phone::new(15550000001).unwrap(),
                    seq: i,
                });
                tx.send(m).unwrap();
            }
            tx
        });
        let stop = AtomicBool::new(false);
        let _keep = sender.join().unwrap();
        let _ = link.run(&rx, &AtomicUsize::new(4096), &stop, |_| true);
        assert_eq!(t.join().unwrap(), 100);
    }

    #[test]
    fn plain_and_tls_links_carry_frames_after_authentication() {
        round_trip(LinkTls::Off, LinkTls::Off);
        let (s, c) = tls_pair();
        round_trip(s, c);
    }

    #[test]
    fn a_wrong_secret_or_a_wrong_certificate_is_refused() {
        let (s, c) = pair();
        let t = std::thread::spawn(move || Link::accept(s, &LinkTls::Off, SECRET).map(|_| ()));
        assert!(Link::connect(
            c,
            &LinkTls::Off,
            b"not-the-secret-at-all",
            PeerKind::Gateway,
            7
        )
        .is_err());
        assert_eq!(
            t.join().unwrap().unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );

        // A peer that skips authentication and sends a request straight away.
        let (s, mut c) = pair();
        let t = std::thread::spawn(move || Link::accept(s, &LinkTls::Off, SECRET).map(|_| ()));
        let mut b = vec![];
        LinkMsg::Req(wire::link::ToRouter::Closed {
            conn: wire::link::ConnId(1),
            user: wire::Phone::new(15550000001).unwrap(),
        })
        .encode(&mut b);
        c.write_all(&b).unwrap();
        assert!(t.join().unwrap().is_err());

        // TLS with a certificate that is not the pinned one.
        let (server_tls, _) = tls_pair();
        let (_, other_client) = tls_pair();
        let (s, c) = pair();
        let t = std::thread::spawn(move || Link::accept(s, &server_tls, SECRET).map(|_| ()));
        assert!(Link::connect(c, &other_client, SECRET, PeerKind::Gateway, 7).is_err());
        assert!(t.join().unwrap().is_err());
    }
}
