//! The link codec: every message round-trips, prefixes are incomplete, garbage never panics.

use proptest::prelude::*;
use wire::frame::ReceiptKind;
use wire::link::{ConnId, ToClient, ToRouter};
use wire::linkcodec::{decode_link, LinkError, LinkMsg, PeerKind};
use wire::{ErrorCode, Key, Phone, Pin};

fn phone() -> impl Strategy<Value = Phone> {
    (Phone::MIN..=Phone::MAX).prop_map(|v| Phone::new(v).unwrap())
}

fn msg() -> impl Strategy<Value = LinkMsg> {
    (
        0u8..22,
        phone(),
        phone(),
        any::<[u64; 3]>(),
        any::<[u8; 32]>(),
        prop::collection::vec(any::<u8>(), 0..300),
        "\\PC{0,40}",
        any::<bool>(),
    )
        .prop_map(|(t, a, b, n, k, body, text, v4)| {
            let conn = ConnId(n[0]);
            let kind = if n[1] % 2 == 0 {
                ReceiptKind::Delivered
            } else {
                ReceiptKind::Read
            };
            let code = ErrorCode::from_u16((n[2] % 24) as u16 + 1).unwrap();
            let source = if v4 {
                "10.1.2.3".parse().unwrap()
            } else {
                "fd00::7".parse().unwrap()
            };
            match t {
                0 => LinkMsg::Challenge { nonce: k },
                1 => LinkMsg::Auth {
                    peer: if v4 {
                        PeerKind::Gateway
                    } else {
                        PeerKind::Router
                    },
                    id: n[1] as u16,
                    nonce: k,
                    mac: k,
                },
                2 => LinkMsg::AuthOk { mac: k },
                3 => LinkMsg::Req(ToRouter::Register {
                    conn,
                    phone: a,
                    source,
                }),
                4 => LinkMsg::Req(ToRouter::Verify {
                    conn,
                    phone: a,
                    pin: Pin::new((n[1] % 100_000) as u32).unwrap(),
                }),
                5 => LinkMsg::Req(ToRouter::Login {
                    conn,
                    phone: a,
                    key: Key(k),
                }),
                6 => LinkMsg::Req(ToRouter::Send {
                    conn,
                    from: a,
                    to: b,
                    msg_id: n[1],
                    body,
                }),
                7 => LinkMsg::Req(ToRouter::Ack {
                    conn,
                    user: a,
                    seq: n[1],
                }),
                8 => LinkMsg::Req(ToRouter::Read {
                    conn,
                    user: a,
                    from: b,
                    msg_id: n[1],
                }),
                9 => LinkMsg::Req(ToRouter::Closed { conn, user: a }),
                10 => LinkMsg::Req(ToRouter::Receipt {
                    to: a,
                    by: b,
                    msg_id: n[1],
                    kind,
                    timestamp_ms: n[2],
                }),
                11 => LinkMsg::Resp {
                    conn,
                    msg: ToClient::RegisterPending {
                        phone: a,
                        expires_in_s: n[1] as u32,
                    },
                },
                12 => LinkMsg::Resp {
                    conn,
                    msg: ToClient::Registered {
                        phone: a,
                        key: Key(k),
                    },
                },
                13 => LinkMsg::Resp {
                    conn,
                    msg: ToClient::LoggedIn {
                        user: a,
                        pending: n[1] as u32,
                    },
                },
                14 => LinkMsg::Resp {
                    conn,
                    msg: ToClient::ServerAck {
                        to: a,
                        msg_id: n[1],
                    },
                },
                15 => LinkMsg::Resp {
                    conn,
                    msg: ToClient::Deliver {
                        seq: n[1],
                        from: a,
                        msg_id: n[2],
                        timestamp_ms: n[0],
                        body,
                    },
                },
                16 => LinkMsg::Resp {
                    conn,
                    msg: ToClient::Receipt {
                        seq: n[1],
                        by: a,
                        msg_id: n[2],
                        timestamp_ms: n[0],
                        kind,
                    },
                },
                17 => LinkMsg::Resp {
                    conn,
                    msg: ToClient::Refused {
                        to: a,
                        msg_id: n[1],
                        code,
                    },
                },
                18 => LinkMsg::Resp {
                    conn,
                    msg: ToClient::Error { code, reason: text },
                },
                19 => LinkMsg::Resp {
                    conn,
                    msg: ToClient::Close { code, reason: text },
                },
                _ => LinkMsg::Attach { conn, user: a },
            }
        })
}

proptest! {
    #[test]
    fn link_messages_round_trip_batched(msgs in prop::collection::vec(msg(), 1..8)) {
        let mut buf = vec![];
        for m in &msgs {
            m.encode(&mut buf);
        }
        let mut at = 0;
        for m in &msgs {
            let (back, n) = decode_link(&buf[at..]).unwrap();
            prop_assert_eq!(&back, m);
            for cut in [0, 7, n - 1] {
                let incomplete = matches!(decode_link(&buf[at..at + cut]), Err(LinkError::Incomplete { .. }));
                prop_assert!(incomplete);
            }
            at += n;
        }
        prop_assert_eq!(at, buf.len());
    }

    #[test]
    fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode_link(&data);
    }
}
