//! The storage layer's one error type.

use std::io;
use std::path::PathBuf;

use crate::config::ConfigError;
use crate::record::EncodeError;

/// Which limit an append ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    UserMessages,
    UserBytes,
    ShardMessages,
    ShardBytes,
    Accounts,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("log directory {0} is in use by another process")]
    Locked(PathBuf),
    #[error("{path}: segment format version {version} is newer than this build reads; upgrade switchboard")]
    NewerFormat { path: PathBuf, version: u16 },
    #[error("limit reached: {limit:?} = {max}")]
    Full { limit: Limit, max: u64 },
    #[error("record of {bytes} bytes does not fit a segment (at most {max})")]
    RecordTooLarge { bytes: usize, max: usize },
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("flushing the log failed earlier ({0}); the durable position no longer advances")]
    FlushFailed(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The filesystem is nearly full: new messages and accounts are refused while less
    /// than `reserve` bytes are free; acknowledgements (erases) still go into that reserve,
    /// so recipients can read and free space.
    #[error("the disk is full: {free} bytes free, {reserve} kept for acknowledgements")]
    DiskFull { free: u64, reserve: u64 },
    /// Not even the first segment fits.
    #[error("{dir}: a segment needs {needed} bytes and the disk has {free} free; free space or lower storage.segment_bytes (the log keeps at least {reserve} free for acknowledgements beside its segments)")]
    NoSpace {
        dir: PathBuf,
        needed: u64,
        free: u64,
        reserve: u64,
    },
}

impl StorageError {
    /// True when the same request may succeed later without operator action
    /// (a queue drains, a prepared segment arrives).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StorageError::Full { .. } | StorageError::DiskFull { .. }
        )
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| StorageError::Io { op, path, source }
    }
}
