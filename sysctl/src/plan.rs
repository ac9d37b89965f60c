//! Comparing a host with a profile, and changing it: check, diff, apply (a plan first;
//! the previous values saved to a state file), rollback.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::host::{Host, HostError};
use crate::profile::{satisfies, Entry, Kind, Profile};

/// Where one entry stands on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// The host value does not meet the profile.
    Short,
    /// The running kernel has no such key: reported, not an error.
    Missing,
    /// A boot-time entry not in effect; it takes a reboot.
    PendingReboot,
    /// Reading it failed.
    Unreadable(String),
}

#[derive(Clone, Debug)]
pub struct Line<'p> {
    pub entry: &'p Entry,
    pub host: Option<String>,
    pub status: Status,
}

impl Line<'_> {
    pub fn describe(&self) -> String {
        let e = self.entry;
        let host = self.host.as_deref().unwrap_or("-");
        match &self.status {
            Status::Ok => format!("ok       {} = {host}", e.key),
            Status::Short => format!(
                "SHORT    {}: host {host}, profile {:?} {} — {}",
                e.key, e.cmp, e.value, e.reason
            ),
            Status::Missing => format!("missing  {}: not on this kernel (skipped)", e.key),
            Status::PendingReboot => format!(
                "reboot   {}: boot-time, wants {} (now {host}) — {}",
                e.key, e.value, e.reason
            ),
            Status::Unreadable(why) => format!("error    {}: {why}", e.key),
        }
    }

    /// Counts as a shortfall for `check` (missing keys do not).
    pub fn is_short(&self) -> bool {
        matches!(
            self.status,
            Status::Short | Status::PendingReboot | Status::Unreadable(_)
        )
    }
}

fn cmdline_value(cmdline: &str, key: &str) -> Option<String> {
    cmdline.split_whitespace().find_map(|w| {
        w.strip_prefix(key)
            .and_then(|r| r.strip_prefix('='))
            .map(str::to_string)
    })
}

/// Where every entry (optionally only keys starting with `only`) stands.
pub fn check<'p>(profile: &'p Profile, host: &dyn Host, only: Option<&str>) -> Vec<Line<'p>> {
    let mut lines = vec![];
    for e in profile
        .entries
        .iter()
        .filter(|e| only.is_none_or(|o| e.key.starts_with(o)))
    {
        let (value, status) = match e.kind {
            Kind::Sysctl | Kind::Loader => match host.read(&e.key) {
                Ok(None) => (None, Status::Missing),
                Ok(Some(v)) if satisfies(&v, &e.value, e.cmp) => (Some(v), Status::Ok),
                Ok(Some(v)) if e.kind == Kind::Loader => (Some(v), Status::PendingReboot),
                Ok(Some(v)) => (Some(v), Status::Short),
                Err(err) => (None, Status::Unreadable(err.to_string())),
            },
            Kind::Cmdline => match cmdline_value(&host.cmdline(), &e.key) {
                Some(v) if satisfies(&v, &e.value, e.cmp) => (Some(v), Status::Ok),
                v => (v, Status::PendingReboot),
            },
            Kind::Rlimit => match host.rlimit_hard(&e.key) {
                Some(v) if satisfies(&v.to_string(), &e.value, e.cmp) => {
                    (Some(v.to_string()), Status::Ok)
                }
                Some(v) => (Some(v.to_string()), Status::Short),
                None => (None, Status::Missing),
            },
        };
        lines.push(Line {
            entry: e,
            host: value,
            status,
        });
    }
    lines
}

/// What `apply` would write: runtime entries that fall short.
pub fn plan<'p>(lines: &[Line<'p>]) -> Vec<(&'p Entry, String)> {
    lines
        .iter()
        .filter(|l| l.status == Status::Short && l.entry.kind == Kind::Sysctl)
        .map(|l| (l.entry, l.host.clone().unwrap_or_default()))
        .collect()
}

/// The previous values of what `apply` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub profile: String,
    #[serde(default)]
    pub changed: Vec<Changed>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    pub key: String,
    pub previous: String,
    pub applied: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}: {1}")]
    State(String, String),
    #[error("a state file from an earlier apply exists ({0}): roll back first, or remove it")]
    StateExists(String),
    #[error("no state file at {0}: nothing to roll back")]
    NoState(String),
}

/// Outcome of `apply` / `rollback`: what was written and what failed (the rest goes on).
#[derive(Debug, Default)]
pub struct Outcome {
    pub written: Vec<(String, String)>,
    pub failed: Vec<HostError>,
}

