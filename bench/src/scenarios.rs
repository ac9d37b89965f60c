//! The scenarios. Each starts (or finds) the server, brings its clients up, samples the
//! server before and after the measured part, and reports.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::json;
use wire::frame::Frame;
use wire::{Key, Phone};

use crate::engine::{Ev, Fleet, PinBook};
use crate::login::{self, hist, login_all, Keys, Outcome, Plan};
use crate::pairs::{Pairs, BUCKET};
use crate::report::{chart, median, Report};
use crate::server::{sample, Sample, Server, SpawnSpec};
use crate::Common;

type R<T> = Result<T, String>;

/// The server and how to talk to it.
struct Target {
    server: Server,
    tls: Arc<rustls::ClientConfig>,
}

impl Target {
    fn new(c: &Common) -> R<Target> {
        let s = &c.server;
        let server = match s.addr {
            Some(addr) => Server::existing(
                addr,
                s.fingerprint.clone().expect("clap requires it"),
                s.sms_logs.clone(),
                s.server_pids.clone(),
            ),
            None => Server::spawn(&SpawnSpec {
                exe: s.switchboard.clone().unwrap_or_else(|| {
                    std::env::current_exe()
                        .ok()
                        .and_then(|p| p.parent().map(|d| d.join("switchboard")))
                        .unwrap_or_else(|| PathBuf::from("switchboard"))
                }),
                gateways: s.gateways,
                workers: s.workers,
                cpus: s.server_cpus.clone(),
                extra_toml: s.server_toml.clone(),
                data: s.server_data.clone(),
            })?,
        };
        let tls = tls(&server.fingerprint, c.full_handshakes)?;
        Ok(Target { server, tls })
    }

    fn fleet(&self) -> R<Fleet> {
        Fleet::new(
            self.server.addr,
            self.tls.clone(),
            PinBook::new(self.server.sms_logs.clone()),
        )
        .map_err(|e| format!("poll: {e}"))
    }

    fn sample(&self) -> R<Sample> {
        sample(&self.server.pids)
    }
}

fn tls(fingerprint: &str, full: bool) -> R<Arc<rustls::ClientConfig>> {
    let base = client::tls_config(&client::Trust::Fingerprint(fingerprint.into()))
        .map_err(|e| e.to_string())?;
    let mut c = (*base).clone();
    if full {
        c.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(c))
}

fn phones(first: u64, n: u64) -> R<Vec<Phone>> {
    (first..first + n)
        .map(|p| Phone::new(p).ok_or_else(|| format!("{p} is not a valid phone number")))
        .collect()
}

fn keys(c: &Common) -> R<Keys> {
    match &c.keys {
        Some(p) => Keys::load(p),
        None => Ok(Keys::default()),
    }
}

fn save_keys(c: &Common, new: &[(Phone, Key)]) -> R<()> {
    match &c.keys {
        Some(p) if !new.is_empty() => Keys::append(p, new),
        _ => Ok(()),
    }
}

fn bar(n: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(n);
    b.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    b.set_message(what.to_string());
    b
}

fn spinner(what: String) -> ProgressBar {
    let b = ProgressBar::new_spinner();
    b.set_message(what);
    b.enable_steady_tick(Duration::from_millis(200));
    b
}

/// Waits (up to 30 s) until the server's RSS stops falling.
fn settle(t: &Target) -> R<()> {
    let sp = spinner("server memory settling".into());
    let started = Instant::now();
    let mut last = t.sample()?.rss();
    let mut quiet = 0;
    while quiet < 3 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(1));
        let now = t.sample()?.rss();
        if now + 64 * 1024 >= last {
            quiet += 1;
        } else {
            quiet = 0;
        }
        last = last.min(now);
    }
    sp.finish_and_clear();
    Ok(())
}

fn self_cpu() -> f64 {
    crate::server::sample_proc(std::process::id()).map_or(0.0, |s| s.cpu_s)
}

fn check_logins(what: &str, o: &Outcome) -> R<()> {
    if o.failed > 0 {
        return Err(format!(
            "{what}: {} of {} clients did not log in: {}",
            o.failed,
            o.ids.len(),
            o.errors.join("; ")
        ));
    }
    Ok(())
}

/// Brings phones up in this process (registering those without keys), saving new keys.
fn bring_up(
    fleet: &mut Fleet,
    c: &Common,
    keys: &Keys,
    phones: &[Phone],
    what: &str,
    close_when_ready: bool,
    other: &mut dyn FnMut(&mut Fleet, Ev),
) -> R<Outcome> {
    let b = bar(phones.len() as u64, what);
    let o = login_all(
        fleet,
        &Plan {
            phones,
            keys,
            sources: &[],
            rate: 0.0,
            inflight: c.inflight,
            attempts: 3,
            deadline: Duration::from_secs(60 + phones.len() as u64 / 500),
            close_when_ready,
        },
        other,
        &mut |ready, failed| b.set_position(ready + failed),
    );
    b.finish_and_clear();
    save_keys(c, &o.new_keys)?;
    check_logins(what, &o)?;
    Ok(o)
}

