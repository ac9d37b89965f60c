//! Tuning the appliance process itself: open-files limit, realtime scheduling and CPU
//! pinning of threads, huge pages in use. Platform calls in one place, each with a
//! SAFETY note.

use std::io;

/// (soft, hard) open-files limit of this process.
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux but i64 on FreeBSD
pub fn nofile() -> Option<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: writes into a live struct.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0)
        .then_some((r.rlim_cur as u64, r.rlim_max as u64))
}

/// Raises the soft open-files limit to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> io::Result<u64> {
    let (_, hard) = nofile().ok_or_else(io::Error::last_os_error)?;
    let r = libc::rlimit {
        rlim_cur: hard as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: reads a live struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(hard)
}

/// Realtime FIFO scheduling for the calling thread (`SCHED_FIFO` on Linux, `rtprio` on
/// FreeBSD) at `priority` (1–99).
#[cfg(target_os = "linux")]
pub fn realtime(priority: u8) -> io::Result<()> {
    let p = libc::sched_param {
        sched_priority: priority as i32,
    };
    // SAFETY: 0 is the calling thread; `p` is live.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(target_os = "freebsd")]
pub fn realtime(priority: u8) -> io::Result<()> {
    // rtprio priorities run 0 (highest) to 31.
    let mut rtp = libc::rtprio {
        type_: libc::RTP_PRIO_REALTIME,
        prio: 31u16.saturating_sub(priority as u16 * 31 / 99),
    };
    // SAFETY: 0 is the calling thread; `rtp` is live.
    if unsafe { libc::rtprio_thread(libc::RTP_SET, 0, &mut rtp) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
pub fn realtime(_priority: u8) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "realtime scheduling is not supported here",
    ))
}

/// Pins the calling thread to one CPU.
#[cfg(target_os = "linux")]
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(target_os = "freebsd")]
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpuset_t is a valid empty set; CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpuset_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::cpuset_setaffinity(
            libc::CPU_LEVEL_WHICH,
            libc::CPU_WHICH_TID,
            -1,
            std::mem::size_of::<libc::cpuset_t>(),
            &set,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
pub fn pin_to_cpu(_cpu: usize) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "CPU pinning is not supported here",
    ))
}

/// Kilobytes of anonymous memory in transparent huge pages (Linux `AnonHugePages` of
/// this process); `None` where the system does not say.
pub fn anon_huge_pages_kb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    text.lines()
        .find(|l| l.starts_with("AnonHugePages:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn nofile_is_readable_and_raisable() {
        let (soft, hard) = super::nofile().unwrap();
        assert!(soft <= hard);
        assert_eq!(super::raise_nofile().unwrap(), hard);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn realtime_and_pinning_on_a_scratch_thread() {
        std::thread::spawn(|| {
            super::pin_to_cpu(0).unwrap();
            match super::realtime(10) {
                // SAFETY: reading the calling thread's policy.
                Ok(()) => assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_FIFO),
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
            }
        })
        .join()
        .unwrap();
    }
}
