//! Switchboard's storage: one append-only log per router shard, holding every message
//! until its recipient acknowledges it, and the shard's accounts.
//!
//! Segments are fixed-size files, preallocated and mapped (`memmap2`); records are
//! framed with a length and a CRC32C and found again after damage by a sync marker.
//! One thread writes; a flusher thread makes appends durable in groups (`msync`) and a
//! preparer thread readies the next segment, so the append path takes no lock and makes
//! no system call in `none` and `group` durability. The format is drawn in
//! [`record`] and in `docs/STORAGE.md`.
//!
//! ```no_run
//! use storage::{Log, LogConfig, NewMessage, UserId};
//! let (mut log, report) = Log::open("data/log-0", LogConfig::default(), 1_700_000_000_000)?;
//! let alice = UserId::new(15550001).unwrap();
//! let bob = UserId::new(15550002).unwrap();
//! let a = log.append_message(&NewMessage {
//!     recipient: bob, sender: alice, msg_id: 1, timestamp_ms: 1_700_000_000_000,
//!     expiry_ms: None, body: b"hi",
//! })?;
//! // Acknowledge to alice once `log.durable() >= a.lsn`; deliver to bob; then:
//! log.erase(bob, a.seq)?;
//! # Ok::<(), storage::StorageError>(())
//! ```
//!
//! # Layout
//! - [`types`]: `UserId`, `MsgSeq`, `SegmentId`, `Lsn`.
//! - [`record`]: segment header and record formats, encode/decode (no I/O; `unsafe`:
//!   the CRC32C instruction for short records, where the CPU has it).
//! - [`scan`]: recovery's walk over a segment's bytes: records, damage, torn tail (no I/O).
//! - [`config`]: `LogConfig` and its validation.
//! - `fault`: where tests make the disk fail (segment creation, `msync`, directory
//!   `fsync`), by directory; unarmed in service.
//! - `segment`: segment files, mappings, the directory lock (`unsafe`: mapping files).
//! - `flusher`: the group-commit flusher and the segment preparer threads (`unsafe`:
//!   the scheduling-class syscall).
//! - `index`: per-recipient queues of pending messages (`unsafe`: its own blocks).
//! - `log`: `Log`: append, erase, accounts, reads, positions.
//! - `recover`: `Log::open`: scan, rebuild, cut the torn tail, report.
//! - `reclaim`: `Log::maintain`: expiry, deletion, compaction.
//! - [`fuzzing`]: entry points for the fuzz targets.

pub mod config;
mod error;
#[doc(hidden)]
pub mod fault;
mod flusher;
pub mod fuzzing;
mod index;
mod log;
mod reclaim;
pub mod record;
mod recover;
pub mod scan;
mod segment;
mod starve;
pub mod types;

pub use config::{ConfigError, Durability, LogConfig};
pub use error::{Limit, StorageError};
pub use log::{Appended, DiskSpace, Log, LogStats, NewMessage, StoredMessage};
pub use reclaim::MaintainReport;
pub use recover::{RecoveryReport, REPORT_NOTES_MAX};
pub use types::{Lsn, MsgSeq, SegmentId, UserId};