fn finish(report: &Report, c: &Common) -> R<()> {
    report.print();
    if let Some(p) = &c.json {
        report.write_json(p)?;
        println!("  report: {}", p.display());
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{} error(s), see above", report.errors.len()))
    }
}

fn timeline(p: &Pairs) -> Vec<(f64, f64)> {
    let per_s = 1.0 / BUCKET.as_secs_f64();
    p.timeline
        .iter()
        .enumerate()
        .map(|(i, n)| (i as f64 * BUCKET.as_secs_f64(), *n as f64 * per_s))
        .collect()
}

// ---------------------------------------------------------------------------- pairs

#[derive(Args, Clone, Debug)]
pub struct PairsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sender→receiver pairs.
    #[arg(long, default_value_t = 100)]
    pub pairs: u64,
    /// Unacknowledged messages per pair.
    #[arg(long, default_value_t = 10)]
    pub window: u32,
    /// Body bytes (at least 8: the send time travels in it).
    #[arg(long, default_value_t = 100)]
    pub body: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Seconds of warm-up before the first run.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Measured runs (the report gives each and the median).
    #[arg(long, default_value_t = 1)]
    pub runs: u32,
}

/// Turns the fleet for `d`, feeding the pairs.
fn run_pairs_for(fleet: &mut Fleet, p: &mut Pairs, d: Duration, errors: &mut Vec<String>) -> R<()> {
    let until = Instant::now() + d;
    let mut evs = Vec::new();
    while Instant::now() < until {
        fleet
            .turn(Duration::from_millis(10), &mut evs)
            .map_err(|e| format!("poll: {e}"))?;
        for ev in evs.drain(..) {
            match p.on(fleet, &ev) {
                Ok(_) => {}
                Err(e) => {
                    errors.push(e.clone());
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

pub fn pairs(a: PairsArgs) -> R<()> {
    if a.pairs == 0 || a.window == 0 || a.body < 8 || a.runs == 0 {
        return Err("--pairs, --window and --runs must be at least 1, --body at least 8".into());
    }
    let c = &a.common;
    let t = Target::new(c)?;
    let keys = keys(c)?;
    let phones = phones(c.first_phone.unwrap_or(16_000_000_000), 2 * a.pairs)?;
    let mut fleet = t.fleet()?;
    let o = bring_up(
        &mut fleet,
        c,
        &keys,
        &phones,
        "logging in",
        false,
        &mut |_, _| {},
    )?;
    let ids: Vec<usize> = o.ids.iter().map(|i| i.expect("all up")).collect();
    let mut p = Pairs::new(&ids, &phones, a.window, a.body);
    let mut report = Report::new(
        "pairs",
        json!({"pairs": a.pairs, "window": a.window, "body": a.body, "duration_s": a.duration,
               "warmup_s": a.warmup, "runs": a.runs, "server": t.server.addr.to_string(),
               "server_processes": t.server.pids.len()}),
    );
    p.start(&mut fleet);
    let sp = spinner("warming up".into());
    run_pairs_for(
        &mut fleet,
        &mut p,
        Duration::from_secs_f64(a.warmup),
        &mut report.errors,
    )?;
    let (mut rates, mut p50s, mut p99s, mut p999s, mut cpus, mut own) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut all = hist();
    for run in 1..=a.runs {
        sp.set_message(format!("run {run}/{}", a.runs));
        let s0 = t.sample()?;
        let me0 = self_cpu();
        if run == 1 {
            report.server_before = s0.clone();
        }
        p.measure();
        let started = Instant::now();
        run_pairs_for(
            &mut fleet,
            &mut p,
            Duration::from_secs_f64(a.duration),
            &mut report.errors,
        )?;
        p.measuring = false;
        let el = started.elapsed().as_secs_f64();
        let s1 = t.sample()?;
        let rate = p.delivered as f64 / el;
        let n = p.delivered.max(1) as f64;
        let cpu = (s1.cpu() - s0.cpu()) * 1e6 / n;
        let me = (self_cpu() - me0) * 1e6 / n;
        report.add(format!("run {run}: delivered"), rate, "msgs/s");
        report.add(
            format!("run {run}: latency p50"),
            p.hist.value_at_quantile(0.5) as f64,
            "µs",
        );
        report.add(
            format!("run {run}: latency p99"),
            p.hist.value_at_quantile(0.99) as f64,
            "µs",
        );
        report.add(format!("run {run}: server CPU"), cpu, "µs/msg");
        rates.push(rate);
        p50s.push(p.hist.value_at_quantile(0.5) as f64);
        p99s.push(p.hist.value_at_quantile(0.99) as f64);
        p999s.push(p.hist.value_at_quantile(0.999) as f64);
        cpus.push(cpu);
        own.push(me);
        let _ = all.add(&p.hist);
        report.server_after = s1;
    }
    sp.finish_and_clear();
    report.add("delivered (median)", median(rates), "msgs/s");
    report.add("latency p50 (median)", median(p50s), "µs");
    report.add("latency p99 (median)", median(p99s), "µs");
    report.add("latency p999 (median)", median(p999s), "µs");
    report.add("server CPU per message (median)", median(cpus), "µs");
    report.add("load generator CPU per message (median)", median(own), "µs");
    report.add(
        "server RSS",
        report.server_after.rss() as f64 / 1048576.0,
        "MiB",
    );
    report.add("server threads", report.server_after.threads() as f64, "");
    report.add("refused sends", p.refused as f64, "");
    if let Some(svg) = &c.svg {
        chart(
            svg,
            &format!(
                "pairs: {} pairs, window {}, {} B",
                a.pairs, a.window, a.body
            ),
            &all,
            &timeline(&p),
        )?;
    }
    finish(&report, c)
}

// -------------------------------------------------------------------------- offline

#[derive(Args, Clone, Debug)]
pub struct OfflineArgs {
    #[command(flatten)]
    pub common: Common,
    /// Messages queued in all.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Offline recipients (messages spread evenly over them).
    #[arg(long, default_value_t = 100)]
    pub users: u64,
    /// Connected senders.
    #[arg(long, default_value_t = 10)]
    pub senders: u64,
    /// Unacknowledged (not yet stored) messages per sender while queueing.
    #[arg(long, default_value_t = 200)]
    pub window: u64,
    /// Body bytes.
    #[arg(long, default_value_t = 100)]
    pub body: usize,
    /// Seconds allowed for the drain before it counts as failed.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
}

pub fn offline(a: OfflineArgs) -> R<()> {
    if a.messages == 0 || a.users == 0 || a.senders == 0 || a.window == 0 {
        return Err("--messages, --users, --senders and --window must be at least 1".into());
    }
    let c = &a.common;
    let t = Target::new(c)?;
    let keys = keys(c)?;
    let first = c.first_phone.unwrap_or(17_000_000_000);
    let users = phones(first, a.users)?;
    let senders = phones(first + a.users, a.senders)?;
    let mut fleet = t.fleet()?;
    let mut report = Report::new(
        "offline",
        json!({"messages": a.messages, "users": a.users, "senders": a.senders,
               "window": a.window, "body": a.body, "server": t.server.addr.to_string()}),
    );
    // Recipients register (if needed) and leave; senders stay.
    let up = bring_up(
        &mut fleet,
        c,
        &keys,
        &users,
        "recipients",
        true,
        &mut |_, _| {},
    )?;
    let mut keys = keys;
    for (p, k) in &up.new_keys {
        keys.0.insert(p.get(), *k);
    }
    let o = bring_up(
        &mut fleet,
        c,
        &keys,
        &senders,
        "senders",
        false,
        &mut |_, _| {},
    )?;
    let sids: Vec<usize> = o.ids.iter().map(|i| i.expect("all up")).collect();

    // Queue: each sender keeps `window` sends not yet acknowledged by the server.
    let body = vec![0x42u8; a.body];
    let (mut sent, mut stored) = (0u64, 0u64);
    let mut inflight = vec![0u64; sids.len()];
    let b = bar(a.messages, "queueing");
    let q0 = Instant::now();
    let mut evs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs_f64(a.timeout);
    while stored < a.messages {
        for (k, id) in sids.iter().enumerate() {
            while inflight[k] < a.window && sent < a.messages {
                let to = users[(sent % a.users) as usize];
                fleet.send(
                    *id,
                    Frame::Send {
                        to,
                        msg_id: sent,
                        body: &body,
                    },
                );
                sent += 1;
                inflight[k] += 1;
            }
        }
        fleet
            .turn(Duration::from_millis(10), &mut evs)
            .map_err(|e| format!("poll: {e}"))?;
        for ev in evs.drain(..) {
            match ev {
                Ev::ServerAck { id, .. } => {
                    if let Some(k) = sids.iter().position(|s| *s == id) {
                        inflight[k] -= 1;
                        stored += 1;
                    }
                }
                Ev::Refused { code, .. } => {
                    return Err(format!("a send was refused while queueing: {code:?}"))
                }
                Ev::Closed { why, .. } => return Err(format!("a sender was closed: {why}")),
                _ => {}
            }
        }
        b.set_position(stored);
        if Instant::now() > deadline {
            return Err(format!(
                "queueing: {stored} of {} stored in time",
                a.messages
            ));
        }
    }
    b.finish_and_clear();
    let queue_s = q0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));

    // Drain: the recipients connect at once; every delivery is acknowledged.
    report.server_before = t.sample()?;
    let me0 = self_cpu();
    let b = bar(a.messages, "draining");
    let d0 = Instant::now();
    let delivered = std::cell::Cell::new(0u64);
    let last = std::cell::Cell::new(d0);
    let handle = |fleet: &mut Fleet, ev: Ev| match ev {
        Ev::Deliver { id, seq, .. } => {
            fleet.send(id, Frame::Ack { seq });
            delivered.set(delivered.get() + 1);
            last.set(Instant::now());
        }
        Ev::Receipt { id, seq } => {
            fleet.send(id, Frame::Ack { seq });
        }
        _ => {}
    };
    let logins = login_all(
        &mut fleet,
        &Plan {
            phones: &users,
            keys: &keys,
            sources: &[],
            rate: 0.0,
            inflight: users.len().max(1),
            attempts: 1,
            deadline: Duration::from_secs_f64(a.timeout),
            close_when_ready: false,
        },
        &mut |f, ev| handle(f, ev),
        &mut |_, _| {},
    );
    check_logins("recipients", &logins)?;
    let deadline = d0 + Duration::from_secs_f64(a.timeout);
    loop {
        let d = delivered.get();
        b.set_position(d);
        if d >= a.messages || Instant::now() > deadline {
            break;
        }
        fleet
            .turn(Duration::from_millis(10), &mut evs)
            .map_err(|e| format!("poll: {e}"))?;
        for ev in evs.drain(..) {
            handle(&mut fleet, ev);
        }
    }
    b.finish_and_clear();
    let drain_s = (last.get() - d0).as_secs_f64();
    // Let the last acks reach the server before its cost is read.
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        fleet
            .turn(Duration::from_millis(10), &mut evs)
            .map_err(|e| format!("poll: {e}"))?;
        for ev in evs.drain(..) {
            handle(&mut fleet, ev);
        }
    }
    report.server_after = t.sample()?;
    let delivered = delivered.get();
    let n = delivered.max(1) as f64;
    report.add("queued", a.messages as f64, "msgs");
    report.add("queue rate", a.messages as f64 / queue_s, "msgs/s");
    report.add("pending reported at login", logins.pending as f64, "msgs");
    report.add("delivered", delivered as f64, "msgs");
    report.add("drain time", drain_s, "s");
    report.add("drain rate", delivered as f64 / drain_s.max(1e-9), "msgs/s");
    report.add(
        "server CPU per drained message",
        (report.server_after.cpu() - report.server_before.cpu()) * 1e6 / n,
        "µs",
    );
    report.add(
        "load generator CPU per drained message",
        (self_cpu() - me0) * 1e6 / n,
        "µs",
    );
    if delivered < a.messages {
        report.errors.push(format!(
            "only {delivered} of {} messages delivered within {} s",
            a.messages, a.timeout
        ));
    }
    finish(&report, c)
}

// ---------------------------------------------------------------------------- storm

#[derive(Args, Clone, Debug)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: Common,
    /// Clients that drop and reconnect at once.
    #[arg(long, default_value_t = 10_000)]
    pub clients: u64,
    /// Pairs running through the storm.
    #[arg(long, default_value_t = 10)]
    pub pairs: u64,
    #[arg(long, default_value_t = 1)]
    pub window: u32,
    /// Seconds of pairs before the storm (the baseline).
    #[arg(long, default_value_t = 3.0)]
    pub before: f64,
    /// Rate at which the clients first come up (per second; 0: unlimited).
    #[arg(long, default_value_t = 5000.0)]
    pub ramp: f64,
    /// Storm clients per child process.
    #[arg(long, default_value_t = 15_000)]
    pub per_child: u64,
}

pub fn storm(a: StormArgs) -> R<()> {
    if a.clients == 0 || a.pairs == 0 || a.window == 0 || a.per_child == 0 {
        return Err("--clients, --pairs, --window and --per-child must be at least 1".into());
    }
    let c = &a.common;
    let t = Target::new(c)?;
    let keys = keys(c)?;
    let first = c.first_phone.unwrap_or(18_000_000_000);
    let pair_phones = phones(first, 2 * a.pairs)?;
    let mut fleet = t.fleet()?;
    let mut report = Report::new(
        "storm",
        json!({"clients": a.clients, "pairs": a.pairs, "window": a.window,
               "before_s": a.before, "server": t.server.addr.to_string(),
               "server_processes": t.server.pids.len()}),
    );
    let o = bring_up(
        &mut fleet,
        c,
        &keys,
        &pair_phones,
        "pairs",
        false,
        &mut |_, _| {},
    )?;
    let ids: Vec<usize> = o.ids.iter().map(|i| i.expect("all up")).collect();
    // The storm's clients live in child processes: their handshakes must not delay
    // the pairs' own processing in this one (the pairs measure the server).
    let nchild = a.clients.div_ceil(a.per_child);
    let clients_first = first + 2 * a.pairs;
    let specs = |register_only: bool| {
        child_specs(
            &t,
            c,
            clients_first,
            a.clients,
            nchild,
            a.ramp,
            true,
            register_only,
        )
    };
    if c.keys.is_none() {
        return Err("storm needs --keys FILE (its child processes share the saved keys)".into());
    }
    let missing = phones(clients_first, a.clients)?
        .iter()
        .filter(|p| keys.get(**p).is_none())
        .count() as u64;
    if missing > 0 {
        let ch = spawn_children(specs(true))?;
        let g = gather_while(&ch, c, missing, "registering", &mut || Ok(()))?;
        if g.failed > 0 {
            return Err(format!(
                "registration: {} failed: {}",
                g.failed,
                g.errors.join("; ")
            ));
        }
    }
    let ch = spawn_children(specs(false))?;
    let g = gather_while(&ch, c, a.clients, "clients up", &mut || Ok(()))?;
    if g.failed > 0 {
        return Err(format!(
            "{} clients did not log in: {}",
            g.failed,
            g.errors.join("; ")
        ));
    }
    let mut p = Pairs::new(&ids, &pair_phones, a.window, 100);
    p.start(&mut fleet);
    let sp = spinner("baseline".into());
    run_pairs_for(
        &mut fleet,
        &mut p,
        Duration::from_millis(500),
        &mut report.errors,
    )?;
    p.measure();
    run_pairs_for(
        &mut fleet,
        &mut p,
        Duration::from_secs_f64(a.before),
        &mut report.errors,
    )?;
    let before = p.hist.clone();
    sp.finish_and_clear();

    // The storm: every client drops at once (a reset, as when a network goes), then all
    // reconnect with full handshakes; the pairs keep running here meanwhile.
    report.server_before = t.sample()?;
    let storm_at = Instant::now();
    ch.tell("storm")?;
    p.measure();
    let mut errors = Vec::new();
    let back = gather_while(&ch, c, a.clients, "reconnecting", &mut || {
        run_pairs_for(&mut fleet, &mut p, Duration::from_millis(20), &mut errors)
    })?;
    let all_back = storm_at.elapsed();
    p.measuring = false;
    report.server_after = t.sample()?;
    let during = p.hist.clone();
    report.errors.extend(errors);
    if back.failed > 0 {
        report.errors.push(format!(
            "{} clients did not come back: {}",
            back.failed,
            back.errors.join("; ")
        ));
    }
    report.add("clients", a.clients as f64, "");
    report.add("all back after", all_back.as_secs_f64(), "s");
    report.quantiles("reconnect handshake", &back.handshake, &[0.5]);
    report.quantiles("reconnect login", &back.login, &[0.99]);
    report.quantiles("pairs before", &before, &[0.5, 0.99]);
    report.quantiles("pairs during", &during, &[0.5, 0.99, 0.999]);
    report.add("pairs messages during", during.len() as f64, "msgs");
    report.add(
        "server CPU per reconnect",
        (report.server_after.cpu() - report.server_before.cpu()) * 1e6 / a.clients as f64,
        "µs",
    );
    if let Some(svg) = &c.svg {
        chart(
            svg,
            &format!(
                "storm: {} clients reconnect; pairs' latency during it",
                a.clients
            ),
            &during,
            &timeline(&p),
        )?;
    }
    drop(ch);
    finish(&report, c)
}

// -------------------------------------------------------------------------- connect

#[derive(Args, Clone, Debug)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: Common,
    /// Clients.
    #[arg(long, default_value_t = 10_000)]
    pub clients: u64,
    /// Seconds to hold them idle once all are up (the memory is read at the end).
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
    /// New connections per second, over all child processes (0: unlimited).
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
    /// Clients per child process (each process can hold about 19,900 descriptors here).
    #[arg(long, default_value_t = 15_000)]
    pub per_child: u64,
    /// Source addresses: child k connects from 127.0.0.(2+k) (loopback only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub spread_sources: bool,
}

