//! Switchboard's gateway: the TLS front for millions of mostly idle phones.
//!
//! The connection logic is sans-I/O ([`conn::Conn`]): TLS through rustls' *unbuffered*
//! API (3.5 KB per idle session against 7.7 KB for the buffered one, measured), frames,
//! login state, limits and timeouts, driven by bytes and a `now`. An idle connection
//! owns no buffer. The socket driver (io_uring, thread per core) is a separate module.
//!
//! # Layout
//! - [`tls`]: certificates (PEM or self-signed) and the shared `ServerConfig`.
//! - [`conn`]: one connection's state machine.
//! - `uring` (Linux): the io_uring worker: listener, buffer ring, sends, timers.
//! - `handover` (Unix): listening sockets passed to a new process or from systemd.
//! - [`live`]: values replaced at run time that workers follow.
//! - [`link`]: a worker's side of the way to routers (`RouterLink`, `WorkerLink`,
//!   `SourceLimits`), whatever drives its sockets.
//! - [`worker`]: a worker's settings, knobs and counters, whatever drives its sockets.
//! - `wake` (Unix): eventfd rings, `poll` on a socket and an eventfd, the reuseport
//!   listener: for threads outside the io_uring driver.
#![deny(unsafe_code)] // allowed only in `uring` and `handover`

pub mod conn;
#[cfg(unix)]
#[allow(unsafe_code)] // SCM_RIGHTS control messages and inherited descriptors; SAFETY notes
pub mod handover;
pub mod link;
pub mod live;
pub mod tls;
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // buffers handed to the kernel; every block has a SAFETY note
pub mod uring;
#[cfg(unix)]
#[allow(unsafe_code)] // eventfd, read/write of 8 bytes, poll; every block has a SAFETY note
pub mod wake;
pub mod worker;

pub use conn::{Conn, Ended, Limits, Phase};
