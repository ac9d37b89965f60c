//! Registration: PINs sent by SMS, their limits, and device keys.
//!
//! PINs live in memory only (a router restart voids the PINs in flight: the user asks
//! again). Keys are 256 bits from the OS CSPRNG; only their SHA-256 is stored, and
//! login compares hashes in constant time.

use std::collections::VecDeque;
use std::hash::Hash;

use ahash::AHashMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use wire::{Key, Phone, Pin};

use crate::config::RouterConfig;

const HOUR_MS: u64 = 3_600_000;

/// Counts events per key over the last hour (a sliding window); at most `limit` are
/// kept per key. Used here per number, and by the gateway per source address.
pub struct RateLimiter<K> {
    limit: usize,
    seen: AHashMap<K, VecDeque<u64>>,
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    pub fn new(limit: u32) -> Self {
        RateLimiter {
            limit: limit as usize,
            seen: AHashMap::new(),
        }
    }

    /// Whether one more event for `key` is within the limit (nothing is counted).
    pub fn would_allow(&mut self, key: K, now_ms: u64) -> bool {
        let Some(q) = self.seen.get_mut(&key) else {
            return true;
        };
        while q.front().is_some_and(|&t| t + HOUR_MS <= now_ms) {
            q.pop_front();
        }
        q.len() < self.limit
    }

    pub fn count(&mut self, key: K, now_ms: u64) {
        self.seen.entry(key).or_default().push_back(now_ms);
    }

    /// Counts one event for `key` if it is within the limit; whether it was.
    pub fn take(&mut self, key: K, now_ms: u64) -> bool {
        let ok = self.would_allow(key, now_ms);
        if ok {
            self.count(key, now_ms);
        }
        ok
    }

    pub fn sweep(&mut self, now_ms: u64) {
        self.seen
            .retain(|_, q| q.back().is_some_and(|&t| t + HOUR_MS > now_ms));
    }
}

struct PinState {
    pin: Pin,
    expires_ms: u64,
    wrong: u32,
}

pub enum Requested {
    /// Send this PIN; it expires in `expires_in_s`.
    Sent {
        pin: Pin,
        expires_in_s: u32,
    },
    RateLimited,
    /// Too many registrations waiting in this shard.
    Busy,
    /// The CSPRNG failed.
    NoRandomness,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    Ok,
    /// Wrong PIN; it stays valid for this many more tries.
    Wrong {
        tries_left: u32,
    },
    /// Wrong PIN, and that was the last try: the PIN is void.
    Voided,
    /// No valid PIN for this number (never asked, expired, used, voided).
    Invalid,
}

pub struct Registrations {
    ttl_ms: u64,
    wrong_max: u32,
    max: usize,
    pins: AHashMap<Phone, PinState>,
    per_phone: RateLimiter<Phone>,
}

impl Registrations {
    pub fn new(c: &RouterConfig) -> Self {
        Registrations {
            ttl_ms: c.pin_ttl_s as u64 * 1000,
            wrong_max: c.pin_wrong_max,
            max: c.pending_registrations_max,
            pins: AHashMap::new(),
            per_phone: RateLimiter::new(c.pin_requests_per_phone_hour),
        }
    }

    /// A new PIN for `phone` (replacing any earlier one), within the number's limit.
    /// (The limit per source address is the gateway's: it sees every request of a
    /// source, whichever shard or router owns the number.)
    pub fn request(
        &mut self,
        phone: Phone,
        now_ms: u64,
        random: &mut dyn FnMut(&mut [u8]) -> bool,
    ) -> Requested {
        if !self.pins.contains_key(&phone) && self.pins.len() >= self.max {
            self.sweep(now_ms);
            if self.pins.len() >= self.max {
                return Requested::Busy;
            }
        }
        if !self.per_phone.take(phone, now_ms) {
            return Requested::RateLimited;
        }
        let Some(pin) = random_pin(random) else {
            return Requested::NoRandomness;
        };
        self.pins.insert(
            phone,
            PinState {
                pin,
                expires_ms: now_ms + self.ttl_ms,
                wrong: 0,
            },
        );
        Requested::Sent {
            pin,
            expires_in_s: (self.ttl_ms / 1000) as u32,
        }
    }

    pub fn verify(&mut self, phone: Phone, pin: Pin, now_ms: u64) -> Verified {
        let Some(st) = self.pins.get_mut(&phone) else {
            return Verified::Invalid;
        };
        if st.expires_ms <= now_ms {
            self.pins.remove(&phone);
            return Verified::Invalid;
        }
        if bool::from(st.pin.get().to_le_bytes().ct_eq(&pin.get().to_le_bytes())) {
            self.pins.remove(&phone);
            return Verified::Ok;
        }
        st.wrong += 1;
        if st.wrong >= self.wrong_max {
            self.pins.remove(&phone);
            Verified::Voided
        } else {
            Verified::Wrong {
                tries_left: self.wrong_max - st.wrong,
            }
        }
    }

