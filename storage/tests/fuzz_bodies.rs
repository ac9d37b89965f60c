//! The fuzz targets' bodies on random and on mutated valid input, on every test run
//! (`cargo fuzz` in storage/fuzz runs them coverage-guided; see docs/STORAGE.md).

use proptest::prelude::*;
use storage::fuzzing;
use storage::record::{MessageRecord, Record, SegmentHeader, FORMAT_VERSION};
use storage::{MsgSeq, SegmentId, UserId};

/// A valid segment image: header and a few records, to mutate.
fn valid_segment(bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut buf = vec![0u8; 8192];
    let h = SegmentHeader {
        version: FORMAT_VERSION,
        segment: SegmentId(1),
        seq_base: 1,
        created_unix_ms: 0,
        segment_bytes: 65536,
    };
    buf[..64].copy_from_slice(&h.encode());
    let mut at = 64;
    for (i, b) in bodies.iter().enumerate() {
        let u = UserId::new(1 + i as u64).unwrap();
        let r = if i % 3 == 2 {
            Record::AccountPut {
                key: b"k",
                value: b,
            }
        } else {
            Record::Message(MessageRecord {
                recipient: u,
                sender: u,
                msg_id: i as u64,
                seq: MsgSeq(1 + i as u64),
                timestamp_ms: 1,
                expiry_ms: u64::MAX,
                body: b,
            })
        };
        if at + r.encoded_len() > buf.len() {
            break;
        }
        at += r.encode(&mut buf[at..]);
    }
    buf
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn decode_records_on_random_bytes(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        fuzzing::decode_records(&data);
        fuzzing::scan_segment(&data);
    }

    #[test]
    fn scan_and_recover_mutated_segments(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..20),
        flips in prop::collection::vec((64usize..8192, any::<u8>()), 0..6),
        cut in prop::option::of(64usize..8192),
    ) {
        let mut seg = valid_segment(&bodies);
        for (at, x) in flips {
            seg[at] ^= x;
        }
        if let Some(c) = cut {
            seg.truncate(c);
        }
        fuzzing::decode_records(&seg);
        fuzzing::scan_segment(&seg);
        fuzzing::recover_from_bytes(&seg);
    }
}

#[test]
fn recover_from_random_bytes() {
    // Pure noise, an empty file, and a header alone must all open.
    let mut x = 0x1234_5678_9abc_def0u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fuzzing::recover_from_bytes(&noise);
    fuzzing::recover_from_bytes(&[]);
    fuzzing::recover_from_bytes(&valid_segment(&[])[..64]);
}
