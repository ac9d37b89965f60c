//! The activity reporter and the queue alerts.
//!
//! One thread, waking every second: it reads the appliance's own figures (what workers
//! and shards publish), the host's (`/proc/stat`, `/proc/vmstat`, `/proc/net/snmp`,
//! `/proc/meminfo`) and the process's (RSS, threads' CPU and run-queue wait from
//! `/proc/self/task/*/schedstat`), keeps each as decaying averages over 1 s, 10 s and
//! 100 s, checks the alert rules, and writes one line to `data_dir/activity.log` every
//! `interval_s` (60 s), every second while any alert fires. The log rolls over to
//! `activity.log.1` at `file_bytes_max`.
//!
//! Alerts: a rule fires when its metric stays above its threshold for `for_s`
//! seconds, and resolves when it falls back to or under it; both are logged and,
//! with `webhook` set, POSTed (JSON) from a separate thread, so a slow or dead webhook
//! never delays the reporter.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::admin::Sources;
use crate::config::{AlertRule, AlertsConfig, ReporterConfig};
use crate::metrics::{Activity, ActivityCell};

/// Rules always in force beside the configured ones (a configured rule of the same name
/// replaces one): `disk_full`, while a shard's disk is under its reserve, and
/// `flush_failed`, once a shard's log could not be flushed.
fn with_builtin_rules(mut rules: Vec<AlertRule>) -> Vec<AlertRule> {
    for (name, metric) in [
        ("disk_full", "switchboard_storage_disk_full"),
        ("flush_failed", "switchboard_storage_flush_failed"),
    ] {
        if !rules.iter().any(|r| r.name == name) {
            rules.push(AlertRule {
                name: name.into(),
                metric: metric.into(),
                above: 0.0,
                for_s: 0,
            });
        }
    }
    rules
}

/// Host and process counters read from `/proc` (cumulative ones become rates).
/// `/proc/net/snmp` and `/proc/net/netstat` keep a protocol's figures as two lines
/// starting with `prefix`: the names, then the values.
fn paired<'a>(text: &'a str, prefix: &str) -> Vec<(&'a str, &'a str)> {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    match lines[..] {
        [names, values] => names
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
            .collect(),
        _ => vec![],
    }
}

/// The host's and the process's figures: (name, value, is a counter).
fn host_sample() -> Vec<(Cow<'static, str>, f64, bool)> {
    let mut out: Vec<(Cow<'static, str>, f64, bool)> = vec![];
    let mut push = |name: &'static str, v: f64, counter: bool| out.push((name.into(), v, counter));
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let stat = read("/proc/stat");
    let ticks = |idx: usize| -> f64 {
        stat.lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(idx))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    // user+nice, system, idle, iowait, irq+softirq, steal (jiffies per second).
    push("host_cpu_user", ticks(1) + ticks(2), true);
    push("host_cpu_system", ticks(3), true);
    push("host_cpu_idle", ticks(4), true);
    push("host_cpu_iowait", ticks(5), true);
    push("host_cpu_irq", ticks(6) + ticks(7), true);
    push("host_cpu_steal", ticks(8), true);
    let field = |text: &str, key: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    let (vm, mem, status) = (
        read("/proc/vmstat"),
        read("/proc/meminfo"),
        read("/proc/self/status"),
    );
    for (text, name, key, counter) in [
        (&stat, "host_context_switches", "ctxt", true),
        (&stat, "host_interrupts", "intr", true),
        (&stat, "host_softirqs", "softirq", true),
        (&stat, "host_procs_running", "procs_running", false),
        (&stat, "host_procs_blocked", "procs_blocked", false),
        (&vm, "host_page_faults", "pgfault", true),
        (&vm, "host_major_page_faults", "pgmajfault", true),
        (&vm, "host_thp_faults", "thp_fault_alloc", true),
        (&mem, "host_anon_huge_pages_kb", "AnonHugePages:", false),
        (&mem, "host_huge_pages_total", "HugePages_Total:", false),
        (&mem, "host_mem_available_kb", "MemAvailable:", false),
        // The process: resident memory.
        (&status, "process_rss_kb", "VmRSS:", false),
    ] {
        if let Some(v) = field(text, key) {
            push(name, v, counter);
        }
    }
    // TCP (`netstat -s`): connections, and the accept queue's overflows and drops.
    let (snmp, netstat) = (read("/proc/net/snmp"), read("/proc/net/netstat"));
    let tcp = paired(&snmp, "Tcp:").into_iter();
    for (n, v) in tcp.chain(paired(&netstat, "TcpExt:")) {
        let (name, counter) = match n {
            "CurrEstab" => ("host_tcp_established", false),
            "PassiveOpens" => ("host_tcp_passive_opens", true),
            "RetransSegs" => ("host_tcp_retransmits", true),
            "InErrs" => ("host_tcp_in_errors", true),
            "OutRsts" => ("host_tcp_resets_sent", true),
            "ListenOverflows" => ("host_tcp_listen_overflows", true),
            "ListenDrops" => ("host_tcp_listen_drops", true),
            "SyncookiesSent" => ("host_tcp_syncookies_sent", true),
            _ => continue,
        };
        if let Ok(v) = v.parse() {
            push(name, v, counter);
        }
    }
    // The process's threads: CPU and run-queue wait (ns, from schedstat), in all and
    // per thread name (`gateway-0`, `shard-1`, `link-router-2`, ...; threads of one
    // name added up).
    let (mut cpu_ns, mut wait_ns, mut threads) = (0.0, 0.0, 0.0);
    let mut by_name: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let s = read(&t.path().join("schedstat").to_string_lossy());
            let mut it = s
                .split_whitespace()
                .map(|v| v.parse::<f64>().unwrap_or(0.0));
            let (cpu, wait) = (it.next().unwrap_or(0.0), it.next().unwrap_or(0.0));
            let comm = read(&t.path().join("comm").to_string_lossy());
            let e = by_name.entry(comm.trim().to_string()).or_default();
            (e.0, e.1) = (e.0 + cpu, e.1 + wait);
            cpu_ns += cpu;
            wait_ns += wait;
            threads += 1.0;
        }
    }
    push("process_threads", threads, false);
    push("process_cpu_ns", cpu_ns, true);
    push("process_runqueue_wait_ns", wait_ns, true);
    for (name, (cpu, wait)) in by_name {
        out.push((format!("thread_cpu_ns:{name}").into(), cpu, true));
        out.push((format!("thread_runqueue_wait_ns:{name}").into(), wait, true));
    }
    out
}