/// What a child of `connect` is asked to do.
#[derive(Serialize, Deserialize)]
struct ChildSpec {
    addr: SocketAddr,
    fingerprint: String,
    sms_logs: Vec<PathBuf>,
    full_handshakes: bool,
    keys: Option<PathBuf>,
    first_phone: u64,
    count: u64,
    source: Option<IpAddr>,
    rate: f64,
    inflight: usize,
    /// Register the phones without keys and leave, instead of holding.
    register_only: bool,
}

/// `clients` phones from `first`, split evenly over `nchild` children; child k connects
/// from 127.0.0.(2+k) when `spread` and the server is on loopback; `rate` is shared.
#[allow(clippy::too_many_arguments)] // one call each from connect and storm
fn child_specs(
    t: &Target,
    c: &Common,
    first: u64,
    clients: u64,
    nchild: u64,
    rate: f64,
    spread: bool,
    register_only: bool,
) -> Vec<ChildSpec> {
    let per_child = clients.div_ceil(nchild);
    (0..nchild)
        .filter(|k| k * per_child < clients)
        .map(|k| ChildSpec {
            addr: t.server.addr,
            fingerprint: t.server.fingerprint.clone(),
            sms_logs: t.server.sms_logs.clone(),
            full_handshakes: c.full_handshakes,
            keys: c.keys.clone(),
            first_phone: first + k * per_child,
            count: per_child.min(clients - k * per_child),
            source: (spread && t.server.addr.ip().is_loopback())
                .then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (k % 250) as u8))),
            rate: if rate > 0.0 {
                rate / nchild as f64
            } else {
                0.0
            },
            inflight: c.inflight,
            register_only,
        })
        .collect()
}

