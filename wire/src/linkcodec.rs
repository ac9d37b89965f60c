//! The link protocol on the wire: what gateways and routers send each other over TCP on
//! the private network. Documented in docs/PROTOCOL.md ("The link").
//!
//! Frame: `{ len u32 | kind u8 | 0 0 0 | payload[len] }`, many frames per write
//! (batched). Integers little endian; phones as u64 digits; bodies and reasons
//! length-prefixed (u32, u16).
//! ```text
//! 0x01 Challenge  nonce[32]                                  server → client, first
//! 0x02 Auth       peer u8 (1 gateway, 2 router) | id u16 | nonce[32] | mac[32]
//! 0x03 AuthOk     mac[32]                                    server → client
//! 0x10 Req        a ToRouter (tag u8, fields)                either way
//! 0x11 Resp       conn u64 | a ToClient (tag u8, fields)     router → gateway
//! 0x12 Attach     conn u64 | user u64                        gateway → router, after reconnecting
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::ErrorCode;
use crate::frame::{ReceiptKind, FRAME_BYTES_LIMIT};
use crate::link::{ConnId, ToClient, ToRouter};
use crate::types::{Key, Phone, Pin};

pub const LINK_HEADER_BYTES: usize = 8;
/// Largest link payload: a client frame at the limit plus its routing fields.
pub const LINK_PAYLOAD_MAX: usize = FRAME_BYTES_LIMIT + 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerKind {
    Gateway = 1,
    Router = 2,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkMsg {
    Challenge {
        nonce: [u8; 32],
    },
    Auth {
        peer: PeerKind,
        id: u16,
        nonce: [u8; 32],
        mac: [u8; 32],
    },
    AuthOk {
        mac: [u8; 32],
    },
    Req(ToRouter),
    Resp {
        conn: ConnId,
        msg: ToClient,
    },
    Attach {
        conn: ConnId,
        user: Phone,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("incomplete link frame: {needed} bytes needed")]
    Incomplete { needed: usize },
    #[error("invalid link frame: {0}")]
    Invalid(&'static str),
}

struct W<'a>(&'a mut Vec<u8>);
impl W<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn phone(&mut self, p: Phone) {
        self.u64(p.get());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn text(&mut self, s: &str) {
        let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
        self.u16(s.len() as u16);
        self.0.extend_from_slice(s);
    }
}

struct R<'a>(&'a [u8]);
impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LinkError> {
        if self.0.len() < n {
            return Err(LinkError::Invalid("payload too short"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, LinkError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, LinkError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, LinkError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, LinkError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn arr(&mut self) -> Result<[u8; 32], LinkError> {
        Ok(self.take(32)?.try_into().expect("32"))
    }
    fn phone(&mut self) -> Result<Phone, LinkError> {
        Phone::new(self.u64()?).ok_or(LinkError::Invalid("not a phone number"))
    }
    fn conn(&mut self) -> Result<ConnId, LinkError> {
        Ok(ConnId(self.u64()?))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, LinkError> {
        let n = self.u32()? as usize;
        if n > FRAME_BYTES_LIMIT {
            return Err(LinkError::Invalid("body over the limit"));
        }
        Ok(self.take(n)?.to_vec())
    }
    fn text(&mut self) -> Result<String, LinkError> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| LinkError::Invalid("text is not UTF-8"))
    }
    fn code(&mut self) -> Result<ErrorCode, LinkError> {
        Ok(ErrorCode::from_wire(self.u16()?))
    }
    fn receipt(&mut self) -> Result<ReceiptKind, LinkError> {
        match self.u8()? {
            1 => Ok(ReceiptKind::Delivered),
            2 => Ok(ReceiptKind::Read),
            _ => Err(LinkError::Invalid("unknown receipt kind")),
        }
    }
    fn done(&self) -> Result<(), LinkError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(LinkError::Invalid("trailing bytes"))
        }
    }
}