/// One firing or resolving, for the log and the webhook.
fn alert_json(rule: &AlertRule, state: &str, value: f64) -> String {
    format!(
        "{{\"alert\":\"{}\",\"state\":\"{state}\",\"metric\":\"{}\",\"value\":{value},\"above\":{},\"for_s\":{}}}",
        rule.name.replace('"', "'"),
        rule.metric,
        rule.above,
        rule.for_s
    )
}

/// A running reporter; stops when dropped.
pub type Reporter = crate::task::Task;

/// Starts the reporter thread; `sources` are the admin API's own.
pub fn start(
    config: &ReporterConfig,
    alerts: &AlertsConfig,
    data_dir: PathBuf,
    sources: Arc<Sources>,
    activity: ActivityCell,
) -> Result<Reporter, crate::error::Error> {
    config
        .validate(alerts)
        .map_err(crate::error::Error::Config)?;
    let (config, alerts) = (config.clone(), alerts.clone());
    let webhook = alerts.webhook.clone().map(|url| {
        let (tx, rx) = mpsc::sync_channel::<String>(64);
        std::thread::Builder::new()
            .name("alert-webhook".into())
            .spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(5)))
                    .http_status_as_error(false)
                    .build()
                    .into();
                for body in rx {
                    match agent
                        .post(&url)
                        .header("content-type", "application/json")
                        .send(&body)
                    {
                        Ok(r) if r.status().is_success() => {}
                        Ok(r) => tracing::warn!("alert webhook {url}: HTTP {}", r.status()),
                        Err(e) => tracing::warn!("alert webhook {url}: {e}"),
                    }
                }
            })
            .map(|_| tx)
    });
    let webhook = (webhook.transpose()).map_err(crate::error::Error::io("thread alert-webhook"))?;
    let path = data_dir.join("activity.log");
    crate::task::Task::spawn("reporter", move |s| {
        let mut prev: BTreeMap<Cow<'static, str>, f64> = BTreeMap::new();
        let mut above_since: BTreeMap<String, Instant> = BTreeMap::new();
        let mut firing: BTreeMap<String, u64> = BTreeMap::new();
        let mut last_line = Instant::now() - Duration::from_secs(3600);
        let started = Instant::now();
        while !s.load(Ordering::Acquire) {
            let now = Instant::now();
            // The appliance's figures: gauges as values, counters as rates.
            let metrics = crate::admin::metric_values(&sources);
            let host = host_sample();
            let mut act = activity.lock().unwrap_or_else(|e| e.into_inner());
            // A counter's first sample only sets its base: rates start with the
            // second.
            let all = (metrics.iter()).map(|&(n, v, c)| (Cow::Borrowed(n), v, c));
            for (name, value, counter) in all.chain(host) {
                let v = if counter {
                    match prev.insert(name.clone(), value) {
                        Some(p) => (value - p).max(0.0),
                        None => continue,
                    }
                } else {
                    value
                };
                act.figures.entry(name.to_string()).or_default().add(v);
            }
            // Alerts on the raw value of their metric, by the rules in force (a
            // reload replaces them; a removed rule's alert ends with it).
            let rules = with_builtin_rules(match &sources.control {
                Some(c) => c.alerts().rules,
                None => alerts.rules.clone(),
            });
            firing.retain(|name, _| {
                let kept = rules.iter().any(|r| &r.name == name);
                if !kept {
                    tracing::info!("alert {name}: its rule was removed by a reload");
                }
                kept
            });
            above_since.retain(|name, _| rules.iter().any(|r| &r.name == name));
            for rule in &rules {
                let value = metrics
                    .iter()
                    .find(|(n, _, _)| *n == rule.metric)
                    .map_or(0.0, |m| m.1);
                if value > rule.above {
                    let since = *above_since.entry(rule.name.clone()).or_insert(now);
                    if !firing.contains_key(&rule.name)
                        && now.duration_since(since) >= Duration::from_secs(rule.for_s)
                    {
                        firing.insert(rule.name.clone(), started.elapsed().as_secs());
                        let j = alert_json(rule, "firing", value);
                        tracing::info!("alert firing: {j}");
                        if let Some(tx) = &webhook {
                            let _ = tx.try_send(j);
                        }
                    }
                } else {
                    above_since.remove(&rule.name);
                    if firing.remove(&rule.name).is_some() {
                        let j = alert_json(rule, "resolved", value);
                        tracing::info!("alert resolved: {j}");
                        if let Some(tx) = &webhook {
                            let _ = tx.try_send(j);
                        }
                    }
                }
            }
            act.firing = firing.clone();
            // The activity log: every interval, every second while an alert fires.
            let every = if firing.is_empty() {
                Duration::from_secs(config.interval_s)
            } else {
                Duration::from_secs(1)
            };
            if now.duration_since(last_line) >= every {
                last_line = now;
                let line = activity_line(&act, unix_s());
                drop(act);
                write_rolling(&path, &line, config.file_bytes_max);
            } else {
                drop(act);
            }
            let next = now + Duration::from_secs(1);
            std::thread::park_timeout(next.saturating_duration_since(Instant::now()));
        }
    })
}

