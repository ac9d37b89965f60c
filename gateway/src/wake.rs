//! What threads outside the io_uring driver use to wait and wake (Unix): an eventfd
//! that is rung when something is queued for its owner, a `poll` on a socket and such an
//! eventfd together (the link threads), and the `SO_REUSEPORT` listener every worker
//! binds. Portable: Linux and FreeBSD (13 and later have `eventfd`).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

/// A `SO_REUSEPORT` listener: every worker binds its own on the same address.
pub fn reuseport_listener(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    Ok(s.into())
}

/// An eventfd, as `crate::link::WorkerLink::wake` and the link queues use.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the descriptor is owned from here on.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Rings an eventfd: wakes a worker blocked in its ring, or a link thread in `poll_two`.
pub fn wake(fd: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live buffer to an eventfd.
    unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8) };
}

/// Waits until `fd` is ready for `events` (POLLIN/POLLOUT) or `wake` is readable, at most
/// `timeout_ms`. Returns (revents of `fd`, whether `wake` fired). For link threads,
/// which wait on a socket and on an eventfd rung by whoever queues a frame for them.
pub fn poll_two(fd: RawFd, events: i16, wake: RawFd, timeout_ms: i32) -> io::Result<(i16, bool)> {
    let mut fds = [
        libc::pollfd {
            fd,
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: wake,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a live array of two pollfd for the duration of the call.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok((0, false))
        } else {
            Err(e)
        };
    }
    Ok((fds[0].revents, fds[1].revents & libc::POLLIN != 0))
}

/// Resets an eventfd rung by [`wake`].
pub fn drain_eventfd(fd: &OwnedFd) {
    let mut b = [0u8; 8];
    // SAFETY: reads 8 bytes into a live buffer from our (non-blocking) eventfd.
    unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
}
