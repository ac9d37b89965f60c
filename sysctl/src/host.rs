//! Reading and writing the host's settings: the real host (per-OS modules) and an
//! in-memory one for tests.

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{key}: {why}")]
    Io { key: String, why: String },
}

pub trait Host {
    /// The value of a runtime key; `Ok(None)` when this kernel does not have it.
    fn read(&self, key: &str) -> Result<Option<String>, HostError>;
    fn write(&mut self, key: &str, value: &str) -> Result<(), HostError>;
    /// The kernel command line the host booted with.
    fn cmdline(&self) -> String;
    /// The hard limit of a resource limit of this process (`nofile`/`openfiles`).
    fn rlimit_hard(&self, name: &str) -> Option<u64>;
}

/// The machine this runs on.
#[derive(Default)]
pub struct SystemHost;

#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod imp;
#[cfg(target_os = "freebsd")]
#[path = "freebsd.rs"]
mod imp;
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
#[path = "other.rs"]
mod imp;

impl Host for SystemHost {
    fn read(&self, key: &str) -> Result<Option<String>, HostError> {
        imp::read(key)
    }
    fn write(&mut self, key: &str, value: &str) -> Result<(), HostError> {
        imp::write(key, value)
    }
    fn cmdline(&self) -> String {
        imp::cmdline()
    }
    fn rlimit_hard(&self, name: &str) -> Option<u64> {
        match name {
            "nofile" | "openfiles" => crate::process::nofile().map(|(_, hard)| hard),
            _ => None,
        }
    }
}

/// A host in memory, for tests of the planning logic.
#[derive(Clone, Debug, Default)]
pub struct MemHost {
    pub values: BTreeMap<String, String>,
    pub cmdline: String,
    pub nofile_hard: u64,
    /// Keys whose writes fail.
    pub read_only: Vec<String>,
}

impl Host for MemHost {
    fn read(&self, key: &str) -> Result<Option<String>, HostError> {
        Ok(self.values.get(key).cloned())
    }
    fn write(&mut self, key: &str, value: &str) -> Result<(), HostError> {
        if self.read_only.iter().any(|k| k == key) {
            return Err(HostError::Io {
                key: key.into(),
                why: "read-only".into(),
            });
        }
        match self.values.get_mut(key) {
            Some(v) => {
                *v = value.into();
                Ok(())
            }
            None => Err(HostError::Io {
                key: key.into(),
                why: "no such key".into(),
            }),
        }
    }
    fn cmdline(&self) -> String {
        self.cmdline.clone()
    }
    fn rlimit_hard(&self, _name: &str) -> Option<u64> {
        Some(self.nofile_hard)
    }
}
