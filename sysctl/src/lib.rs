//! Switchboard's host tuning: profiles as data (one TOML file per OS and size), compared
//! with the running host (`check`, `diff`), applied with a plan first and the previous
//! values saved (`apply`, `rollback`), and rendered into the files packaging ships
//! (`sysctl.d`, `sysctl.conf`, `loader.conf`, kernel command line, systemd, limits,
//! login.conf). Also the process-level knobs: open files, realtime scheduling, CPU
//! pinning, huge pages in use.
//!
//! # Layout
//! - [`profile`]: the data model, the built-in profiles, value comparison.
//! - [`host`]: the `Host` trait; `linux.rs` (`/proc/sys`), `freebsd.rs` (`sysctlbyname`),
//!   `other.rs`; `MemHost` for tests.
//! - [`plan`]: check, plan, apply, rollback, the state file.
//! - [`render`]: the output formats.
//! - [`process`]: rlimits, realtime priority, CPU pinning, AnonHugePages.

pub mod host;
pub mod plan;
pub mod process;
pub mod profile;
pub mod render;

pub use host::{Host, MemHost, SystemHost};
pub use profile::{Cmp, Entry, Kind, Os, Profile};