/// Writes the plan; saves the previous values to `state` first (refuses when a state
/// file exists: one apply at a time, rolled back in order).
pub fn apply(
    profile: &Profile,
    host: &mut dyn Host,
    state: &Path,
    only: Option<&str>,
) -> Result<Outcome, ApplyError> {
    let s = state.display().to_string();
    if state.exists() {
        return Err(ApplyError::StateExists(s));
    }
    let lines = check(profile, host, only);
    let todo = plan(&lines);
    let record = State {
        profile: profile.name.clone(),
        changed: todo
            .iter()
            .map(|(e, prev)| Changed {
                key: e.key.clone(),
                previous: prev.clone(),
                applied: e.value.clone(),
            })
            .collect(),
    };
    if let Some(dir) = state.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ApplyError::State(s.clone(), e.to_string()))?;
    }
    let text = toml::to_string(&record).map_err(|e| ApplyError::State(s.clone(), e.to_string()))?;
    std::fs::write(state, text).map_err(|e| ApplyError::State(s.clone(), e.to_string()))?;
    let mut out = Outcome::default();
    let mut kept = record.clone();
    kept.changed.clear();
    for c in &record.changed {
        match host.write(&c.key, &c.applied) {
            Ok(()) => {
                out.written.push((c.key.clone(), c.applied.clone()));
                kept.changed.push(c.clone());
            }
            Err(e) => out.failed.push(e),
        }
    }
    // Only what was really changed is rolled back.
    let text = toml::to_string(&kept).map_err(|e| ApplyError::State(s.clone(), e.to_string()))?;
    std::fs::write(state, text).map_err(|e| ApplyError::State(s, e.to_string()))?;
    Ok(out)
}

/// Restores the values saved by `apply`, newest first; removes the state file when
/// every one was restored.
pub fn rollback(host: &mut dyn Host, state: &Path) -> Result<Outcome, ApplyError> {
    let s = state.display().to_string();
    let text = std::fs::read_to_string(state).map_err(|_| ApplyError::NoState(s.clone()))?;
    let record: State =
        toml::from_str(&text).map_err(|e| ApplyError::State(s.clone(), e.to_string()))?;
    let mut out = Outcome::default();
    for c in record.changed.iter().rev() {
        match host.write(&c.key, &c.previous) {
            Ok(()) => out.written.push((c.key.clone(), c.previous.clone())),
            Err(e) => out.failed.push(e),
        }
    }
    if out.failed.is_empty() {
        std::fs::remove_file(state).map_err(|e| ApplyError::State(s, e.to_string()))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MemHost;

    fn profile() -> Profile {
        Profile::parse(
            r#"name = "t"
os = "linux"
description = ""
[[entry]]
key = "net.core.somaxconn"
value = "4096"
reason = "r"
source = "s"
[[entry]]
key = "net.ipv4.tcp_rmem"
value = "4096 4096 65536"
cmp = "max"
reason = "r"
source = "s"
[[entry]]
key = "net.bogus.key"
value = "1"
reason = "r"
source = "s"
[[entry]]
key = "thash_entries"
kind = "cmdline"
value = "2097152"
reason = "r"
source = "s"
[[entry]]
key = "nofile"
kind = "rlimit"
value = "65536"
reason = "r"
source = "s"
"#,
            "t.toml",
        )
        .unwrap()
    }

    fn host() -> MemHost {
        let mut h = MemHost {
            cmdline: "quiet thash_entries=4096".into(),
            nofile_hard: 20_000,
            ..MemHost::default()
        };
        h.values.insert("net.core.somaxconn".into(), "128".into());
        h.values
            .insert("net.ipv4.tcp_rmem".into(), "4096 131072 6291456".into());
        h
    }

    #[test]
    fn check_reports_each_kind_and_a_missing_key_is_not_fatal() {
        let p = profile();
        let h = host();
        let lines = check(&p, &h, None);
        let st: Vec<_> = lines
            .iter()
            .map(|l| (l.entry.key.as_str(), l.status.clone()))
            .collect();
        assert_eq!(
            st,
            vec![
                ("net.core.somaxconn", Status::Short),
                ("net.ipv4.tcp_rmem", Status::Short),
                ("net.bogus.key", Status::Missing),
                ("thash_entries", Status::PendingReboot),
                ("nofile", Status::Short),
            ]
        );
        assert!(lines[2].describe().contains("not on this kernel"));
        assert_eq!(plan(&lines).len(), 2, "only runtime sysctls are applied");
    }

    #[test]
    fn apply_then_rollback_restores_and_refuses_a_second_apply() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.toml");
        let p = profile();
        let mut h = host();
        h.read_only.push("net.ipv4.tcp_rmem".into());
        let out = apply(&p, &mut h, &state, None).unwrap();
        assert_eq!(
            out.written,
            vec![("net.core.somaxconn".to_string(), "4096".to_string())]
        );
        assert_eq!(
            out.failed.len(),
            1,
            "a failed write is reported, the rest goes on"
        );
        assert_eq!(h.values["net.core.somaxconn"], "4096");
        assert!(matches!(
            apply(&p, &mut h, &state, None),
            Err(ApplyError::StateExists(_))
        ));
        let back = rollback(&mut h, &state).unwrap();
        assert_eq!(
            back.written,
            vec![("net.core.somaxconn".to_string(), "128".to_string())]
        );
        assert_eq!(h.values["net.core.somaxconn"], "128");
        assert_eq!(
            h.values["net.ipv4.tcp_rmem"], "4096 131072 6291456",
            "never changed, never restored"
        );
        assert!(!state.exists());
        assert!(matches!(
            rollback(&mut h, &state),
            Err(ApplyError::NoState(_))
        ));
    }
}
