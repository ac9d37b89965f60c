//! What the storage examples share: the appliance's allocator, so the figures are the
//! product's, and how they read their knobs.
#![allow(dead_code)] // each example uses a different subset

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
