//! `serve` where the io_uring driver does not exist (FreeBSD): refused with the reason.
//! The portable driver (tokio on kqueue) named in DESIGN.md is not built yet.

use crate::config::Config;

pub fn serve(
    _config: Config,
    _source: crate::control::ConfigSource,
) -> Result<(), crate::error::Error> {
    Err(crate::error::Error::Other(
        "serve needs the io_uring gateway driver (Linux); the kqueue driver for this OS is not built yet".into(),
    ))
}
