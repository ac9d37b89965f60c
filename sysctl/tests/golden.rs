//! Every built-in profile rendered in every format of its OS, against golden files in
//! `tests/golden/` (`UPDATE_GOLDEN=1 cargo test -p sysctl --test golden` rewrites them
//! after a deliberate change). A format of the other OS is refused.

use sysctl::profile::BUILT_IN;
use sysctl::render::{render, Format};
use sysctl::Profile;

#[test]
fn renders_match_golden_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var("UPDATE_GOLDEN").is_ok();
    let mut checked = 0;
    for (name, _) in BUILT_IN {
        let p = Profile::load(name).unwrap();
        for (fname, f) in Format::ALL {
            let Ok(text) = render(&p, f) else { continue };
            let path = dir.join(format!("{name}.{fname}"));
            if update {
                std::fs::write(&path, &text).unwrap();
            }
            let want = std::fs::read_to_string(&path)
                .unwrap_or_else(|_| panic!("{} missing (UPDATE_GOLDEN=1)", path.display()));
            assert_eq!(text, want, "{}", path.display());
            checked += 1;
        }
    }
    assert_eq!(
        checked, 11,
        "two Linux profiles × 4 Linux formats + freebsd-2m × 3 FreeBSD formats"
    );
}

#[test]
fn a_format_of_the_other_os_is_refused() {
    let p = Profile::load("linux-1m").unwrap();
    assert!(render(&p, Format::LoaderConf)
        .unwrap_err()
        .contains("Linux"));
    let p = Profile::load("freebsd-2m").unwrap();
    assert!(render(&p, Format::SysctlD).is_err());
}

#[test]
fn key_renders_are_right() {
    let linux = Profile::load("linux-1m").unwrap();
    assert_eq!(
        render(&linux, Format::Cmdline).unwrap(),
        "thash_entries=2097152\n"
    );
    assert!(render(&linux, Format::Systemd)
        .unwrap()
        .contains("LimitNOFILE=2097152"));
    assert!(render(&linux, Format::SysctlD)
        .unwrap()
        .contains("\nnet.ipv4.tcp_child_ehash_entries = 1048576\n"));
    let bsd = Profile::load("freebsd-2m").unwrap();
    assert!(render(&bsd, Format::LoaderConf)
        .unwrap()
        .contains("\nnet.inet.tcp.tcbhashsize=\"524288\"\n"));
    assert!(render(&bsd, Format::SysctlConf)
        .unwrap()
        .contains("\nkern.maxfilesperproc=2700000\n"));
    assert!(render(&bsd, Format::LoginConf)
        .unwrap()
        .contains(":openfiles=2700000:"));
}

#[test]
fn every_profile_key_is_documented() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/TUNING.md"),
    )
    .unwrap();
    for (name, _) in BUILT_IN {
        for e in Profile::load(name).unwrap().entries {
            assert!(
                doc.contains(&format!("`{}`", e.key)),
                "{} ({name}) is not in docs/TUNING.md",
                e.key
            );
        }
    }
}
