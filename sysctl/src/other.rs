//! Other systems: nothing to read or write.

use crate::host::HostError;

pub fn read(_key: &str) -> Result<Option<String>, HostError> {
    Ok(None)
}

pub fn write(key: &str, _value: &str) -> Result<(), HostError> {
    Err(HostError::Io {
        key: key.into(),
        why: "not supported on this system".into(),
    })
}

pub fn cmdline() -> String {
    String::new()
}
