//! Listening sockets passed between processes: to a new binary over a Unix socket
//! (`SCM_RIGHTS`), or from systemd (socket activation, `LISTEN_FDS`). The socket itself
//! moves, with the connections waiting in its accept queue: none is refused or reset
//! while one process hands over to the next.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Most descriptors one hand-over carries (one listener per worker; workers ≤ 64).
pub const FDS_MAX: usize = 64;

/// Sends `fds` with one byte of data, `tag` (the appliance's: the sender's upgrade
/// epoch), over `sock`.
pub fn send_fds(sock: &UnixStream, fds: &[RawFd], tag: u8) -> io::Result<()> {
    if fds.is_empty() || fds.len() > FDS_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} descriptors (1 to {FDS_MAX})", fds.len()),
        ));
    }
    let bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE/CMSG_LEN only compute sizes.
    let (space, len) = unsafe { (libc::CMSG_SPACE(bytes as u32), libc::CMSG_LEN(bytes as u32)) };
    let mut control = vec![0u8; space as usize];
    let mut byte = [tag];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: `iov` and `control` outlive the call; the control buffer is CMSG_SPACE
    // bytes, enough for one header and `fds`.
    let msg = message(&mut iov, &mut control);
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = len as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), bytes);
        if libc::sendmsg(sock.as_raw_fd(), &msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A message of one data buffer (`iov`) and a control buffer, for `sendmsg`/`recvmsg`.
/// Both must outlive its use.
fn message(iov: &mut libc::iovec, control: &mut [u8]) -> libc::msghdr {
    // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    msg
}

/// Receives descriptors sent by [`send_fds`] (owned: closed on drop), and the tag.
pub fn recv_fds(sock: &UnixStream) -> io::Result<(Vec<OwnedFd>, u8)> {
    let bytes = FDS_MAX * std::mem::size_of::<RawFd>();
    // SAFETY: only computes a size.
    let space = unsafe { libc::CMSG_SPACE(bytes as u32) };
    let mut control = vec![0u8; space as usize];
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut out = vec![];
    // SAFETY: as in `send_fds`; the kernel fills at most `space` bytes of control data,
    // and each descriptor it passed is new in this process and owned from here on.
    let mut msg = message(&mut iov, &mut control);
    unsafe {
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    out.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other("descriptors were truncated"));
        }
    }
    if out.is_empty() {
        return Err(io::Error::other("the peer sent no descriptors"));
    }
    Ok((out, byte[0]))
}

/// Listeners systemd passed (socket activation: `LISTEN_PID` is this process,
/// `LISTEN_FDS` descriptors from 3). The variables are removed so children do not
/// take them too. Empty when not socket-activated.
pub fn systemd_listeners() -> Vec<TcpListener> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let n: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // SAFETY: called before any thread starts (the appliance does so at start).
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if !ours || !(1..=FDS_MAX as i32).contains(&n) {
        return vec![];
    }
    (3..3 + n)
        .map(|fd| {
            // SAFETY: systemd passed descriptors 3..3+n to this process for it to own.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: setting FD_CLOEXEC on a descriptor we own.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            TcpListener::from(owned)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_crosses_a_unix_socket_with_its_waiting_connection() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // A client connects before the hand-over: it waits in the accept queue.
        let _early = std::net::TcpStream::connect(addr).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        send_fds(&a, &[l.as_raw_fd()], 3).unwrap();
        drop(l); // the old side's copy goes; the socket lives on in the new one
        let (got, tag) = recv_fds(&b).unwrap();
        assert_eq!((got.len(), tag), (1, 3));
        let l2 = TcpListener::from(got.into_iter().next().unwrap());
        assert_eq!(l2.local_addr().unwrap(), addr);
        let (_conn, _) = l2.accept().unwrap(); // the early client, not reset
        assert!(send_fds(&a, &[], 0).is_err());
    }
}
