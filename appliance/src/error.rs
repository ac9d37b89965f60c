//! What stops a role from starting or running, by kind: the configuration is refused
//! (exit status 2, as `--check`), a shard's log cannot be opened (its storage error kept,
//! so callers decide by kind, never by text), or something else, said in words.

use std::net::SocketAddr;

use storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is refused; the message names the field.
    #[error("{0}")]
    Config(String),
    /// Shard `shard`'s log could not be opened.
    #[error("shard {shard}: {source}")]
    Shard {
        shard: u16,
        #[source]
        source: StorageError,
    },
    /// A file, a socket or a thread could not be had.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The admin API's address is taken (by default, perhaps by another appliance on
    /// the host: a warning then, not a stop).
    #[error("admin.listen {addr}: {why}")]
    AdminBind { addr: SocketAddr, why: String },
    /// Anything else, said in words.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// An I/O error on `what` (a path, a thread's name).
    pub fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.to_string();
        move |source| Error::Io { what, source }
    }

    /// A shard's log is held by another process (a process handing over still holds it).
    pub fn is_log_locked(&self) -> bool {
        matches!(
            self,
            Error::Shard {
                source: StorageError::Locked(_),
                ..
            }
        )
    }

    /// The process exit status: 2 for a refused configuration, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => 2,
            _ => 1,
        }
    }
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error::Other(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Error::Other(s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_log_is_known_by_its_kind_not_its_words() {
        let locked = Error::Shard {
            shard: 3,
            source: StorageError::Locked("/data/log-3".into()),
        };
        assert!(locked.is_log_locked());
        assert_eq!(locked.exit_code(), 1);
        assert!(locked.to_string().starts_with("shard 3: "), "{locked}");
        let other = Error::Shard {
            shard: 3,
            source: StorageError::FlushFailed("EIO".into()),
        };
        assert!(!other.is_log_locked());
        // Words alone never make a locked log.
        assert!(!Error::from("log directory /x is in use by another process").is_log_locked());
        assert_eq!(Error::Config("workers: at most 64".into()).exit_code(), 2);
    }
}