fn put_req(w: &mut W<'_>, r: &ToRouter) {
    match r {
        ToRouter::Register {
            conn,
            phone,
            source,
        } => {
            w.u8(1);
            w.u64(conn.0);
            w.phone(*phone);
            match source {
                IpAddr::V4(a) => {
                    w.u8(4);
                    w.0.extend_from_slice(&a.octets());
                }
                IpAddr::V6(a) => {
                    w.u8(6);
                    w.0.extend_from_slice(&a.octets());
                }
            }
        }
        ToRouter::Verify { conn, phone, pin } => {
            w.u8(2);
            w.u64(conn.0);
            w.phone(*phone);
            w.u32(pin.get());
        }
        ToRouter::Login { conn, phone, key } => {
            w.u8(3);
            w.u64(conn.0);
            w.phone(*phone);
            w.0.extend_from_slice(&key.0);
        }
        ToRouter::Send {
            conn,
            from,
            to,
            msg_id,
            body,
        } => {
            w.u8(4);
            w.u64(conn.0);
            w.phone(*from);
            w.phone(*to);
            w.u64(*msg_id);
            w.bytes(body);
        }
        ToRouter::Ack { conn, user, seq } => {
            w.u8(5);
            w.u64(conn.0);
            w.phone(*user);
            w.u64(*seq);
        }
        ToRouter::Read {
            conn,
            user,
            from,
            msg_id,
        } => {
            w.u8(6);
            w.u64(conn.0);
            w.phone(*user);
            w.phone(*from);
            w.u64(*msg_id);
        }
        ToRouter::Closed { conn, user } => {
            w.u8(7);
            w.u64(conn.0);
            w.phone(*user);
        }
        ToRouter::Receipt {
            to,
            by,
            msg_id,
            kind,
            timestamp_ms,
        } => {
            w.u8(8);
            w.phone(*to);
            w.phone(*by);
            w.u64(*msg_id);
            w.u8(*kind as u8);
            w.u64(*timestamp_ms);
        }
    }
}

fn get_req(r: &mut R<'_>) -> Result<ToRouter, LinkError> {
    Ok(match r.u8()? {
        1 => {
            let (conn, phone) = (r.conn()?, r.phone()?);
            let source = match r.u8()? {
                4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(r.take(4)?).expect("4"))),
                6 => IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(r.take(16)?).expect("16"),
                )),
                _ => return Err(LinkError::Invalid("bad address family")),
            };
            ToRouter::Register {
                conn,
                phone,
                source,
            }
        }
        2 => ToRouter::Verify {
            conn: r.conn()?,
            phone: r.phone()?,
            pin: Pin::new(r.u32()?).ok_or(LinkError::Invalid("bad PIN"))?,
        },
        3 => ToRouter::Login {
            conn: r.conn()?,
            phone: r.phone()?,
            key: Key(r.arr()?),
        },
        4 => ToRouter::Send {
            conn: r.conn()?,
            from: r.phone()?,
            to: r.phone()?,
            msg_id: r.u64()?,
            body: r.bytes()?,
        },
        5 => ToRouter::Ack {
            conn: r.conn()?,
            user: r.phone()?,
            seq: r.u64()?,
        },
        6 => ToRouter::Read {
            conn: r.conn()?,
            user: r.phone()?,
            from: r.phone()?,
            msg_id: r.u64()?,
        },
        7 => ToRouter::Closed {
            conn: r.conn()?,
            user: r.phone()?,
        },
        8 => ToRouter::Receipt {
            to: r.phone()?,
            by: r.phone()?,
            msg_id: r.u64()?,
            kind: r.receipt()?,
            timestamp_ms: r.u64()?,
        },
        _ => return Err(LinkError::Invalid("unknown request")),
    })
}

fn put_resp(w: &mut W<'_>, m: &ToClient) {
    match m {
        ToClient::RegisterPending {
            phone,
            expires_in_s,
        } => {
            w.u8(1);
            w.phone(*phone);
            w.u32(*expires_in_s);
        }
        ToClient::Registered { phone, key } => {
            w.u8(2);
            w.phone(*phone);
            w.0.extend_from_slice(&key.0);
        }
        ToClient::LoggedIn { user, pending } => {
            w.u8(3);
            w.phone(*user);
            w.u32(*pending);
        }
        ToClient::ServerAck { to, msg_id } => {
            w.u8(4);
            w.phone(*to);
            w.u64(*msg_id);
        }
        ToClient::Deliver {
            seq,
            from,
            msg_id,
            timestamp_ms,
            body,
        } => {
            w.u8(5);
            w.u64(*seq);
            w.phone(*from);
            w.u64(*msg_id);
            w.u64(*timestamp_ms);
            w.bytes(body);
        }
        ToClient::Receipt {
            seq,
            by,
            msg_id,
            timestamp_ms,
            kind,
        } => {
            w.u8(6);
            w.u64(*seq);
            w.phone(*by);
            w.u64(*msg_id);
            w.u64(*timestamp_ms);
            w.u8(*kind as u8);
        }
        ToClient::Refused { to, msg_id, code } => {
            w.u8(7);
            w.phone(*to);
            w.u64(*msg_id);
            w.u16(code.get());
        }
        ToClient::Error { code, reason } | ToClient::Close { code, reason } => {
            w.u8(if matches!(m, ToClient::Error { .. }) {
                8
            } else {
                9
            });
            w.u16(code.get());
            w.text(reason);
        }
    }
}

