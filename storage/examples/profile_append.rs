//! A fixed workload for profilers (`perf record`, callgrind): appends 100-byte records
//! then reopens the log. `cargo run --release -p storage --example profile_append -- N`.
mod common;

use std::time::Instant;

use common::{append_round_robin, arg_or, env_or};

use storage::{Durability, Log, LogConfig};

fn main() {
    let n = arg_or(5_000_000);
    if let Ok(d) = std::env::var("RECOVER_DIR") {
        // Recovery only, of a log made by an earlier run with KEEP_DIR.
        let t = Instant::now();
        let (_log, report) = Log::open(&d, LogConfig::default(), 0).unwrap();
        println!(
            "reopen {:?} ({:.2} GB/s of records; scan {:?}, index {:?})",
            t.elapsed(),
            report.bytes as f64 / t.elapsed().as_secs_f64() / 1e9,
            report.scan_elapsed,
            report.index_elapsed
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        durability: Durability::None,
        shard_messages_max: u64::MAX / 2,
        shard_bytes_max: u64::MAX / 2,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(dir.path(), config.clone(), 0).unwrap();
    let users = env_or("USERS", 100_000);
    let t = Instant::now();
    // BACKLOG=k: once a user has k pending, each append also erases its oldest.
    let backlog: Option<u64> = std::env::var("BACKLOG").ok().and_then(|b| b.parse().ok());
    let mut seqs = std::collections::VecDeque::new();
    for i in 0..n {
        let (to, seq) = append_round_robin(&mut log, i, users);
        if let Some(k) = backlog {
            seqs.push_back((to, seq));
            if seqs.len() as u64 > k * users {
                let (u, s) = seqs.pop_front().unwrap();
                log.erase(u, s).unwrap();
            }
        }
    }
    let append = t.elapsed();
    drop(log);
    if std::env::var("APPEND_ONLY").is_ok() {
        println!("append {:.2} M/s", n as f64 / append.as_secs_f64() / 1e6);
        return;
    }
    if std::env::var("KEEP_DIR").is_ok() {
        println!("kept {}", dir.keep().display());
        return;
    }
    if std::env::var("RAW_SCAN").is_ok() {
        raw_scan(dir.path());
        raw_mmap_scan(dir.path(), false);
        raw_mmap_scan(dir.path(), true);
    }
    let t = Instant::now();
    let (_log, report) = Log::open(dir.path(), config, 0).unwrap();
    println!(
        "append {:.2} M/s; reopen {:?} ({:.2} GB/s of records)",
        n as f64 / append.as_secs_f64() / 1e6,
        t.elapsed(),
        report.bytes as f64 / t.elapsed().as_secs_f64() / 1e9
    );
}

/// Raw scan speed over heap copies of the segments (no mmap, no index): the floor.
#[allow(dead_code)]
fn raw_scan(dir: &std::path::Path) {
    let mut bufs = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "seg") {
            bufs.push(std::fs::read(p).unwrap());
        }
    }
    let t = Instant::now();
    let mut n = 0u64;
    let mut bytes = 0u64;
    for b in &bufs {
        for item in storage::scan::Scanner::new(b) {
            if let storage::scan::Item::Record { len, .. } = item {
                n += 1;
                bytes += len as u64;
            }
        }
    }
    println!(
        "raw scan: {n} records, {:.2} GB/s",
        bytes as f64 / t.elapsed().as_secs_f64() / 1e9
    );
}

#[allow(dead_code)]
fn raw_mmap_scan(dir: &std::path::Path, populate: bool) {
    let mut maps = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "seg") {
            let f = std::fs::File::open(p).unwrap();
            // SAFETY: test files nobody else touches.
            maps.push(unsafe { memmap2::Mmap::map(&f) }.unwrap());
        }
    }
    let t = Instant::now();
    if populate {
        for m in &maps {
            m.advise(memmap2::Advice::PopulateRead).unwrap();
        }
    }
    let t1 = t.elapsed();
    let mut bytes = 0u64;
    for b in &maps {
        for item in storage::scan::Scanner::new(b) {
            if let storage::scan::Item::Record { len, .. } = item {
                bytes += len as u64;
            }
        }
    }
    println!(
        "mmap scan (populate {populate}: {t1:?}): {:.2} GB/s",
        bytes as f64 / t.elapsed().as_secs_f64() / 1e9
    );
}