/// A child's lines on stdout.
#[derive(Serialize, Deserialize)]
enum ChildMsg {
    Progress {
        ready: u64,
        failed: u64,
    },
    Keys(Vec<(u64, String)>),
    Done {
        ready: u64,
        failed: u64,
        errors: Vec<String>,
        handshake: String,
        login: String,
    },
}

fn hist_hex(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    let _ = V2Serializer::new().serialize(h, &mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn hist_from_hex(s: &str) -> Option<Histogram<u64>> {
    let bytes: Option<Vec<u8>> = (0..s.len() / 2)
        .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    Deserializer::new().deserialize(&mut &bytes?[..]).ok()
}

/// Reports a bring-up to the parent.
fn say_done(o: &Outcome) {
    say(&ChildMsg::Done {
        ready: o.ids.len() as u64 - o.failed,
        failed: o.failed,
        errors: o.errors.clone(),
        handshake: hist_hex(&o.handshake),
        login: hist_hex(&o.login),
    });
}

fn say(m: &ChildMsg) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::to_string(m).expect("serializable"));
    let _ = out.flush();
}

/// One child of `connect`: brings its phones up, reports, holds them until its stdin
/// closes (the parent is done or gone).
pub fn child(spec: &str) -> R<()> {
    let s: ChildSpec = serde_json::from_str(spec).map_err(|e| format!("child spec: {e}"))?;
    let keys = match &s.keys {
        Some(p) => Keys::load(p)?,
        None => Keys::default(),
    };
    let all = phones(s.first_phone, s.count)?;
    let phones: Vec<Phone> = if s.register_only {
        all.into_iter().filter(|p| keys.get(*p).is_none()).collect()
    } else {
        all
    };
    let mut fleet = Fleet::new(
        s.addr,
        tls(&s.fingerprint, s.full_handshakes)?,
        PinBook::new(s.sms_logs.clone()),
    )
    .map_err(|e| format!("poll: {e}"))?;
    let sources: Vec<IpAddr> = s.source.into_iter().collect();
    let mut last = Instant::now();
    let o = login_all(
        &mut fleet,
        &Plan {
            phones: &phones,
            keys: &keys,
            sources: &sources,
            rate: s.rate,
            inflight: s.inflight,
            attempts: 3,
            deadline: Duration::from_secs(300 + s.count / 100),
            close_when_ready: s.register_only,
        },
        &mut |_, _| {},
        &mut |ready, failed| {
            if last.elapsed() > Duration::from_millis(200) {
                last = Instant::now();
                say(&ChildMsg::Progress { ready, failed });
            }
        },
    );
    if !o.new_keys.is_empty() {
        for chunk in o.new_keys.chunks(1000) {
            say(&ChildMsg::Keys(
                chunk
                    .iter()
                    .map(|(p, k)| (p.get(), login::key_hex(k)))
                    .collect(),
            ));
        }
    }
    say_done(&o);
    if s.register_only {
        return Ok(());
    }
    // Hold: answer pings until the parent closes our stdin; on `storm`, drop every
    // connection at once (resets) and bring them all back, reporting again.
    let (cmd_tx, cmd_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if cmd_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut ids: Vec<usize> = o.ids.iter().flatten().copied().collect();
    let mut evs = Vec::new();
    loop {
        fleet
            .turn(Duration::from_millis(50), &mut evs)
            .map_err(|e| format!("poll: {e}"))?;
        evs.clear();
        match cmd_rx.try_recv() {
            Ok(cmd) if cmd == "storm" => {
                for id in ids.drain(..) {
                    fleet.close(id, false);
                }
                let o = login_all(
                    &mut fleet,
                    &Plan {
                        phones: &phones,
                        keys: &keys,
                        sources: &sources,
                        rate: 0.0,
                        inflight: phones.len().max(1),
                        attempts: 3,
                        deadline: Duration::from_secs(300 + s.count / 100),
                        close_when_ready: false,
                    },
                    &mut |_, _| {},
                    &mut |_, _| {},
                );
                ids = o.ids.iter().flatten().copied().collect();
                say_done(&o);
            }
            Ok(_) | Err(std::sync::mpsc::TryRecvError::Empty) => {}
            Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
        }
    }
    // Resets, not FINs: no TIME_WAIT ports left behind for the next run.
    for id in ids {
        fleet.close(id, false);
    }
    Ok(())
}

struct Children {
    procs: Vec<std::process::Child>,
    rx: std::sync::mpsc::Receiver<(usize, ChildMsg)>,
}

fn spawn_children(specs: Vec<ChildSpec>) -> R<Children> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut procs = Vec::new();
    for (k, s) in specs.into_iter().enumerate() {
        let mut p = Command::new(&exe);
        crate::server::die_with_parent(&mut p);
        let mut p = p
            .arg("child")
            .arg(serde_json::to_string(&s).expect("serializable"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("{}: {e}", exe.display()))?;
        let out = p.stdout.take().expect("piped");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(m) = serde_json::from_str::<ChildMsg>(&l) {
                    if tx.send((k, m)).is_err() {
                        break;
                    }
                }
            }
        });
        procs.push(p);
    }
    Ok(Children { procs, rx })
}

