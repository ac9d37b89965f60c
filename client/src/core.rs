//! The client side of the protocol without I/O: plaintext from the server goes in
//! ([`Session::received`]), what it means comes out ([`Session::poll`]): the
//! connection's own frames (`Welcome`, `Ping`, `Pong`) as [`Event`]s, everything else as
//! the server's [`ToClient`] message. The blocking SDK ([`crate::Client`]) and the load
//! generator's thousands of non-blocking connections (`bench/src/engine.rs`) both read
//! the server through it; each writes frames its own way (the bench's write pattern is
//! part of what it measures).

use wire::frame::{decode, Frame};
use wire::link::ToClient;
use wire::{FrameError, Phone};

/// What a frame from the server meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The answer to `Hello`: the server's largest frame payload.
    Welcome {
        frame_bytes_max: u32,
    },
    /// The server pings: answer `Pong` with this nonce (or the connection idles out).
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    /// A message: answers, deliveries, receipts, refusals, errors, the close.
    Msg(ToClient),
}

/// Why the server's bytes make no sense: the connection cannot go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("bad frame from the server: {0}")]
    Frame(FrameError),
    #[error("a client frame from the server: {0:?}")]
    Unexpected(wire::frame::Kind),
    #[error("LoggedIn from the server before this client sent Login")]
    LoggedInUnasked,
}

/// One connection's reading state: plaintext not yet a whole frame, and the number it
/// logs in as (the `LoggedIn` frame does not name it).
#[derive(Debug, Default)]
pub struct Session {
    inbox: Vec<u8>,
    /// Bytes of `inbox` already taken by `poll`, dropped at the next `received`.
    used: usize,
    me: Option<Phone>,
}

impl Session {
    pub fn new() -> Session {
        Session::default()
    }

    /// Plaintext from the server.
    pub fn received(&mut self, plaintext: &[u8]) {
        if self.used > 0 {
            self.inbox.drain(..self.used);
            self.used = 0;
        }
        self.inbox.extend_from_slice(plaintext);
    }

    /// The client sends `Login` as `phone` (what a `LoggedIn` then names).
    pub fn logging_in(&mut self, phone: Phone) {
        self.me = Some(phone);
    }

    /// The next whole frame's meaning; `None` until more bytes come.
    pub fn poll(&mut self) -> Result<Option<Event>, SessionError> {
        let (f, n) = match decode(&self.inbox[self.used..], usize::MAX) {
            Ok(x) => x,
            Err(FrameError::Incomplete { .. }) => {
                if self.used == self.inbox.len() {
                    self.inbox.clear();
                    self.used = 0;
                }
                return Ok(None);
            }
            Err(e) => return Err(SessionError::Frame(e)),
        };
        let event = match f {
            Frame::Welcome {
                frame_bytes_max, ..
            } => Event::Welcome { frame_bytes_max },
            Frame::Ping { nonce } => Event::Ping { nonce },
            Frame::Pong { nonce } => Event::Pong { nonce },
            Frame::LoggedIn { .. } if self.me.is_none() => {
                return Err(SessionError::LoggedInUnasked)
            }
            f => {
                let me = self.me.unwrap_or(Phone::new(Phone::MIN).expect("valid"));
                Event::Msg(ToClient::from_frame(f, me).map_err(SessionError::Unexpected)?)
            }
        };
        self.used += n;
        Ok(Some(event))
    }

    /// Bytes held that are not a whole frame yet.
    pub fn held(&self) -> usize {
        self.inbox.len() - self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::ErrorCode;

    fn bytes(frames: &[Frame<'_>]) -> Vec<u8> {
        let mut b = Vec::new();
        for f in frames {
            f.encode(&mut b);
        }
        b
    }

    #[test]
    fn frames_split_anywhere_come_out_whole_and_in_order() {
        let me = Phone::new(15550001).unwrap();
        let all = bytes(&[
            Frame::Welcome {
                version: 1,
                ping_interval_s: 150,
                frame_bytes_max: 65536,
                server_time_ms: 1,
            },
            Frame::Ping { nonce: 9 },
            Frame::LoggedIn { pending: 2 },
            Frame::Deliver {
                seq: 1,
                from: me,
                msg_id: 5,
                timestamp_ms: 7,
                body: b"hello",
            },
            Frame::Close {
                code: ErrorCode::Normal,
                reason: "bye",
            },
        ]);
        for cut in 1..all.len() {
            let mut s = Session::new();
            s.logging_in(me);
            let mut got = vec![];
            for part in [&all[..cut], &all[cut..]] {
                s.received(part);
                while let Some(e) = s.poll().unwrap() {
                    got.push(e);
                }
            }
            assert_eq!(s.held(), 0);
            assert_eq!(got.len(), 5, "cut at {cut}: {got:?}");
            assert_eq!(got[1], Event::Ping { nonce: 9 });
            assert_eq!(
                got[2],
                Event::Msg(ToClient::LoggedIn {
                    user: me,
                    pending: 2
                })
            );
            assert!(
                matches!(&got[3], Event::Msg(ToClient::Deliver { body, .. }) if body == b"hello")
            );
        }
    }

    #[test]
    fn nonsense_from_the_server_is_an_error() {
        let mut s = Session::new();
        s.received(&bytes(&[Frame::LoggedIn { pending: 0 }]));
        assert_eq!(s.poll(), Err(SessionError::LoggedInUnasked));
        let mut s = Session::new();
        s.received(&bytes(&[Frame::Ack { seq: 3 }]));
        assert!(matches!(s.poll(), Err(SessionError::Unexpected(_))));
        let mut s = Session::new();
        s.received(&[0xff; 16]);
        assert!(matches!(s.poll(), Err(SessionError::Frame(_))));
    }
}
