//! The Switchboard appliance: configuration, CLI and wiring of the tiers.
//!
//! # Layout
//! - [`admin`]: the admin API: Prometheus metrics and status, token-authenticated.
//! - [`cli`]: the `switchboard` command line (clap derive).
//! - [`config`]: the appliance configuration (TOML), validated.
//! - [`control`]: runtime knobs and configuration reload.
//! - [`cluster`]: the cluster map (routers, partitions, gateways, secret).
//! - [`link`]: authenticated, framed links on the private network.
//! - [`serve`]: `switchboard serve`: threads, channels, signals.
//! - `tee` (Linux): mirroring a sample of the traffic to a shadow router cluster.
//! - [`sms`]: sending registration PINs (`log`, `http`).
//! - [`tune`]: `switchboard tune`: the host against a tuning profile.
//! - `roles` (Linux): `switchboard gateway` and `switchboard router`, the split deployment.
//! - [`reporter`]: the activity reporter and the queue alerts.
//! - [`logging`]: the appliance's log lines, at a level changeable while running.
//! - [`task`]: a background thread stopped and joined when its owner drops it.
//! - [`logcmd`]: `switchboard log`: operator commands on a shard's storage log.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
#[cfg(target_os = "linux")]
pub mod link;
pub mod logcmd;
pub mod logging;
pub mod reporter;
#[cfg(target_os = "linux")]
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
