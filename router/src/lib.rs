//! Switchboard's router: the brain. Users hash into partitions; each partition is owned
//! by one shard (one thread), which owns a storage log and everything about its users:
//! accounts, sessions (which gateway connection a logged-in user is on), registrations,
//! and the offline queues in its log.
//!
//! A [`Shard`] is sans-I/O: it is driven by [`wire::link::ToRouter`] requests, a `now`
//! passed in, and [`Shard::tick`]; it answers with [`wire::link::FromRouter`] values. The
//! appliance moves those over channels (all-in-one) or the private-NIC link. It works
//! over a [`Store`] (`storage::Log` in service, [`MemStore`] in tests, whose durability
//! the test advances by hand) and draws PINs and keys from a random source passed in.
//!
//! Delivery semantics (DESIGN.md): a message is appended to the recipient's queue before
//! `ServerAck` (and, with group/always durability, only once the log is durable past
//! it); delivered if the recipient is online, streamed in order on login; erased when
//! the recipient acknowledges it, which sends a delivered receipt to the sender — stored
//! and forwarded the same way. Duplicates (same sender and message id while pending, or
//! recently delivered) are acknowledged and not stored twice.
//!
//! # Layout
//! - [`config`]: the router configuration (`RouterConfig`).
//! - [`driver`]: the thread that runs a shard: its bounded inbox and loop.
//! - [`partition`]: phone → partition, partition → shard.
//! - [`registration`]: PINs, their limits, keys (CSPRNG, hashed).
//! - [`shard`]: `Shard`, the state machine.
//! - [`store`]: what a shard needs of its storage (`Store`), for `storage::Log` and
//!   in memory (`MemStore`).
//! - `stored`: how the router marks messages and receipts in the log.
#![forbid(unsafe_code)]

pub mod config;
pub mod driver;
pub mod partition;
pub mod registration;
pub mod shard;
pub mod store;
mod stored;

pub use config::RouterConfig;
pub use partition::{partition_of, PartitionMap};
pub use shard::{os_random, FlushKnob, Random, ReportCell, Shard, ShardReport, ShardStats};
pub use store::{MemStore, Store};
