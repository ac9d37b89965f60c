//! Entry points for the fuzz targets in `storage/fuzz/` (and the property tests that
//! run the same bodies on every `cargo test`). Each must never panic on any input.

use crate::record::{decode, SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::scan::{Item, Scanner};
use crate::{Log, LogConfig};

/// Decodes records from arbitrary bytes, and re-encodes what decodes to the same bytes.
pub fn decode_records(data: &[u8]) {
    let _ = SegmentHeader::decode(data);
    let mut at = 0;
    while at < data.len() {
        match decode(&data[at..]) {
            Ok((rec, len)) => {
                let mut buf = vec![0u8; rec.encoded_len()];
                rec.encode(&mut buf);
                let framed = &data[at..at + len];
                // Same framed bytes (padding is not checksummed).
                let body = crate::record::RECORD_HEADER_BYTES
                    + u32::from_le_bytes(framed[4..8].try_into().unwrap()) as usize;
                assert_eq!(&buf[..body], &framed[..body]);
                at += len;
            }
            Err(_) => at += 8,
        }
    }
}

/// Scans arbitrary bytes as a segment: items must tile the data without overlap.
pub fn scan_segment(data: &[u8]) {
    let data = &data[..data.len() & !7];
    let mut scan = Scanner::new(data);
    let mut at = SEGMENT_HEADER_BYTES.min(data.len());
    for item in &mut scan {
        let (offset, len) = match item {
            Item::Record { offset, len, .. }
            | Item::Unknown { offset, len, .. }
            | Item::Skipped { offset, len, .. } => (offset, len),
        };
        assert_eq!(offset, at);
        assert!(len > 0 && offset + len <= data.len());
        at = offset + len;
    }
    let end = scan.end().expect("finished");
    assert!(end.offset >= at.min(data.len()) && end.offset + end.torn_bytes <= data.len());
}

/// Writes arbitrary bytes as the only segment of a fresh log and opens it; the log
/// must open, and appending after recovery must work.
pub fn recover_from_bytes(data: &[u8]) {
    static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sb-fuzz-{}-{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = LogConfig {
        segment_bytes: 64 * 1024,
        durability: crate::Durability::None,
        prefault: false,
        ..LogConfig::default()
    };
    let mut seg = vec![0u8; config.segment_bytes as usize];
    let n = data.len().min(seg.len());
    seg[..n].copy_from_slice(&data[..n]);
    std::fs::write(dir.join("00000001.seg"), &seg).expect("write segment");
    match Log::open(&dir, config, 0) {
        Ok((mut log, _report)) => {
            let u = crate::UserId::new(1).expect("valid");
            log.append_message(&crate::NewMessage {
                recipient: u,
                sender: u,
                msg_id: 1,
                timestamp_ms: 1,
                expiry_ms: None,
                body: b"after recovery",
            })
            .expect("append after recovery");
        }
        Err(crate::StorageError::NewerFormat { .. }) => {}
        Err(e) => panic!("open refused: {e}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
