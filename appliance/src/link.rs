//! Links over the private network: framed, batched TCP between gateways and routers and
//! between routers. A link is used only after a challenge–response with the cluster
//! secret (HMAC-SHA256, both ways); before that, any other frame closes it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use wire::linkcodec::{decode_link, LinkError, LinkMsg, PeerKind};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

fn mac(secret: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(secret).expect("any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn verify(secret: &[u8], parts: &[&[u8]], tag: &[u8; 32]) -> bool {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(secret).expect("any key length");
    for p in parts {
        m.update(p);
    }
    m.verify_slice(tag).is_ok()
}

fn nonce() -> io::Result<[u8; 32]> {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(n)
}

/// Reads link frames from a stream, keeping partial frames between reads.
pub struct LinkReader {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl LinkReader {
    pub fn new(stream: TcpStream) -> Self {
        LinkReader {
            stream,
            buf: Vec::new(),
        }
    }

    /// The next frame; `Ok(None)` at a clean end of stream.
    pub fn next_msg(&mut self) -> io::Result<Option<LinkMsg>> {
        loop {
            match decode_link(&self.buf) {
                Ok((m, n)) => {
                    self.buf.drain(..n);
                    return Ok(Some(m));
                }
                Err(LinkError::Incomplete { .. }) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn send(stream: &mut TcpStream, m: &LinkMsg) -> io::Result<()> {
    let mut b = vec![];
    m.encode(&mut b);
    stream.write_all(&b)
}

fn refused(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why.to_string())
}

/// Server side of the handshake. Returns who the peer is.
pub fn accept_auth(
    stream: &mut TcpStream,
    reader: &mut LinkReader,
    secret: &[u8],
) -> io::Result<(PeerKind, u16)> {
    stream.set_read_timeout(Some(AUTH_TIMEOUT))?;
    let ns = nonce()?;
    send(stream, &LinkMsg::Challenge { nonce: ns })?;
    let Some(LinkMsg::Auth {
        peer,
        id,
        nonce: nc,
        mac: tag,
    }) = reader.next_msg()?
    else {
        return Err(refused("the first frame was not Auth"));
    };
    if !verify(
        secret,
        &[
            b"switchboard-link-v1 client",
            &ns,
            &[peer as u8],
            &id.to_le_bytes(),
            &nc,
        ],
        &tag,
    ) {
        return Err(refused("bad link authentication"));
    }
    send(
        stream,
        &LinkMsg::AuthOk {
            mac: mac(secret, &[b"switchboard-link-v1 server", &nc, &ns]),
        },
    )?;
    stream.set_read_timeout(None)?;
    Ok((peer, id))
}

/// Client side of the handshake: proves we know the secret and checks the server does.
pub fn connect_auth(
    stream: &mut TcpStream,
    reader: &mut LinkReader,
    secret: &[u8],
    peer: PeerKind,
    id: u16,
) -> io::Result<()> {
    stream.set_read_timeout(Some(AUTH_TIMEOUT))?;
    let Some(LinkMsg::Challenge { nonce: ns }) = reader.next_msg()? else {
        return Err(refused("the first frame was not Challenge"));
    };
    let nc = nonce()?;
    let tag = mac(
        secret,
        &[
            b"switchboard-link-v1 client",
            &ns,
            &[peer as u8],
            &id.to_le_bytes(),
            &nc,
        ],
    );
    send(
        stream,
        &LinkMsg::Auth {
            peer,
            id,
            nonce: nc,
            mac: tag,
        },
    )?;
    let Some(LinkMsg::AuthOk { mac: tag }) = reader.next_msg()? else {
        return Err(refused("the server did not accept our authentication"));
    };
    if !verify(secret, &[b"switchboard-link-v1 server", &nc, &ns], &tag) {
        return Err(refused("the server does not know the cluster secret"));
    }
    stream.set_read_timeout(None)?;
    Ok(())
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

    #[test]
    fn the_same_secret_authenticates_both_ways() {
        let (mut s, mut c) = pair();
        let t = std::thread::spawn(move || {
            let mut r = LinkReader::new(s.try_clone().unwrap());
            accept_auth(&mut s, &mut r, b"0123456789abcdef-secret")
        });
        let mut r = LinkReader::new(c.try_clone().unwrap());
        connect_auth(
            &mut c,
            &mut r,
            b"0123456789abcdef-secret",
            PeerKind::Gateway,
            7,
        )
        .unwrap();
        assert_eq!(t.join().unwrap().unwrap(), (PeerKind::Gateway, 7));
    }

    #[test]
    fn a_wrong_secret_is_refused_and_no_frame_is_taken() {
        let (mut s, mut c) = pair();
        let t = std::thread::spawn(move || {
            let mut r = LinkReader::new(s.try_clone().unwrap());
            accept_auth(&mut s, &mut r, b"0123456789abcdef-secret")
        });
        let mut r = LinkReader::new(c.try_clone().unwrap());
        assert!(connect_auth(
            &mut c,
            &mut r,
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
        let (mut s, mut c) = pair();
        let t = std::thread::spawn(move || {
            let mut r = LinkReader::new(s.try_clone().unwrap());
            accept_auth(&mut s, &mut r, b"0123456789abcdef-secret")
        });
        let req = LinkMsg::Req(wire::link::ToRouter::Closed {
            conn: wire::link::ConnId(1),
            user: wire::Phone::new(15550000001).unwrap(),
        });
        send(&mut c, &req).unwrap();
        assert!(t.join().unwrap().is_err());
    }
}
