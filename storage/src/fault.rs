//! The seam under the log's file operations where tests make the disk fail: creating a
//! segment (`ENOSPC`, a full disk or a quota), flushing a mapping (`msync`) and syncing
//! the directory (`fsync`), each by the directory it happens in, so tests in one
//! process inject into their own log only. Unarmed, a check is one relaxed atomic load.
//!
//! Not for production: nothing in the appliance arms a fault; the storage, router tests
//! do, through [`inject`] and [`clear`].

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Where a fault strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Creating a segment file and allocating its space (the first one, the preparer's,
    /// the writer's own when the preparer is late).
    CreateSegment,
    /// Flushing a mapped range to the file (`msync`): the flusher's, the rescue
    /// thread's, the writer's in `always` durability.
    Msync,
    /// Making the directory's entries durable (`fsync` on the directory).
    SyncDir,
}

struct Fault {
    dir: PathBuf,
    op: Op,
    errno: i32,
    /// Strikes left (`None`: until cleared).
    left: Option<u32>,
}

static ARMED: AtomicUsize = AtomicUsize::new(0);
static FAULTS: Mutex<Vec<Fault>> = Mutex::new(Vec::new());

/// From now on, `op` on anything under `dir` fails with `errno` (`times` times, or until
/// [`clear`]).
pub fn inject(dir: &Path, op: Op, errno: i32, times: Option<u32>) {
    let mut f = FAULTS.lock().unwrap_or_else(|p| p.into_inner());
    f.push(Fault {
        dir: dir.to_owned(),
        op,
        errno,
        left: times,
    });
    ARMED.store(f.len(), Ordering::Release);
}

/// Removes every fault injected under `dir`: the disk works again.
pub fn clear(dir: &Path) {
    let mut f = FAULTS.lock().unwrap_or_else(|p| p.into_inner());
    f.retain(|x| x.dir != dir);
    ARMED.store(f.len(), Ordering::Release);
}

/// The injected error for `op` on `path`, if any.
pub(crate) fn check(op: Op, path: &Path) -> io::Result<()> {
    if ARMED.load(Ordering::Relaxed) == 0 {
        return Ok(());
    }
    let mut f = FAULTS.lock().unwrap_or_else(|p| p.into_inner());
    let Some(i) = f
        .iter()
        .position(|x| x.op == op && path.starts_with(&x.dir))
    else {
        return Ok(());
    };
    let errno = f[i].errno;
    if let Some(left) = &mut f[i].left {
        *left -= 1;
        if *left == 0 {
            f.remove(i);
            ARMED.store(f.len(), Ordering::Release);
        }
    }
    Err(io::Error::from_raw_os_error(errno))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_strikes_its_directory_and_op_only_and_as_often_as_asked() {
        let dir = Path::new("/nonexistent/fault-test-a");
        inject(dir, Op::Msync, libc::EIO, Some(2));
        let other = Path::new("/nonexistent/fault-test-b/seg");
        assert!(check(Op::Msync, other).is_ok());
        assert!(check(Op::SyncDir, &dir.join("seg")).is_ok());
        let e = check(Op::Msync, &dir.join("seg")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        assert!(check(Op::Msync, dir).is_err());
        assert!(check(Op::Msync, dir).is_ok(), "two strikes only");
        inject(dir, Op::CreateSegment, libc::ENOSPC, None);
        for _ in 0..3 {
            assert!(check(Op::CreateSegment, dir).is_err());
        }
        clear(dir);
        assert!(check(Op::CreateSegment, dir).is_ok());
    }
}
