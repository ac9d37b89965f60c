//! Segment files and their mappings, and the lock on a log directory. Its `unsafe`
//! turns the mapping into byte slices (the crate's other `unsafe` is named in lib.rs).
//!
//! Why this is sound: a [`Segment`] maps a file that this process created or opened in
//! a directory it holds an exclusive lock on ([`DirLock`]), and never truncates. Bytes are
//! written only through `&mut Segment`, read through `&Segment`, so Rust's borrow rules
//! keep readers and the writer apart. Other threads (the flusher) hold the mapping only
//! to call `msync` on it and never form references into it. A file truncated behind
//! our back by another program would raise SIGBUS, as with any mapped file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::MmapRaw;

use crate::types::SegmentId;

pub(crate) struct Segment {
    pub id: SegmentId,
    pub path: PathBuf,
    map: Arc<MmapRaw>,
    /// Whether `MADV_POPULATE_WRITE` pre-faulted the mapping.
    pub prefaulted: bool,
}

/// Bytes an unprivileged writer may still allocate on the filesystem holding `dir`
/// (`statvfs`: available blocks × fragment size).
pub(crate) fn free_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
    // SAFETY: an all-zero `statvfs` is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a live, writable struct.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Whether an I/O error is the filesystem being full.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC)
}

/// The name a segment is prepared under before the writer starts it.
pub(crate) fn staged_name(id: SegmentId) -> String {
    format!("{}.prep", id.file_name())
}

/// The segment a name made by [`staged_name`] is for.
pub(crate) fn staged_id(name: &str) -> Option<SegmentId> {
    name.strip_suffix(".prep")
        .and_then(SegmentId::from_file_name)
}

/// Makes the directory's entries durable (`fsync` on the directory).
pub(crate) fn sync_directory(dir: &Path) -> io::Result<()> {
    crate::fault::check(crate::fault::Op::SyncDir, dir)?;
    File::open(dir)?.sync_all()
}

impl Segment {
    /// Creates, preallocates and maps a new segment of `bytes`, all zeros, under its
    /// own name. For the log's first segment and for a segment the writer makes itself
    /// because the preparer is late ([`Segment::stage`] is the usual way).
    /// `sync_dir`: make the directory entry durable now (`durability = "always"`, and
    /// the log's first segment); in `group` mode the flusher does it before anything in
    /// the segment is reported durable, and `none` promises nothing across a machine
    /// crash. (A directory sync waits for the file system's journal, which in `none`
    /// mode can mean the writeback of everything dirty: it must not hold up the next
    /// segment.)
    pub fn create(
        dir: &Path,
        id: SegmentId,
        bytes: u64,
        prefault: bool,
        sync_dir: bool,
    ) -> io::Result<Segment> {
        let seg = Segment::make(dir.join(id.file_name()), id, bytes, prefault)?;
        if sync_dir {
            if let Err(e) = sync_directory(dir) {
                let _ = std::fs::remove_file(&seg.path);
                return Err(e);
            }
        }
        Ok(seg)
    }

    /// Creates a segment like [`Segment::create`] but under a staging name
    /// (`<id>.seg.prep`) that recovery neither reads nor keeps: the preparer thread makes
    /// the next segment this way, and the writer [`Segment::install`]s it when it starts
    /// it. The writer may instead make that segment itself when the preparer is late;
    /// the staged file is then simply removed, never confused with the real one.
    pub fn stage(dir: &Path, id: SegmentId, bytes: u64, prefault: bool) -> io::Result<Segment> {
        Segment::make(dir.join(staged_name(id)), id, bytes, prefault)
    }

    /// Unmaps and removes a segment that was never started (a staged one).
    pub fn discard(self) {
        let path = self.path.clone();
        drop(self);
        let _ = std::fs::remove_file(path);
    }

    /// Gives a staged segment its real name (`sync_dir`: as for [`Segment::create`]).
    pub fn install(&mut self, dir: &Path, sync_dir: bool) -> io::Result<()> {
        let path = dir.join(self.id.file_name());
        std::fs::rename(&self.path, &path)?;
        self.path = path;
        if sync_dir {
            sync_directory(dir)?;
        }
        Ok(())
    }

    fn make(path: PathBuf, id: SegmentId, bytes: u64, prefault: bool) -> io::Result<Segment> {
        crate::fault::check(crate::fault::Op::CreateSegment, &path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let map = match preallocate(&file, bytes).and_then(|()| MmapRaw::map_raw(&file)) {
            Ok(map) => map,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        let prefaulted = prefault && populate_write(&map);
        Ok(Segment {
            id,
            path,
            map: Arc::new(map),
            prefaulted,
        })
    }

    /// Maps an existing segment file for recovery. A file shorter than `min_bytes` (cut
    /// short by a crash or by hand) is first extended with zeros to that size, so what
    /// is left of it can be read and appended to.
    pub fn open(path: &Path, id: SegmentId, min_bytes: u64) -> io::Result<Segment> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let mut len = file.metadata()?.len();
        if len > u32::MAX as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("segment file is {len} bytes, over the 4 GiB a position can address"),
            ));
        }
        if len < min_bytes || len % 8 != 0 {
            len = min_bytes.max(len.next_multiple_of(8));
            file.set_len(len)?;
        }
        let map = MmapRaw::map_raw(&file)?;
        Ok(Segment {
            id,
            path: path.to_owned(),
            map: Arc::new(map),
            prefaulted: false,
        })
    }

    /// Maps every page now (`MADV_POPULATE_READ`) so a full scan takes no page faults.
    /// Best effort: where the kernel lacks it, pages fault in as they are read.
    pub fn populate_read(&self) {
        #[cfg(target_os = "linux")]
        let _ = self.map.advise(memmap2::Advice::PopulateRead);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len()` bytes, valid while `self.map` lives, and no
        // `&mut` to it exists while `&self` is borrowed (see the module docs).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.map.len()) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr(), self.map.len()) }
    }

    /// Flushes `[from, to)` to the file (`msync`, synchronous).
    pub fn flush(&self, from: usize, to: usize) -> io::Result<()> {
        crate::fault::check(crate::fault::Op::Msync, &self.path)?;
        flush_map(&self.map, from, to)
    }

    /// The mapping, for the flusher thread (which only calls [`flush_map`] on it).
    pub fn shared_map(&self) -> Arc<MmapRaw> {
        Arc::clone(&self.map)
    }
}

pub(crate) fn flush_map(map: &MmapRaw, from: usize, to: usize) -> io::Result<()> {
    if to > from {
        map.flush_range(from, to - from)
    } else {
        Ok(())
    }
}

fn preallocate(file: &File, bytes: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we own.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, bytes as libc::off_t) };
    match rc {
        0 => Ok(()),
        // Filesystems without preallocation (ZFS, tmpfs on some kernels): sparse file.
        libc::EINVAL | libc::EOPNOTSUPP => file.set_len(bytes),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

#[cfg(target_os = "linux")]
fn populate_write(map: &MmapRaw) -> bool {
    map.advise(memmap2::Advice::PopulateWrite).is_ok()
}

#[cfg(not(target_os = "linux"))]
fn populate_write(_map: &MmapRaw) -> bool {
    false
}

/// An exclusive `flock` on `DIR/LOCK`: one process per log directory.
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> io::Result<DirLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))?;
        // SAFETY: plain syscall on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(DirLock { _file: file })
    }
}
