//! The link between gateway and router: what a gateway asks of the router that owns a
//! user, and what the router sends back to a client connection. Owned values; the
//! in-process link passes them over channels, the TCP link (private NIC) frames them.
//! `gateway` and `router` never import each other: they meet here.

use std::net::IpAddr;

use crate::error::ErrorCode;
use crate::frame::{Frame, ReceiptKind};
use crate::types::{Key, Phone, Pin};

/// A client connection on some gateway process. Layout: gateway id (8 bits) | the
/// process's upgrade epoch (2 bits) | worker (6 bits) | generation (16) | slot (32).
/// The router reads only [`ConnId::origin`]: which gateway process holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    /// The gateway process the connection lives on: gateway id and upgrade epoch (the
    /// top 10 bits). While a new gateway process takes over from the old one both run
    /// with the same gateway id and different epochs, each with its own router links.
    pub fn origin(self) -> u16 {
        (self.0 >> 54) as u16
    }

    /// The gateway id of an [`ConnId::origin`].
    pub fn gateway_of_origin(origin: u16) -> u8 {
        (origin >> 2) as u8
    }
}

/// A request for the router that owns the user named in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToRouter {
    /// Routed by `phone`.
    Register {
        conn: ConnId,
        phone: Phone,
        source: IpAddr,
    },
    /// Routed by `phone`.
    Verify {
        conn: ConnId,
        phone: Phone,
        pin: Pin,
    },
    /// Routed by `phone`.
    Login {
        conn: ConnId,
        phone: Phone,
        key: Key,
    },
    /// From the logged-in `from`; routed by `to` (the recipient's router stores it).
    Send {
        conn: ConnId,
        from: Phone,
        to: Phone,
        msg_id: u64,
        body: Vec<u8>,
    },
    /// From the logged-in `user`, acknowledging a delivery; routed by `user`.
    Ack { conn: ConnId, user: Phone, seq: u64 },
    /// `user` has read `from`'s message; routed by `from` (its receipt is stored there).
    Read {
        conn: ConnId,
        user: Phone,
        from: Phone,
        msg_id: u64,
    },
    /// The connection is gone; routed by `user`.
    Closed { conn: ConnId, user: Phone },
    /// Router to router: store a receipt for `to` (a sender) about `msg_id`; routed by `to`.
    Receipt {
        to: Phone,
        by: Phone,
        msg_id: u64,
        kind: ReceiptKind,
        timestamp_ms: u64,
    },
}

impl ToRouter {
    /// The user whose router must handle this.
    pub fn route_key(&self) -> Phone {
        match *self {
            ToRouter::Register { phone, .. }
            | ToRouter::Verify { phone, .. }
            | ToRouter::Login { phone, .. } => phone,
            ToRouter::Send { to, .. } => to,
            // A Read goes to the reader's router first: only it knows what the reader
            // received (the receipt then goes on to the sender's).
            ToRouter::Ack { user, .. }
            | ToRouter::Closed { user, .. }
            | ToRouter::Read { user, .. } => user,
            ToRouter::Receipt { to, .. } => to,
        }
    }
}

/// What a router sends to a client connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToClient {
    RegisterPending {
        phone: Phone,
        expires_in_s: u32,
    },
    Registered {
        phone: Phone,
        key: Key,
    },
    LoggedIn {
        user: Phone,
        pending: u32,
    },
    ServerAck {
        to: Phone,
        msg_id: u64,
    },
    Deliver {
        seq: u64,
        from: Phone,
        msg_id: u64,
        timestamp_ms: u64,
        body: Vec<u8>,
    },
    Receipt {
        seq: u64,
        by: Phone,
        msg_id: u64,
        timestamp_ms: u64,
        kind: ReceiptKind,
    },
    Refused {
        to: Phone,
        msg_id: u64,
        code: ErrorCode,
    },
    /// An error answer; the connection stays open.
    Error {
        code: ErrorCode,
        reason: String,
    },
    /// Close the connection with this code (e.g. logged in elsewhere, auth failed).
    Close {
        code: ErrorCode,
        reason: String,
    },
}

impl ToClient {
    /// The wire frame for it.
    pub fn frame(&self) -> Frame<'_> {
        match self {
            ToClient::RegisterPending {
                phone,
                expires_in_s,
            } => Frame::RegisterPending {
                phone: *phone,
                expires_in_s: *expires_in_s,
            },
            ToClient::Registered { phone, key } => Frame::Registered {
                phone: *phone,
                key: *key,
            },
            ToClient::LoggedIn { pending, .. } => Frame::LoggedIn { pending: *pending },
            ToClient::ServerAck { to, msg_id } => Frame::ServerAck {
                to: *to,
                msg_id: *msg_id,
            },
            ToClient::Deliver {
                seq,
                from,
                msg_id,
                timestamp_ms,
                body,
            } => Frame::Deliver {
                seq: *seq,
                from: *from,
                msg_id: *msg_id,
                timestamp_ms: *timestamp_ms,
                body,
            },
            ToClient::Receipt {
                seq,
                by,
                msg_id,
                timestamp_ms,
                kind,
            } => Frame::Receipt {
                seq: *seq,
                by: *by,
                msg_id: *msg_id,
                timestamp_ms: *timestamp_ms,
                kind: *kind,
            },
            ToClient::Refused { to, msg_id, code } => Frame::Refused {
                to: *to,
                msg_id: *msg_id,
                code: *code,
            },
            ToClient::Error { code, reason } => Frame::Error {
                code: *code,
                reason,
            },
            ToClient::Close { code, reason } => Frame::Close {
                code: *code,
                reason,
            },
        }
    }
}

/// Everything a router emits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FromRouter {
    ToClient {
        conn: ConnId,
        msg: ToClient,
    },
    /// A request for another user's router (a receipt for a sender elsewhere).
    ToRouter(ToRouter),
    /// Send this PIN to this number by SMS (the appliance's `SmsSender` does it).
    Sms {
        phone: Phone,
        pin: Pin,
    },
}
