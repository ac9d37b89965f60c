//! Router configuration.

use serde::Deserialize;

/// Every field has a default; each doc says its range.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Partitions users hash into. Default: 1024. Range: 1 to 65,536. Fixed for the life
    /// of a deployment: changing it moves users between logs.
    pub partitions: u32,
    /// Deliveries in flight (sent, not yet acknowledged) per session; the rest waits in
    /// the log. Default: 64. Range: 1 to 65,536.
    pub window: u32,
    /// Bytes in flight per session, the same deliveries counted as frames on the wire
    /// (envelope, fields, body, and 22 bytes of TLS record overhead each): the window is
    /// bounded by `window` frames and by these bytes, whichever comes first. A single
    /// delivery larger than this still goes when nothing else is in flight. Must stay
    /// below the gateway's `limits.outbound_bytes_max` (checked): a connection that is
    /// reading is never cut for what the server chose to push. Default: 512 KiB.
    /// Range: 4,096 to 1 GiB.
    pub window_bytes: u64,
    /// How long a registration PIN is valid. Default: 600 s. Range: 30 to 86,400.
    pub pin_ttl_s: u32,
    /// PIN requests per number per hour. Default: 3. Minimum: 1.
    pub pin_requests_per_phone_hour: u32,
    /// PIN requests per source address per hour, counted by each gateway process over
    /// all its workers (so it holds however many shards and routers own the numbers;
    /// a source that reaches several gateway processes has this much at each).
    /// Default: 20. Minimum: 1.
    pub pin_requests_per_source_hour: u32,
    /// PIN guesses (`Verify`) per source address per hour, counted like
    /// `pin_requests_per_source_hour`. Default: 100. Minimum: 1.
    pub pin_guesses_per_source_hour: u32,
    /// Wrong PINs before the PIN is void. Default: 5. Range: 1 to 100.
    pub pin_wrong_max: u32,
    /// Recently delivered (sender, recipient, message id) remembered to drop resends:
    /// at least this many of the latest (at most twice as many). Default: 65,536.
    /// Minimum: 0.
    pub recent_delivered: usize,
    /// Registrations waiting for their PIN, per shard. Default: 100,000. Minimum: 1.
    pub pending_registrations_max: usize,
    /// Reclaim work per tick (`Log::maintain`). Default: 1 MiB. Minimum: 4096.
    pub maintain_bytes_per_tick: usize,
    /// Requests a shard's inbox holds from gateways; when it is full, gateways stop
    /// reading the clients whose requests wait (backpressure). Default: 65,536.
    /// Range: 64 to 16,777,216.
    pub inbox_requests_max: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            partitions: 1024,
            window: 64,
            window_bytes: 512 * 1024,
            pin_ttl_s: 600,
            pin_requests_per_phone_hour: 3,
            pin_requests_per_source_hour: 20,
            pin_guesses_per_source_hour: 100,
            pin_wrong_max: 5,
            recent_delivered: 65_536,
            pending_registrations_max: 100_000,
            maintain_bytes_per_tick: 1 << 20,
            inbox_requests_max: 65_536,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("router config: {field} = {value}: {why}")]
pub struct ConfigError {
    pub field: &'static str,
    pub value: String,
    pub why: &'static str,
}

impl RouterConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, value: u64, why| {
            Err(ConfigError {
                field,
                value: value.to_string(),
                why,
            })
        };
        if !(1..=65_536).contains(&self.partitions) {
            return bad(
                "partitions",
                self.partitions.into(),
                "must be from 1 to 65,536",
            );
        }
        if !(1..=65_536).contains(&self.window) {
            return bad("window", self.window.into(), "must be from 1 to 65,536");
        }
        if !(4096..=1 << 30).contains(&self.window_bytes) {
            return bad(
                "window_bytes",
                self.window_bytes,
                "must be from 4,096 to 1,073,741,824",
            );
        }
        if !(30..=86_400).contains(&self.pin_ttl_s) {
            return bad(
                "pin_ttl_s",
                self.pin_ttl_s.into(),
                "must be from 30 to 86,400",
            );
        }
        if self.pin_requests_per_phone_hour == 0 {
            return bad("pin_requests_per_phone_hour", 0, "must be at least 1");
        }
        if self.pin_requests_per_source_hour == 0 {
            return bad("pin_requests_per_source_hour", 0, "must be at least 1");
        }
        if self.pin_guesses_per_source_hour == 0 {
            return bad("pin_guesses_per_source_hour", 0, "must be at least 1");
        }
        if !(1..=100).contains(&self.pin_wrong_max) {
            return bad(
                "pin_wrong_max",
                self.pin_wrong_max.into(),
                "must be from 1 to 100",
            );
        }
        if self.pending_registrations_max == 0 {
            return bad("pending_registrations_max", 0, "must be at least 1");
        }
        if !(64..=1 << 24).contains(&self.inbox_requests_max) {
            return bad(
                "inbox_requests_max",
                self.inbox_requests_max as u64,
                "must be from 64 to 16,777,216",
            );
        }
        if self.maintain_bytes_per_tick < 4096 {
            return bad(
                "maintain_bytes_per_tick",
                self.maintain_bytes_per_tick as u64,
                "must be at least 4096",
            );
        }
        Ok(())
    }
}
