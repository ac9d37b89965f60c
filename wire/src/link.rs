//! The link between gateway and router: what a gateway asks of the router that owns a
//! user, and what the router sends back to a client connection. Owned values; the
//! in-process link passes them over channels, the TCP link (private NIC) frames them.
//! `gateway` and `router` never import each other: they meet here.

use std::net::IpAddr;

use crate::error::ErrorCode;
use crate::frame::{Frame, Kind, ReceiptKind};
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
    /// What a client makes of a frame from the server: the inverse of
    /// [`ToClient::frame`], with `me` (the number the client logs in as) for `LoggedIn`,
    /// whose frame does not carry it. `Err(kind)` for a frame that is not a message to a
    /// client: the connection's own `Welcome`, `Ping` and `Pong`, or a client's frame.
    pub fn from_frame(f: Frame<'_>, me: Phone) -> Result<ToClient, Kind> {
        Ok(match f {
            Frame::RegisterPending {
                phone,
                expires_in_s,
            } => ToClient::RegisterPending {
                phone,
                expires_in_s,
            },
            Frame::Registered { phone, key } => ToClient::Registered { phone, key },
            Frame::LoggedIn { pending } => ToClient::LoggedIn { user: me, pending },
            Frame::ServerAck { to, msg_id } => ToClient::ServerAck { to, msg_id },
            Frame::Deliver {
                seq,
                from,
                msg_id,
                timestamp_ms,
                body,
            } => ToClient::Deliver {
                seq,
                from,
                msg_id,
                timestamp_ms,
                body: body.to_vec(),
            },
            Frame::Receipt {
                seq,
                by,
                msg_id,
                timestamp_ms,
                kind,
            } => ToClient::Receipt {
                seq,
                by,
                msg_id,
                timestamp_ms,
                kind,
            },
            Frame::Refused { to, msg_id, code } => ToClient::Refused { to, msg_id, code },
            Frame::Error { code, reason } => ToClient::Error {
                code,
                reason: reason.into(),
            },
            Frame::Close { code, reason } => ToClient::Close {
                code,
                reason: reason.into(),
            },
            other => return Err(other.kind()),
        })
    }

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

#[cfg(test)]
mod to_client_tests {
    use super::*;
    use proptest::prelude::*;

    fn phone() -> impl Strategy<Value = Phone> {
        (Phone::MIN..=Phone::MAX).prop_map(|n| Phone::new(n).unwrap())
    }

    fn code() -> impl Strategy<Value = ErrorCode> {
        (1u16..=24).prop_map(|c| ErrorCode::from_u16(c).unwrap())
    }

    fn to_client() -> impl Strategy<Value = ToClient> {
        prop_oneof![
            (phone(), any::<u32>()).prop_map(|(phone, expires_in_s)| {
                ToClient::RegisterPending {
                    phone,
                    expires_in_s,
                }
            }),
            (phone(), any::<[u8; 32]>())
                .prop_map(|(phone, k)| ToClient::Registered { phone, key: Key(k) }),
            (phone(), any::<u64>()).prop_map(|(to, msg_id)| ToClient::ServerAck { to, msg_id }),
            (
                any::<u64>(),
                phone(),
                any::<u64>(),
                any::<u64>(),
                any::<Vec<u8>>()
            )
                .prop_map(|(seq, from, msg_id, timestamp_ms, body)| {
                    ToClient::Deliver {
                        seq,
                        from,
                        msg_id,
                        timestamp_ms,
                        body,
                    }
                }),
            (
                any::<u64>(),
                phone(),
                any::<u64>(),
                any::<u64>(),
                any::<bool>()
            )
                .prop_map(|(seq, by, msg_id, timestamp_ms, read)| ToClient::Receipt {
                    seq,
                    by,
                    msg_id,
                    timestamp_ms,
                    kind: if read {
                        ReceiptKind::Read
                    } else {
                        ReceiptKind::Delivered
                    },
                }),
            (phone(), any::<u64>(), code()).prop_map(|(to, msg_id, code)| ToClient::Refused {
                to,
                msg_id,
                code
            }),
            (code(), "[a-z ]{0,40}").prop_map(|(code, reason)| ToClient::Error { code, reason }),
            (code(), "[a-z ]{0,40}").prop_map(|(code, reason)| ToClient::Close { code, reason }),
        ]
    }

    proptest! {
        /// The server's message and the client's reading of its frame are the same value:
        /// one vocabulary, both ways.
        #[test]
        fn a_message_read_back_from_its_frame_is_itself(m in to_client(), me in phone()) {
            prop_assert_eq!(ToClient::from_frame(m.frame(), me), Ok(m.clone()));
            let logged_in = ToClient::LoggedIn { user: me, pending: 7 };
            prop_assert_eq!(ToClient::from_frame(logged_in.frame(), me), Ok(logged_in.clone()));
        }
    }

    #[test]
    fn connection_frames_are_not_messages() {
        let me = Phone::new(15550001).unwrap();
        assert_eq!(
            ToClient::from_frame(Frame::Ping { nonce: 1 }, me),
            Err(Kind::Ping)
        );
        assert_eq!(
            ToClient::from_frame(Frame::Ack { seq: 1 }, me),
            Err(Kind::Ack)
        );
    }
}
