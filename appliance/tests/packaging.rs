//! What packaging ships stays in step with the sources: the FreeBSD port's rendered
//! tuning files are exactly what `switchboard tune render freebsd-2m` produces, and the
//! shipped configs validate.

use std::path::Path;

use sysctl::render::{render, Format};
use sysctl::Profile;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn freebsd_port_files_match_the_profile() {
    let p = Profile::load("freebsd-2m").unwrap();
    for (file, f) in [
        ("loader.conf", Format::LoaderConf),
        ("sysctl.conf", Format::SysctlConf),
        ("login.conf", Format::LoginConf),
    ] {
        let shipped = std::fs::read_to_string(
            root().join(format!("packaging/freebsd/files/{file}.switchboard")),
        )
        .unwrap();
        assert_eq!(
            shipped,
            render(&p, f).unwrap(),
            "packaging/freebsd/files/{file}.switchboard is stale: re-render it"
        );
    }
}

#[test]
fn shipped_configs_validate() {
    for path in [
        "packaging/deb/etc/switchboard.toml",
        "packaging/freebsd/files/switchboard.toml.sample",
    ] {
        let c =
            switchboard::config::Config::load(&root().join(path)).unwrap_or_else(|e| panic!("{e}"));
        c.validate().unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}