fn get_resp(r: &mut R<'_>) -> Result<ToClient, LinkError> {
    Ok(match r.u8()? {
        1 => ToClient::RegisterPending {
            phone: r.phone()?,
            expires_in_s: r.u32()?,
        },
        2 => ToClient::Registered {
            phone: r.phone()?,
            key: Key(r.arr()?),
        },
        3 => ToClient::LoggedIn {
            user: r.phone()?,
            pending: r.u32()?,
        },
        4 => ToClient::ServerAck {
            to: r.phone()?,
            msg_id: r.u64()?,
        },
        5 => ToClient::Deliver {
            seq: r.u64()?,
            from: r.phone()?,
            msg_id: r.u64()?,
            timestamp_ms: r.u64()?,
            body: r.bytes()?,
        },
        6 => ToClient::Receipt {
            seq: r.u64()?,
            by: r.phone()?,
            msg_id: r.u64()?,
            timestamp_ms: r.u64()?,
            kind: r.receipt()?,
        },
        7 => ToClient::Refused {
            to: r.phone()?,
            msg_id: r.u64()?,
            code: r.code()?,
        },
        8 => ToClient::Error {
            code: r.code()?,
            reason: r.text()?,
        },
        9 => ToClient::Close {
            code: r.code()?,
            reason: r.text()?,
        },
        _ => return Err(LinkError::Invalid("unknown response")),
    })
}

impl LinkMsg {
    fn kind(&self) -> u8 {
        match self {
            LinkMsg::Challenge { .. } => 0x01,
            LinkMsg::Auth { .. } => 0x02,
            LinkMsg::AuthOk { .. } => 0x03,
            LinkMsg::Req(_) => 0x10,
            LinkMsg::Resp { .. } => 0x11,
            LinkMsg::Attach { .. } => 0x12,
        }
    }

    /// Appends the frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0, self.kind(), 0, 0, 0]);
        let mut w = W(out);
        match self {
            LinkMsg::Challenge { nonce } => w.0.extend_from_slice(nonce),
            LinkMsg::Auth {
                peer,
                id,
                nonce,
                mac,
            } => {
                w.u8(*peer as u8);
                w.u16(*id);
                w.0.extend_from_slice(nonce);
                w.0.extend_from_slice(mac);
            }
            LinkMsg::AuthOk { mac } => w.0.extend_from_slice(mac),
            LinkMsg::Req(r) => put_req(&mut w, r),
            LinkMsg::Resp { conn, msg } => {
                w.u64(conn.0);
                put_resp(&mut w, msg);
            }
            LinkMsg::Attach { conn, user } => {
                w.u64(conn.0);
                w.phone(*user);
            }
        }
        let len = (out.len() - start - LINK_HEADER_BYTES) as u32;
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }
}

/// Decodes the frame at the start of `buf`; returns it and the bytes it took.
pub fn decode_link(buf: &[u8]) -> Result<(LinkMsg, usize), LinkError> {
    if buf.len() < LINK_HEADER_BYTES {
        return Err(LinkError::Incomplete {
            needed: LINK_HEADER_BYTES,
        });
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4")) as usize;
    if len > LINK_PAYLOAD_MAX {
        return Err(LinkError::Invalid("frame over the limit"));
    }
    if buf[5..8] != [0, 0, 0] {
        return Err(LinkError::Invalid("reserved bytes set"));
    }
    let total = LINK_HEADER_BYTES + len;
    if buf.len() < total {
        return Err(LinkError::Incomplete { needed: total });
    }
    let mut r = R(&buf[LINK_HEADER_BYTES..total]);
    let msg = match buf[4] {
        0x01 => LinkMsg::Challenge { nonce: r.arr()? },
        0x02 => {
            let peer = match r.u8()? {
                1 => PeerKind::Gateway,
                2 => PeerKind::Router,
                _ => return Err(LinkError::Invalid("unknown peer kind")),
            };
            LinkMsg::Auth {
                peer,
                id: r.u16()?,
                nonce: r.arr()?,
                mac: r.arr()?,
            }
        }
        0x03 => LinkMsg::AuthOk { mac: r.arr()? },
        0x10 => LinkMsg::Req(get_req(&mut r)?),
        0x11 => LinkMsg::Resp {
            conn: r.conn()?,
            msg: get_resp(&mut r)?,
        },
        0x12 => LinkMsg::Attach {
            conn: r.conn()?,
            user: r.phone()?,
        },
        _ => return Err(LinkError::Invalid("unknown link frame kind")),
    };
    r.done()?;
    Ok((msg, total))
}