fn unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One activity-log line: time, firing alerts, then `name=last/10s/100s` per figure.
pub fn activity_line(act: &Activity, unix_s: u64) -> String {
    let mut line = format!("t={unix_s}");
    if !act.firing.is_empty() {
        let names: Vec<&str> = act.firing.keys().map(String::as_str).collect();
        line.push_str(&format!(" alerts={}", names.join(",")));
    }
    for (name, a) in &act.figures {
        line.push_str(&format!(" {name}={:.0}/{:.1}/{:.1}", a.last, a.s10, a.s100));
    }
    line.push('\n');
    line
}

fn write_rolling(path: &std::path::Path, line: &str, max: u64) {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    if size + line.len() as u64 > max {
        let _ = std::fs::rename(path, path.with_extension("log.1"));
    }
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(mut f) => {
            let _ = f.write_all(line.as_bytes());
        }
        Err(e) => tracing::warn!("{}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_sample_has_the_accept_queue_and_each_thread() {
        let (tx, rx) = mpsc::channel::<()>();
        let (up_tx, up) = mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("probe-thread".into())
            .spawn(move || {
                up_tx.send(()).unwrap(); // named by now
                rx.recv()
            })
            .unwrap();
        up.recv().unwrap();
        let names: Vec<String> = host_sample()
            .into_iter()
            .map(|f| f.0.into_owned())
            .collect();
        tx.send(()).unwrap();
        t.join().unwrap().unwrap();
        for n in [
            "thread_cpu_ns:probe-thread",
            "thread_runqueue_wait_ns:probe-thread",
            "host_tcp_listen_overflows",
            "host_tcp_established",
            "host_context_switches",
            "process_rss_kb",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        assert_eq!(
            paired("Tcp: A B\nTcp: 1 2\nUdp: C\nUdp: 3\n", "Tcp:"),
            [("A", "1"), ("B", "2")]
        );
    }

    #[test]
    fn the_activity_log_rolls_over() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("activity.log");
        for _ in 0..100 {
            write_rolling(&p, &format!("{}\n", "x".repeat(99)), 4096);
        }
        assert!(std::fs::metadata(&p).unwrap().len() <= 4096);
        assert!(p.with_extension("log.1").exists());
    }

    #[test]
    fn unknown_metrics_and_bad_webhooks_are_refused() {
        let rule = |metric: &str| AlertRule {
            name: "q".into(),
            metric: metric.into(),
            above: 1.0,
            for_s: 0,
        };
        let c = ReporterConfig::default();
        let ok = AlertsConfig {
            webhook: Some("http://127.0.0.1:9/hook".into()),
            rules: vec![rule("switchboard_gateway_link_blocked")],
        };
        c.validate(&ok).unwrap();
        let bad = AlertsConfig {
            rules: vec![rule("switchboard_no_such")],
            ..ok.clone()
        };
        assert!(c.validate(&bad).unwrap_err().contains("no metric named"));
        let bad = AlertsConfig {
            webhook: Some("ftp://x".into()),
            ..ok
        };
        assert!(c.validate(&bad).unwrap_err().contains("alerts.webhook"));
    }
}
