//! FreeBSD: runtime keys through `sysctlbyname(3)`. Integers are read and written in
//! the width the kernel reports (4 or 8 bytes); anything else as a string.

use std::ffi::CString;

use crate::host::HostError;

fn err(key: &str, why: impl ToString) -> HostError {
    HostError::Io {
        key: key.into(),
        why: why.to_string(),
    }
}

pub fn read(key: &str) -> Result<Option<String>, HostError> {
    let name = CString::new(key).map_err(|e| err(key, e))?;
    let mut buf = [0u8; 512];
    let mut len: libc::size_t = buf.len();
    // SAFETY: `buf` and `len` describe a live buffer; `name` is NUL-terminated.
    let rc = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null(),
            0,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOENT) {
            Ok(None)
        } else {
            Err(err(key, e))
        };
    }
    Ok(Some(match len {
        4 => i32::from_ne_bytes(buf[..4].try_into().expect("4")).to_string(),
        8 => i64::from_ne_bytes(buf[..8].try_into().expect("8")).to_string(),
        n => String::from_utf8_lossy(&buf[..n])
            .trim_end_matches('\0')
            .to_string(),
    }))
}

pub fn write(key: &str, value: &str) -> Result<(), HostError> {
    let name = CString::new(key).map_err(|e| err(key, e))?;
    let mut cur = [0u8; 512];
    let mut len: libc::size_t = cur.len();
    // SAFETY: as in `read`.
    if unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            cur.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null(),
            0,
        )
    } != 0
    {
        return Err(err(key, std::io::Error::last_os_error()));
    }
    let bytes: Vec<u8> = match (len, value.parse::<i64>()) {
        (4, Ok(v)) => (v as i32).to_ne_bytes().to_vec(),
        (8, Ok(v)) => v.to_ne_bytes().to_vec(),
        _ => {
            let mut s = value.as_bytes().to_vec();
            s.push(0);
            s
        }
    };
    // SAFETY: `bytes` is a live buffer of the given length; nothing is read back.
    let rc = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            bytes.as_ptr().cast(),
            bytes.len(),
        )
    };
    if rc != 0 {
        return Err(err(key, std::io::Error::last_os_error()));
    }
    Ok(())
}

pub fn cmdline() -> String {
    String::new() // FreeBSD has no kernel command line; boot tunables are in loader.conf
}
