//! Property tests: every frame round-trips; any prefix is incomplete; arbitrary bytes
//! never panic the decoder and what decodes re-encodes to the same bytes.

use proptest::prelude::*;
use wire::frame::{decode, Frame, ReceiptKind};
use wire::{ErrorCode, FrameError, Key, Phone, Pin};

fn phone() -> impl Strategy<Value = Phone> {
    (Phone::MIN..=Phone::MAX).prop_map(|v| Phone::new(v).unwrap())
}

fn code() -> impl Strategy<Value = ErrorCode> {
    (1u16..=24).prop_map(|c| ErrorCode::from_u16(c).unwrap())
}

/// Owned inputs for a frame (bodies and reasons borrow from them).
#[derive(Debug, Clone)]
struct Case {
    tag: u8,
    p: Phone,
    n: [u64; 4],
    small: [u16; 2],
    key: [u8; 32],
    body: Vec<u8>,
    reason: String,
    code: ErrorCode,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0u8..19,
        phone(),
        any::<[u64; 4]>(),
        any::<[u16; 2]>(),
        any::<[u8; 32]>(),
        prop::collection::vec(any::<u8>(), 0..600),
        "\\PC{0,80}",
        code(),
    )
        .prop_map(|(tag, p, n, small, key, body, reason, code)| Case {
            tag,
            p,
            n,
            small,
            key,
            body,
            reason,
            code,
        })
}

fn frame(c: &Case) -> Frame<'_> {
    let (lo, hi) = (
        c.small[0].min(c.small[1]).max(1),
        c.small[0].max(c.small[1]).max(1),
    );
    match c.tag {
        0 => Frame::Hello {
            min_version: lo,
            max_version: hi,
        },
        1 => Frame::Welcome {
            version: c.small[0],
            ping_interval_s: c.small[1],
            frame_bytes_max: c.n[0] as u32,
            server_time_ms: c.n[1],
        },
        2 => Frame::RegisterRequest { phone: c.p },
        3 => Frame::RegisterPending {
            phone: c.p,
            expires_in_s: c.n[0] as u32,
        },
        4 => Frame::Verify {
            phone: c.p,
            pin: Pin::new(c.n[0] as u32 % 100_000).unwrap(),
        },
        5 => Frame::Registered {
            phone: c.p,
            key: Key(c.key),
        },
        6 => Frame::Login {
            phone: c.p,
            key: Key(c.key),
        },
        7 => Frame::LoggedIn {
            pending: c.n[0] as u32,
        },
        8 => Frame::Send {
            to: c.p,
            msg_id: c.n[0],
            body: &c.body,
        },
        9 => Frame::ServerAck {
            to: c.p,
            msg_id: c.n[0],
        },
        10 => Frame::Deliver {
            seq: c.n[0],
            from: c.p,
            msg_id: c.n[1],
            timestamp_ms: c.n[2],
            body: &c.body,
        },
        11 => Frame::Ack { seq: c.n[0] },
        12 => Frame::Receipt {
            seq: c.n[0],
            by: c.p,
            msg_id: c.n[1],
            timestamp_ms: c.n[2],
            kind: if c.n[3] % 2 == 0 {
                ReceiptKind::Delivered
            } else {
                ReceiptKind::Read
            },
        },
        13 => Frame::Read {
            from: c.p,
            msg_id: c.n[0],
        },
        14 => Frame::Ping { nonce: c.n[0] },
        15 => Frame::Pong { nonce: c.n[0] },
        16 => Frame::Error {
            code: c.code,
            reason: &c.reason,
        },
        18 => Frame::Refused {
            to: c.p,
            msg_id: c.n[0],
            code: c.code,
        },
        _ => Frame::Close {
            code: c.code,
            reason: &c.reason,
        },
    }
}

proptest! {
    #[test]
    fn every_frame_round_trips(c in case(), tail in prop::collection::vec(any::<u8>(), 0..20)) {
        let f = frame(&c);
        let mut buf = vec![];
        f.encode(&mut buf);
        prop_assert_eq!(buf.len(), f.encoded_len());
        let len = buf.len();
        buf.extend_from_slice(&tail); // the next frame's bytes must not matter
        let (back, used) = decode(&buf, 1 << 20).unwrap();
        prop_assert_eq!(used, len);
        prop_assert_eq!(back, f);
        for cut in [0, 1, 7, 8, len - 1] {
            let incomplete = matches!(decode(&buf[..cut], 1 << 20), Err(FrameError::Incomplete { .. }));
            prop_assert!(incomplete);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..300)) {
        wire::fuzzing::decode_stream(&data);
    }

    #[test]
    fn a_frame_over_the_limit_is_refused(c in case()) {
        let f = frame(&c);
        let mut buf = vec![];
        f.encode(&mut buf);
        let payload = f.payload_len();
        if payload > 0 {
            let r = decode(&buf, payload - 1);
            prop_assert!(
                matches!(r, Err(FrameError::TooLarge { .. })),
                "payload {} accepted with a {}-byte limit: {:?}", payload, payload - 1, r
            );
        }
    }
}