    /// Drops expired PINs and old rate-limit windows.
    pub fn sweep(&mut self, now_ms: u64) {
        self.pins.retain(|_, st| st.expires_ms > now_ms);
        self.per_phone.sweep(now_ms);
    }

    pub fn waiting(&self) -> usize {
        self.pins.len()
    }
}

/// Five uniform decimal digits from `random` (rejection sampling: no modulo bias).
fn random_pin(random: &mut dyn FnMut(&mut [u8]) -> bool) -> Option<Pin> {
    const ZONE: u32 = u32::MAX - u32::MAX % 100_000;
    loop {
        let mut b = [0u8; 4];
        if !random(&mut b) {
            return None;
        }
        let v = u32::from_le_bytes(b);
        if v < ZONE {
            return Pin::new(v % 100_000);
        }
    }
}

/// A fresh device key: 256 bits from `random` (the OS CSPRNG in service).
pub fn new_key(random: &mut dyn FnMut(&mut [u8]) -> bool) -> Option<Key> {
    let mut k = [0u8; 32];
    random(&mut k).then_some(Key(k))
}

pub fn key_hash(key: &Key) -> [u8; 32] {
    Sha256::digest(key.0).into()
}

/// Constant-time comparison of a presented key with a stored hash.
pub fn key_matches(stored_hash: &[u8], key: &Key) -> bool {
    stored_hash.len() == 32 && bool::from(stored_hash.ct_eq(&key_hash(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(c: RouterConfig) -> Registrations {
        Registrations::new(&c)
    }

    fn phone(n: u64) -> Phone {
        Phone::new(n).unwrap()
    }

    fn os(b: &mut [u8]) -> bool {
        getrandom::fill(b).is_ok()
    }

    fn sent(r: Requested) -> Pin {
        match r {
            Requested::Sent { pin, .. } => pin,
            _ => panic!("not sent"),
        }
    }

    #[test]
    fn right_pin_once_then_invalid() {
        let mut r = regs(RouterConfig::default());
        let pin = sent(r.request(phone(15550000001), 0, &mut os));
        assert_eq!(r.verify(phone(15550000001), pin, 1), Verified::Ok);
        assert_eq!(r.verify(phone(15550000001), pin, 2), Verified::Invalid);
    }

    #[test]
    fn five_wrong_void_the_pin() {
        let mut r = regs(RouterConfig::default());
        let pin = sent(r.request(phone(15550000001), 0, &mut os));
        let wrong = Pin::new((pin.get() + 1) % 100_000).unwrap();
        for left in (1..5).rev() {
            assert_eq!(
                r.verify(phone(15550000001), wrong, 1),
                Verified::Wrong { tries_left: left }
            );
        }
        assert_eq!(r.verify(phone(15550000001), wrong, 1), Verified::Voided);
        assert_eq!(
            r.verify(phone(15550000001), pin, 1),
            Verified::Invalid,
            "the right PIN no longer works"
        );
    }

    #[test]
    fn pins_expire() {
        let mut r = regs(RouterConfig::default());
        let pin = sent(r.request(phone(15550000001), 0, &mut os));
        assert_eq!(
            r.verify(phone(15550000001), pin, 600_000),
            Verified::Invalid
        );
    }

    #[test]
    fn requests_are_limited_per_number_for_an_hour() {
        let mut r = regs(RouterConfig::default());
        for t in 0..3 {
            sent(r.request(phone(15550000001), t, &mut os));
        }
        // Per number: the 4th within the hour is refused; other numbers are not.
        assert!(matches!(
            r.request(phone(15550000001), 10, &mut os),
            Requested::RateLimited
        ));
        sent(r.request(phone(15550000002), 11, &mut os));
        // An hour later the number may ask again.
        sent(r.request(phone(15550000001), HOUR_MS + 1, &mut os));
    }

    #[test]
    fn pins_are_uniformish_and_keys_hash() {
        let pins: std::collections::HashSet<u32> = (0..200)
            .filter_map(|_| random_pin(&mut os))
            .map(|p| p.get())
            .collect();
        assert!(pins.len() > 190, "{} distinct of 200", pins.len());
        let k = new_key(&mut os).unwrap();
        assert!(key_matches(&key_hash(&k), &k));
        assert!(!key_matches(&key_hash(&k), &new_key(&mut os).unwrap()));
        assert!(!key_matches(&[0u8; 31], &k));
    }
}
