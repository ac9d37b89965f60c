//! The split deployment: `switchboard router` (one shard, its log, listening for links on
//! its private address) and `switchboard gateway` (the TLS workers, with a link to every
//! router). Same gateway workers and shards as `serve`; the TCP links replace channels.
//!
//! Faults: a gateway reconnects to a router with backoff; while a link is down its
//! requests wait in a bounded queue (and past it are refused with `TryAgain`, so clients
//! resend); when the link is back the gateway re-attaches its logged-in connections.
//! A router drops a gateway's sessions when its link goes; the router's log is its
//! memory, so nothing acknowledged is lost.

//! - [`router`]: `switchboard router`, on any Unix.
//! - `gateway` (Linux): `switchboard gateway` (its workers are the io_uring driver's).

#[cfg(target_os = "linux")]
mod gateway;
mod router;

#[cfg(target_os = "linux")]
pub use gateway::gateway;
pub use router::router;
