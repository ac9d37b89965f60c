//! Rendering a profile into the files packaging ships.

use crate::profile::{Kind, Os, Profile};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Linux `/usr/lib/sysctl.d/NN-switchboard.conf`.
    SysctlD,
    /// FreeBSD `/etc/sysctl.conf`.
    SysctlConf,
    /// FreeBSD `/boot/loader.conf`.
    LoaderConf,
    /// Linux kernel command-line parameters.
    Cmdline,
    /// A systemd drop-in with the resource limits.
    Systemd,
    /// `/etc/security/limits.d/` (Linux) for the `switchboard` user.
    Limits,
    /// FreeBSD `login.conf` class.
    LoginConf,
}

impl Format {
    pub const ALL: [(&'static str, Format); 7] = [
        ("sysctl.d", Format::SysctlD),
        ("sysctl.conf", Format::SysctlConf),
        ("loader.conf", Format::LoaderConf),
        ("cmdline", Format::Cmdline),
        ("systemd", Format::Systemd),
        ("limits", Format::Limits),
        ("login.conf", Format::LoginConf),
    ];

    pub fn parse(s: &str) -> Option<Format> {
        Format::ALL.iter().find(|(n, _)| *n == s).map(|(_, f)| *f)
    }

    fn os(self) -> Os {
        match self {
            Format::SysctlD | Format::Cmdline | Format::Systemd | Format::Limits => Os::Linux,
            Format::SysctlConf | Format::LoaderConf | Format::LoginConf => Os::Freebsd,
        }
    }
}

pub fn render(p: &Profile, f: Format) -> Result<String, String> {
    if f.os() != p.os {
        return Err(format!(
            "profile {} is for {:?}; this format is for {:?}",
            p.name,
            p.os,
            f.os()
        ));
    }
    let head = format!("# Switchboard tuning profile {}: {}\n# Rendered by `switchboard tune render`; edit the profile, not this file.\n", p.name, p.description);
    let of = |k: Kind| p.entries.iter().filter(move |e| e.kind == k);
    let mut out = String::new();
    match f {
        Format::SysctlD | Format::SysctlConf => {
            out += &head;
            for e in of(Kind::Sysctl) {
                let sep = if f == Format::SysctlD { " = " } else { "=" };
                out += &format!(
                    "\n# {}\n# source: {}\n{}{sep}{}\n",
                    e.reason, e.source, e.key, e.value
                );
            }
        }
        Format::LoaderConf => {
            out += &head;
            for e in of(Kind::Loader) {
                out += &format!(
                    "\n# {}\n# source: {}\n{}=\"{}\"\n",
                    e.reason, e.source, e.key, e.value
                );
            }
        }
        Format::Cmdline => {
            out = of(Kind::Cmdline)
                .map(|e| format!("{}={}", e.key, e.value))
                .collect::<Vec<_>>()
                .join(" ");
            out.push('\n');
        }
        Format::Systemd => {
            out += &head;
            out += "[Service]\n";
            for e in of(Kind::Rlimit).filter(|e| e.key == "nofile") {
                out += &format!("# {}\nLimitNOFILE={}\n", e.reason, e.value);
            }
        }
        Format::Limits => {
            out += &head;
            for e in of(Kind::Rlimit).filter(|e| e.key == "nofile") {
                out += &format!(
                    "switchboard soft nofile {0}\nswitchboard hard nofile {0}\n",
                    e.value
                );
            }
        }
        Format::LoginConf => {
            out += &head;
            out += "switchboard:\\\n";
            for e in of(Kind::Rlimit).filter(|e| e.key == "openfiles") {
                out += &format!("\t:openfiles={}:\\\n", e.value);
            }
            out += "\t:tc=daemon:\n";
        }
    }
    Ok(out)
}
