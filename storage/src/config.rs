//! The log's configuration: one documented struct, checked by [`LogConfig::validate`].

use serde::Deserialize;

use crate::record::{RECORD_BYTES_MAX, SEAL_RECORD_BYTES, SEGMENT_HEADER_BYTES};

/// Smallest segment the log accepts (tests use small ones to exercise rollover).
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;
/// Largest segment: offsets in a position are 32 bits.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;

// The largest record fits the default segment many times over; smaller segments cap
// records at `record_bytes_max()`, which still leaves room for any wire frame (64 KiB).
const _: () = assert!((RECORD_BYTES_MAX as u64) * 32 <= 64 << 20);
const _: () =
    assert!(SEGMENT_HEADER_BYTES + SEAL_RECORD_BYTES + (64 << 10) < 2 * SEGMENT_BYTES_MIN as usize);

/// When an append counts as safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// In the page cache: survives a crash of the process, not of the machine.
    None,
    /// Flushed (`msync` of the dirty range) by a background thread at most every
    /// `group_interval_us` or `group_records` appends, whichever comes first. Appends
    /// never wait for it; the durable position says what is flushed.
    Group,
    /// Flushed before the append returns.
    Always,
}

/// Configuration of one shard's log. Every field has a default; see each for limits.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Size of each segment file. Default: 64 MiB. Minimum: 64 KiB (and 4× the largest
    /// record). Maximum: 1 GiB. Multiple of 4096.
    pub segment_bytes: u64,
    /// Default: `group`.
    pub durability: Durability,
    /// `group`: longest time between flushes. Default: 1000 µs. Minimum: 50. Maximum: 10 s.
    pub group_interval_us: u64,
    /// `group`: appends that trigger a flush before the interval. Default: 4096. Minimum: 1.
    pub group_records: u32,
    /// Pre-fault the next segment (`MADV_POPULATE_WRITE`) while it is prepared.
    /// Default: true. Ignored where the kernel lacks it.
    pub prefault: bool,
    /// Messages expire this long after they are stored. Default: 30 days. Minimum: 1 s.
    pub message_ttl_ms: u64,
    /// Pending messages per recipient. Default: 100,000. From 1 to 2^31.
    pub user_messages_max: u64,
    /// Pending body bytes per recipient. Default: 256 MiB. From 1 MiB to 2^55.
    pub user_bytes_max: u64,
    /// Pending messages in the shard. Default: 50,000,000. Minimum: 1.
    pub shard_messages_max: u64,
    /// Pending body bytes in the shard. Default: 64 GiB. Minimum: 1 MiB.
    pub shard_bytes_max: u64,
    /// Live accounts in the shard. Default: 10,000,000. Minimum: 1.
    pub accounts_max: u64,
    /// A segment whose live bytes fall below this share of its used bytes is compacted.
    /// Default: 0.25. Range: 0.0 (never) to 0.9.
    pub compact_live_ratio: f64,
    /// Run the log's background threads (flusher, segment preparer) at a lower CPU
    /// priority (Linux: nice 10), so a thread serving messages that wakes up takes the
    /// CPU from them (an `msync`, a segment's pre-faulting) rather than sharing it
    /// evenly. Not the idle class (`SCHED_IDLE`, what `background_idle` chose before):
    /// on a saturated CPU an idle-class thread waits seconds, and holding a kernel lock
    /// (a page under writeback, the address space's) it stalls the serving thread for as
    /// long. Acknowledgements still wait for durability; when the flusher or the preparer
    /// is starved anyway, the writer works around it (docs/STORAGE.md). Default: true.
    /// Ignored where the system has no per-thread priority. Also read as
    /// `background_idle`, its name before.
    #[serde(alias = "background_idle")]
    pub background_low_priority: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 64 << 20,
            durability: Durability::Group,
            group_interval_us: 1000,
            group_records: 4096,
            prefault: true,
            message_ttl_ms: 30 * 24 * 3600 * 1000,
            user_messages_max: 100_000,
            user_bytes_max: 256 << 20,
            shard_messages_max: 50_000_000,
            shard_bytes_max: 64 << 30,
            accounts_max: 10_000_000,
            compact_live_ratio: 0.25,
            background_low_priority: true,
        }
    }
}

/// A configuration value out of its range; says which and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("storage config: {field} = {value}: {why}")]
pub struct ConfigError {
    pub field: &'static str,
    pub value: String,
    pub why: &'static str,
}

impl LogConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(field: &'static str, value: impl ToString, why: &'static str) -> ConfigError {
            ConfigError {
                field,
                value: value.to_string(),
                why,
            }
        }
        let sb = self.segment_bytes;
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&sb) {
            return Err(bad("segment_bytes", sb, "must be from 64 KiB to 1 GiB"));
        }
        if sb % 4096 != 0 {
            return Err(bad("segment_bytes", sb, "must be a multiple of 4096"));
        }
        if !(50..=10_000_000).contains(&self.group_interval_us) {
            return Err(bad(
                "group_interval_us",
                self.group_interval_us,
                "must be from 50 to 10,000,000",
            ));
        }
        if self.group_records == 0 {
            return Err(bad("group_records", 0, "must be at least 1"));
        }
        if self.message_ttl_ms < 1000 {
            return Err(bad(
                "message_ttl_ms",
                self.message_ttl_ms,
                "must be at least 1000",
            ));
        }
        for (field, v, min) in [
            ("user_messages_max", self.user_messages_max, 1),
            ("user_bytes_max", self.user_bytes_max, 1 << 20),
            ("shard_messages_max", self.shard_messages_max, 1),
            ("shard_bytes_max", self.shard_bytes_max, 1 << 20),
            ("accounts_max", self.accounts_max, 1),
        ] {
            if v < min {
                return Err(bad(field, v, "below its minimum (see the field's docs)"));
            }
        }
        // The index keeps a user's count in 32 bits and its bytes in 56.
        for (field, v, max) in [
            ("user_messages_max", self.user_messages_max, 1 << 31),
            ("user_bytes_max", self.user_bytes_max, 1 << 55),
        ] {
            if v > max {
                return Err(bad(field, v, "above its maximum (see the field's docs)"));
            }
        }
        if !(0.0..=0.9).contains(&self.compact_live_ratio) {
            return Err(bad(
                "compact_live_ratio",
                self.compact_live_ratio,
                "must be from 0.0 to 0.9",
            ));
        }
        Ok(())
    }

    /// Largest record that fits a segment beside its header and seal.
    pub fn record_bytes_max(&self) -> usize {
        (self.segment_bytes as usize - SEGMENT_HEADER_BYTES - SEAL_RECORD_BYTES)
            .min(RECORD_BYTES_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        LogConfig::default().validate().unwrap();
    }

    #[test]
    fn toml_with_unknown_field_is_refused() {
        let err = toml::from_str::<LogConfig>("segment_byte = 1").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let c: LogConfig = toml::from_str("segment_bytes = 1000\ndurability = \"always\"").unwrap();
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "segment_bytes");
        let c = LogConfig {
            compact_live_ratio: 1.5,
            ..LogConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "compact_live_ratio");
        let c = LogConfig {
            user_messages_max: 1 << 32,
            ..LogConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "user_messages_max");
    }
}
