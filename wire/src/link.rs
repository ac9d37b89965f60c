//! The link between gateway and router: what a gateway asks of the router that owns a
//! user, and what the router sends back to a client connection. Owned values; the
//! in-process link passes them over channels, the TCP link (private NIC) frames them.
//! `gateway` and `router` never import each other: they meet here.

use std::net::IpAddr;

use crate::error::ErrorCode;
use crate::frame::{Frame, ReceiptKind};
use crate::types::{Key, Phone, Pin};

/// A client connection on some gateway process. The one place its layout is written:
///
/// ```text
/// bit 63       56 55  54 53    48 47          32 31                0
///     | gateway  | epoch | worker | generation   | slot              |
///       8 bits     2       6        16             32
/// ```
///
/// The gateway id and the process's upgrade epoch together are the connection's
/// *origin* (the top 10 bits): the gateway process holding it, all a router reads. The
/// worker holds it in `slot`; `generation` tells a reused slot's connections apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    /// Workers per gateway process at most (the worker index has 6 bits).
    pub const WORKERS_MAX: usize = 64;
    /// Upgrade epochs (2 bits): a process taking over from another uses the next one.
    pub const EPOCHS: u8 = 4;

    /// Panics when `epoch` or `worker` does not fit its bits (a bug of the caller:
    /// configurations are checked against [`ConnId::WORKERS_MAX`] at start).
    pub fn new(gateway: u8, epoch: u8, worker: u8, generation: u16, slot: u32) -> ConnId {
        assert!(epoch < Self::EPOCHS, "upgrade epoch {epoch} over 2 bits");
        assert!(
            (worker as usize) < Self::WORKERS_MAX,
            "worker {worker} over 6 bits"
        );
        ConnId(
            (Self::origin_of(gateway, epoch) as u64) << 54
                | (worker as u64) << 48
                | (generation as u64) << 32
                | slot as u64,
        )
    }

    /// The origin of the connections of gateway `gateway`'s process of upgrade `epoch`.
    pub fn origin_of(gateway: u8, epoch: u8) -> u16 {
        (gateway as u16) << 2 | (epoch & 3) as u16
    }

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

    /// The upgrade epoch of an [`ConnId::origin`].
    pub fn epoch_of_origin(origin: u16) -> u8 {
        (origin & 3) as u8
    }

    pub fn gateway(self) -> u8 {
        (self.0 >> 56) as u8
    }

    pub fn epoch(self) -> u8 {
        Self::epoch_of_origin(self.origin())
    }

    /// The index of the worker holding the connection.
    pub fn worker(self) -> u8 {
        (self.0 >> 48) as u8 & 0x3f
    }

    pub fn generation(self) -> u16 {
        (self.0 >> 32) as u16
    }

    pub fn slot(self) -> u32 {
        self.0 as u32
    }
}

#[cfg(test)]
mod conn_id_tests {
    use super::ConnId;

    #[test]
    fn every_field_reads_back_and_the_origin_is_gateway_and_epoch() {
        for (g, e, w, gen, slot) in [
            (0, 0, 0, 0, 0),
            (255, 3, 63, u16::MAX, u32::MAX),
            (7, 2, 5, 9, 11),
        ] {
            let c = ConnId::new(g, e, w, gen, slot);
            assert_eq!(
                (c.gateway(), c.epoch(), c.worker(), c.generation(), c.slot()),
                (g, e, w, gen, slot)
            );
            assert_eq!(c.origin(), ConnId::origin_of(g, e));
            assert_eq!(ConnId::gateway_of_origin(c.origin()), g);
            assert_eq!(ConnId::epoch_of_origin(c.origin()), e);
        }
    }

    #[test]
    #[should_panic(expected = "over 6 bits")]
    fn a_worker_over_its_bits_is_refused() {
        ConnId::new(1, 0, 64, 0, 0);
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
