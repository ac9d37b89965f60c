//! Bringing many clients up: open at a limited rate with a bounded number in flight,
//! register those without a saved key, retry what failed, report latencies.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use wire::{Key, Phone};

use crate::engine::{Ev, Fleet};

/// Microsecond histogram, 1 µs to 60 s, 3 significant digits.
pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record((d.as_micros() as u64).clamp(1, 60_000_000));
}

/// Device keys by phone, kept in a file (`+phone hex-key` per line) so later runs log
/// in without registering again.
#[derive(Default)]
pub struct Keys(pub HashMap<u64, Key>);

impl Keys {
    pub fn load(path: &Path) -> Result<Keys, String> {
        let mut keys = Keys::default();
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
            let bad = || format!("{}:{}: expected `+phone hex-key`", path.display(), n + 1);
            let (p, k) = line.split_once(' ').ok_or_else(bad)?;
            let phone: Phone = p.parse().map_err(|_| bad())?;
            keys.0.insert(phone.get(), parse_key(k).ok_or_else(bad)?);
        }
        Ok(keys)
    }

    pub fn append(path: &Path, new: &[(Phone, Key)]) -> Result<(), String> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut text = String::new();
        for (p, k) in new {
            text += &format!("{p} {}\n", key_hex(k));
        }
        f.write_all(text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn get(&self, p: Phone) -> Option<Key> {
        self.0.get(&p.get()).copied()
    }
}

pub fn key_hex(k: &Key) -> String {
    k.0.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn parse_key(s: &str) -> Option<Key> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Key(k))
}

pub struct Plan<'a> {
    pub phones: &'a [Phone],
    pub keys: &'a Keys,
    /// Source addresses, used round robin (empty: the kernel chooses).
    pub sources: &'a [IpAddr],
    /// New connections per second (0: as fast as the in-flight bound allows).
    pub rate: f64,
    /// Connections opening at once.
    pub inflight: usize,
    /// Attempts per phone before it counts as failed.
    pub attempts: u32,
    pub deadline: Duration,
    /// Close each connection politely once logged in (registration runs).
    pub close_when_ready: bool,
}

pub struct Outcome {
    /// Connection id per phone (`None`: failed, or closed when ready).
    pub ids: Vec<Option<usize>>,
    pub handshake: Histogram<u64>,
    pub login: Histogram<u64>,
    pub new_keys: Vec<(Phone, Key)>,
    pub failed: u64,
    pub errors: Vec<String>,
    pub elapsed: Duration,
    /// Messages the server said were waiting, summed over the logins.
    pub pending: u64,
}

/// Brings `plan.phones` up on `fleet`. Events that are not about these logins go to
/// `other` (with the fleet, so it can answer); `progress` sees (ready, failed).
pub fn login_all(
    fleet: &mut Fleet,
    plan: &Plan<'_>,
    other: &mut dyn FnMut(&mut Fleet, Ev),
    progress: &mut dyn FnMut(u64, u64),
) -> Outcome {
    let started = Instant::now();
    let n = plan.phones.len();
    let mut out = Outcome {
        ids: vec![None; n],
        handshake: hist(),
        login: hist(),
        new_keys: Vec::new(),
        failed: 0,
        errors: Vec::new(),
        elapsed: Duration::ZERO,
        pending: 0,
    };
    let mut opening: HashMap<usize, usize> = HashMap::new();
    let mut attempts = vec![0u32; n];
    let mut queue: std::collections::VecDeque<usize> = (0..n).collect();
    let (mut ready, mut opened, mut src) = (0u64, 0u64, 0usize);
    let mut evs = Vec::new();
    while (ready + out.failed) < n as u64 {
        if started.elapsed() > plan.deadline {
            out.errors.push(format!(
                "deadline of {:?} passed with {} still opening",
                plan.deadline,
                n as u64 - ready - out.failed
            ));
            out.failed = n as u64 - ready;
            for id in opening.keys() {
                fleet.close(*id, false);
            }
            break;
        }
        // Open more, within the rate and the in-flight bound.
        while opening.len() < plan.inflight {
            if plan.rate > 0.0 && opened as f64 > started.elapsed().as_secs_f64() * plan.rate {
                break;
            }
            let Some(i) = queue.pop_front() else { break };
            let phone = plan.phones[i];
            let source = (!plan.sources.is_empty()).then(|| {
                src += 1;
                plan.sources[src % plan.sources.len()]
            });
            attempts[i] += 1;
            opened += 1;
            // A phone whose registration failed halfway registers again (allowed: it
            // replaces the device).
            match fleet.open(phone, plan.keys.get(phone), source) {
                Ok(id) => {
                    opening.insert(id, i);
                }
                Err(e) => {
                    if out.errors.len() < 10 {
                        out.errors.push(format!("{phone}: connect: {e}"));
                    }
                    if attempts[i] < plan.attempts {
                        queue.push_back(i);
                    } else {
                        out.failed += 1;
                    }
                }
            }
        }
        if let Err(e) = fleet.turn(Duration::from_millis(5), &mut evs) {
            out.errors.push(format!("poll: {e}"));
            out.failed = n as u64 - ready;
            break;
        }
        for ev in evs.drain(..) {
            match ev {
                Ev::Ready {
                    id,
                    handshake,
                    login,
                    key,
                    pending,
                } if opening.contains_key(&id) => {
                    let i = opening.remove(&id).expect("present");
                    record(&mut out.handshake, handshake);
                    record(&mut out.login, login);
                    out.pending += pending as u64;
                    if let Some(k) = key {
                        out.new_keys.push((plan.phones[i], k));
                    }
                    ready += 1;
                    if plan.close_when_ready {
                        fleet.close(id, true);
                    } else {
                        out.ids[i] = Some(id);
                    }
                    progress(ready, out.failed);
                }
                Ev::Closed { id, phase, why } if opening.contains_key(&id) => {
                    let i = opening.remove(&id).expect("present");
                    if out.errors.len() < 10 {
                        out.errors
                            .push(format!("{} ({phase:?}): {why}", plan.phones[i]));
                    }
                    if attempts[i] < plan.attempts {
                        queue.push_back(i);
                    } else {
                        out.failed += 1;
                        progress(ready, out.failed);
                    }
                }
                ev => other(fleet, ev),
            }
        }
    }
    out.elapsed = started.elapsed();
    out
}
