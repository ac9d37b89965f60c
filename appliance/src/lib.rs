//! The Switchboard appliance: configuration, CLI and wiring of the tiers.
//!
//! # Layout
//! - [`admin`]: the admin API: Prometheus metrics and status, token-authenticated.
//! - [`cli`]: the `switchboard` command line (clap derive).
//! - [`config`]: the appliance configuration (TOML), validated.
//! - [`error`]: what stops a role, by kind (`Error`).
//! - [`control`]: runtime knobs and configuration reload.
//! - [`cluster`]: the cluster map (routers, partitions, gateways, secret).
//! - [`process`]: what every role's process does around its threads (start, shards,
//!   operations, waiting for a signal), on any Unix.
//! - [`serve`]: `switchboard serve`: threads, channels, signals.
//! - `tee` (Linux): mirroring a sample of the traffic to a shadow router cluster.
//! - [`sms`]: sending registration PINs (`log`, `http`).
//! - [`tune`]: `switchboard tune`: the host against a tuning profile.
//! - [`roles`]: `switchboard router` (any Unix) and `switchboard gateway` (Linux), the
//!   split deployment.
//! - [`reporter`]: the activity reporter and the queue alerts.
//! - [`metrics`]: the appliance's figures described once (name, type, help, source).
//! - [`logging`]: the appliance's log lines, at a level changeable while running.
//! - [`task`]: a background thread stopped and joined when its owner drops it.
//! - [`logcmd`]: `switchboard log`: operator commands on a shard's storage log.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod error;
pub mod logcmd;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod reporter;
#[cfg(unix)]
pub mod roles;
#[cfg(target_os = "linux")]
pub mod serve;
#[cfg(not(target_os = "linux"))]
#[path = "serve_other.rs"]
pub mod serve;
pub mod sms;
pub mod task;
#[cfg(target_os = "linux")]
pub mod tee;
pub mod tune;
