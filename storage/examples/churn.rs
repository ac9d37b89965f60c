//! Steady traffic against reclaim: once `BACKLOG` × `USERS` messages are pending, each
//! append erases one pending message (with `RANDOM`, any one; without, the one at the
//! front after the previous swap, which leaves the first messages pending for good, like
//! users who never come back). `maintain` runs every 1,000 appends as the router's tick
//! would. Prints the log's segments and bytes on disk over time.
//! `SEGMENT_MB=4 cargo run --release -p storage --example churn -- APPENDS`.
mod common;

use std::collections::VecDeque;

use common::{append_round_robin, arg_or, env_or};

use storage::{Durability, Log, LogConfig};

fn main() {
    let n = arg_or(20_000_000);
    let (users, backlog) = (env_or("USERS", 100_000), env_or("BACKLOG", 2));
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        durability: Durability::None,
        segment_bytes: env_or("SEGMENT_MB", 64) << 20,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(dir.path(), config, 0).unwrap();
    let mut pending = VecDeque::new();
    let random = std::env::var_os("RANDOM").is_some();
    for i in 0..n {
        let (to, seq) = append_round_robin(&mut log, i, users);
        pending.push_back((to, seq));
        if pending.len() as u64 > backlog * users {
            // RANDOM: acknowledgements in any order (users online at random), not FIFO.
            let k = if random {
                (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) as usize % pending.len()
            } else {
                0
            };
            let (u, s) = pending.swap_remove_back(k).unwrap();
            log.erase(u, s).unwrap();
        }
        if i % 1000 == 0 {
            log.maintain(1, 1 << 20).unwrap();
        }
        if i % (n / 20) == 0 {
            let s = log.stats();
            println!(
                "{i:>10} appends: {} segments, {} MB on disk, {} pending ({} MB of records)",
                s.segments,
                s.disk_bytes >> 20,
                s.pending_messages,
                (s.pending_messages * 104) >> 20
            );
        }
    }
}
