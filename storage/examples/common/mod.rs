//! What the storage examples share: the appliance's allocator, so the figures are the
//! product's, and how they read their knobs.
#![allow(dead_code)] // each example uses a different subset

use storage::{Log, MsgSeq, NewMessage, UserId};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The first command-line argument as a number, or `default`.
pub fn arg_or(default: u64) -> u64 {
    std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// The environment variable `key` as a number, or `default`.
pub fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Appends message `i`, a 100-byte record (36-byte body), to user `1 + i % users`, from
/// that user; returns the user and the message's sequence number.
pub fn append_round_robin(log: &mut Log, i: u64, users: u64) -> (UserId, MsgSeq) {
    let to = UserId::new(1 + i % users).unwrap();
    let a = log
        .append_message(&NewMessage {
            recipient: to,
            sender: to,
            msg_id: i,
            timestamp_ms: 1,
            expiry_ms: None,
            body: &[0x42; 36],
        })
        .unwrap();
    (to, a.seq)
}