impl Children {
    /// Sends a command line to every child.
    fn tell(&self, cmd: &str) -> R<()> {
        for p in &self.procs {
            let mut stdin = p.stdin.as_ref().ok_or("a child has no stdin")?;
            writeln!(stdin, "{cmd}").map_err(|e| format!("child: {e}"))?;
        }
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for p in &mut self.procs {
            drop(p.stdin.take());
        }
        for p in &mut self.procs {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && !matches!(p.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

struct Gathered {
    ready: u64,
    failed: u64,
    errors: Vec<String>,
    handshake: Histogram<u64>,
    login: Histogram<u64>,
}

impl Gathered {
    fn absorb(&mut self, o: Gathered) {
        self.ready += o.ready;
        self.failed += o.failed;
        self.errors.extend(o.errors);
        let _ = self.handshake.add(&o.handshake);
        let _ = self.login.add(&o.login);
    }
}

/// Reads the children's lines until every one is done; saves keys as they come.
fn gather(ch: &Children, c: &Common, total: u64, what: &str) -> R<Gathered> {
    gather_while(ch, c, total, what, &mut || {
        std::thread::sleep(Duration::from_millis(5));
        Ok(())
    })
}

/// [`gather`], running `meanwhile` between looks at the children's lines.
fn gather_while(
    ch: &Children,
    c: &Common,
    total: u64,
    what: &str,
    meanwhile: &mut dyn FnMut() -> R<()>,
) -> R<Gathered> {
    let b = bar(total, what);
    let started = Instant::now();
    let mut progress = vec![0u64; ch.procs.len()];
    let mut done = 0;
    let mut g = Gathered {
        ready: 0,
        failed: 0,
        errors: vec![],
        handshake: hist(),
        login: hist(),
    };
    while done < ch.procs.len() {
        let (k, m) = match ch.rx.try_recv() {
            Ok(x) => x,
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                if started.elapsed() > Duration::from_secs(900) {
                    return Err(format!(
                        "{what}: the child processes did not finish in time"
                    ));
                }
                meanwhile()?;
                continue;
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                return Err(format!("{what}: a child process stopped answering"))
            }
        };
        match m {
            ChildMsg::Progress { ready, failed } => {
                progress[k] = ready + failed;
            }
            ChildMsg::Keys(keys) => {
                let new: Vec<(Phone, Key)> = keys
                    .iter()
                    .filter_map(|(p, k)| Some((Phone::new(*p)?, login::parse_key(k)?)))
                    .collect();
                save_keys(c, &new)?;
            }
            ChildMsg::Done {
                ready,
                failed,
                errors,
                handshake,
                login,
            } => {
                done += 1;
                progress[k] = ready + failed;
                g.ready += ready;
                g.failed += failed;
                g.errors.extend(errors.into_iter().take(3));
                if let Some(h) = hist_from_hex(&handshake) {
                    let _ = g.handshake.add(&h);
                }
                if let Some(h) = hist_from_hex(&login) {
                    let _ = g.login.add(&h);
                }
            }
        }
        b.set_position(progress.iter().sum());
    }
    b.finish_and_clear();
    Ok(g)
}

pub fn connect(a: ConnectArgs) -> R<()> {
    if a.clients == 0 || a.per_child == 0 {
        return Err("--clients and --per-child must be at least 1".into());
    }
    if a.per_child > 19_000 {
        return Err(format!(
            "--per-child {}: a process here holds at most ~19,900 descriptors; use more children",
            a.per_child
        ));
    }
    let c = &a.common;
    if c.keys.is_none() {
        return Err(
            "connect needs --keys FILE: phones register once and later runs log in with the saved keys"
                .into(),
        );
    }
    let t = Target::new(c)?;
    let first = c.first_phone.unwrap_or(19_000_000_000);
    // At least two children: they come up in two waves, so the memory of the second
    // half is measured apart from one-time growth (tables, allocator arenas).
    let nchild = a.clients.div_ceil(a.per_child).max(a.clients.min(2));
    let specs = |register_only: bool| {
        child_specs(
            &t,
            c,
            first,
            a.clients,
            nchild,
            a.rate,
            a.spread_sources,
            register_only,
        )
    };
    // Registration (only phones without a saved key), not measured.
    let keys = keys(c)?;
    let missing = phones(first, a.clients)?
        .iter()
        .filter(|p| keys.get(**p).is_none())
        .count() as u64;
    drop(keys);
    if missing > 0 {
        let ch = spawn_children(specs(true))?;
        let g = gather(&ch, c, missing, "registering")?;
        if g.failed > 0 {
            return Err(format!(
                "registration: {} failed: {}",
                g.failed,
                g.errors.join("; ")
            ));
        }
        drop(ch);
        // The registration connections' memory goes back to the server's allocator and
        // then, over its decay time, to the kernel: wait for the RSS to settle so the
        // baseline does not hide the memory the measured connections take.
        settle(&t)?;
    }
    let mut report = Report::new(
        "connect",
        json!({"clients": a.clients, "hold_s": a.hold, "rate": a.rate, "children": nchild,
               "full_handshakes": c.full_handshakes, "server": t.server.addr.to_string(),
               "server_processes": t.server.pids.len()}),
    );
    report.server_before = t.sample()?;
    let mut wave2 = specs(false);
    let wave1: Vec<ChildSpec> = wave2.drain(..wave2.len().div_ceil(2)).collect();
    let n1: u64 = wave1.iter().map(|s| s.count).sum();
    let started = Instant::now();
    let ch1 = spawn_children(wave1)?;
    let mut g = gather(&ch1, c, n1, "connecting (1/2)")?;
    let up1 = started.elapsed().as_secs_f64();
    let at_up1 = t.sample()?;
    settle(&t)?;
    let half = t.sample()?;
    let started2 = Instant::now();
    let ch2 = spawn_children(wave2)?;
    let g2 = gather(&ch2, c, a.clients - n1, "connecting (2/2)")?;
    let up_s = up1 + started2.elapsed().as_secs_f64();
    let at_up = t.sample()?;
    let ready1 = g.ready;
    g.absorb(g2);
    let sp = spinner(format!("holding {} clients", g.ready));
    std::thread::sleep(Duration::from_secs_f64(a.hold.max(1.0)));
    sp.finish_and_clear();
    // The handshakes' transient memory goes back to the allocator, then over its decay
    // time to the kernel: read the memory of idle connections once that is done.
    settle(&t)?;
    report.server_after = t.sample()?;
    drop((ch1, ch2));
    let n = g.ready.max(1) as f64;
    let (b, e) = (report.server_before.clone(), report.server_after.clone());
    let rss_per = (e.rss() as f64 - b.rss() as f64) / n;
    let anon_per = (e.rss_anon() as f64 - b.rss_anon() as f64) / n;
    let anon_marginal =
        (e.rss_anon() as f64 - half.rss_anon() as f64) / (g.ready - ready1).max(1) as f64;
    // CPU while the connections came up (not the pause between the waves).
    let cpu_per = ((at_up1.cpu() - b.cpu()) + (at_up.cpu() - half.cpu())) * 1e6 / n;
    let kern = (e.tcp_buffer_bytes as f64 - b.tcp_buffer_bytes as f64) / n;
    let slab = match (b.tcp_slab_bytes, e.tcp_slab_bytes) {
        (Some(x), Some(y)) => Some((y as f64 - x as f64) / n),
        _ => None,
    };
    report.add("clients logged in and held", g.ready as f64, "");
    report.add("failed", g.failed as f64, "");
    report.add("connections per second", g.ready as f64 / up_s, "conn/s");
    report.quantiles("handshake", &g.handshake, &[0.5, 0.99]);
    report.quantiles("login", &g.login, &[0.5, 0.99]);
    report.add("server CPU per connection set-up", cpu_per, "µs");
    report.add(
        "server memory per connection (anonymous RSS)",
        anon_per,
        "B",
    );
    report.add(
        "server memory per connection, second half",
        anon_marginal,
        "B",
    );
    report.add("server RSS per connection (incl. mapped log)", rss_per, "B");
    report.add("server RSS", e.rss() as f64 / 1048576.0, "MiB");
    report.add("server threads", e.threads() as f64, "");
    report.add("kernel TCP buffers per connection", kern, "B");
    if let Some(s) = slab {
        report.add("kernel TCP slab per connection", s, "B");
    }
    if g.failed > 0 {
        report.errors.push(format!(
            "{} clients did not log in: {}",
            g.failed,
            g.errors.join("; ")
        ));
    }
    if let Some(svg) = &c.svg {
        chart(
            svg,
            &format!("connect: {} clients, handshake latency", a.clients),
            &g.handshake,
            &[],
        )?;
    }
    finish(&report, c)
}
