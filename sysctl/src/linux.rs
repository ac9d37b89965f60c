//! Linux: runtime keys are files under `/proc/sys` (dots become slashes).

use std::path::PathBuf;

use crate::host::HostError;

fn path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

pub fn read(key: &str) -> Result<Option<String>, HostError> {
    match std::fs::read_to_string(path(key)) {
        Ok(v) => Ok(Some(v.split_whitespace().collect::<Vec<_>>().join(" "))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HostError::Io {
            key: key.into(),
            why: e.to_string(),
        }),
    }
}

pub fn write(key: &str, value: &str) -> Result<(), HostError> {
    std::fs::write(path(key), format!("{value}\n")).map_err(|e| HostError::Io {
        key: key.into(),
        why: e.to_string(),
    })
}

pub fn cmdline() -> String {
    std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
}
