//! Profiles: tuning as data. One TOML file per OS and size (`sysctl/profiles/`), built
//! into the binary and also loadable from a path.

use serde::Deserialize;

/// When an entry takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A runtime sysctl (`/proc/sys` on Linux, `sysctlbyname` on FreeBSD).
    Sysctl,
    /// A FreeBSD boot-time tunable (`/boot/loader.conf`).
    Loader,
    /// A Linux kernel command-line parameter.
    Cmdline,
    /// A resource limit of the appliance process (`nofile` / `openfiles`).
    Rlimit,
}

/// How the host value must relate to the profile value (field by field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Cmp {
    /// Host ≥ profile (the default for numbers).
    #[default]
    Min,
    /// Host ≤ profile.
    Max,
    /// Equal.
    Exact,
    /// Two fields `lo hi`: the host range contains the profile range.
    Range,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub key: String,
    pub value: String,
    #[serde(default = "sysctl_kind")]
    pub kind: Kind,
    #[serde(default)]
    pub cmp: Cmp,
    /// One line: why.
    pub reason: String,
    /// Where the figure comes from.
    pub source: String,
}

fn sysctl_kind() -> Kind {
    Kind::Sysctl
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Os {
    Linux,
    Freebsd,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub os: Os,
    pub description: String,
    #[serde(rename = "entry")]
    pub entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{0}: no such profile file, and not a built-in profile ({1})")]
    NotFound(String, String),
    #[error("{path}: {why}")]
    Invalid { path: String, why: String },
}

/// The profiles shipped in the binary.
pub const BUILT_IN: [(&str, &str); 3] = [
    ("linux-dev", include_str!("../profiles/linux-dev.toml")),
    ("linux-1m", include_str!("../profiles/linux-1m.toml")),
    ("freebsd-2m", include_str!("../profiles/freebsd-2m.toml")),
];

impl Profile {
    /// A built-in profile by name, or a TOML file by path.
    pub fn load(name_or_path: &str) -> Result<Profile, ProfileError> {
        if let Some((_, text)) = BUILT_IN.iter().find(|(n, _)| *n == name_or_path) {
            return Profile::parse(text, name_or_path);
        }
        let text = std::fs::read_to_string(name_or_path).map_err(|_| {
            ProfileError::NotFound(
                name_or_path.into(),
                BUILT_IN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })?;
        Profile::parse(&text, name_or_path)
    }

    pub fn parse(text: &str, path: &str) -> Result<Profile, ProfileError> {
        let bad = |why: String| ProfileError::Invalid {
            path: path.into(),
            why,
        };
        let p: Profile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        for e in &p.entries {
            let fits = match (p.os, e.kind) {
                (Os::Linux, Kind::Loader) | (Os::Freebsd, Kind::Cmdline) => false,
                (Os::Linux, Kind::Sysctl) => {
                    !e.key.starts_with("kern.") && !e.key.starts_with("net.inet.")
                }
                (Os::Freebsd, Kind::Sysctl) => {
                    !e.key.starts_with("net.ipv4.")
                        && !e.key.starts_with("fs.")
                        && !e.key.starts_with("vm.nr_")
                }
                _ => true,
            };
            if !fits {
                return Err(bad(format!(
                    "{}: a {:?} entry does not belong in a {:?} profile",
                    e.key, e.kind, p.os
                )));
            }
            if e.cmp == Cmp::Range && e.value.split_whitespace().count() != 2 {
                return Err(bad(format!("{}: cmp = \"range\" needs two fields", e.key)));
            }
            if e.key.is_empty() || e.key.contains(['/', ' ', '=']) {
                return Err(bad(format!("{:?}: not a key", e.key)));
            }
        }
        let mut keys: Vec<&str> = p.entries.iter().map(|e| e.key.as_str()).collect();
        keys.sort_unstable();
        if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
            return Err(bad(format!("{}: listed twice", w[0])));
        }
        Ok(p)
    }
}

/// Whether `host` satisfies `want` under `cmp`. Values are compared field by field as
/// numbers where both are numbers, else as whitespace-normalised text.
pub fn satisfies(host: &str, want: &str, cmp: Cmp) -> bool {
    let h: Vec<&str> = host.split_whitespace().collect();
    let w: Vec<&str> = want.split_whitespace().collect();
    let nums = |v: &[&str]| {
        v.iter()
            .map(|s| s.parse::<i128>().ok())
            .collect::<Option<Vec<_>>>()
    };
    match (nums(&h), nums(&w)) {
        (Some(h), Some(w)) if h.len() == w.len() => match cmp {
            Cmp::Min => h.iter().zip(&w).all(|(a, b)| a >= b),
            Cmp::Max => h.iter().zip(&w).all(|(a, b)| a <= b),
            Cmp::Exact => h == w,
            Cmp::Range => h.len() == 2 && h[0] <= w[0] && h[1] >= w[1],
        },
        _ => h == w,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_profiles_parse() {
        for (name, _) in BUILT_IN {
            let p = Profile::load(name).unwrap();
            assert_eq!(p.name, name);
            assert!(!p.entries.is_empty());
        }
    }

    #[test]
    fn comparisons() {
        assert!(satisfies("8192", "4096", Cmp::Min));
        assert!(!satisfies("1024", "4096", Cmp::Min));
        assert!(satisfies("4096 4096 16384", "4096 4096 65536", Cmp::Max));
        assert!(!satisfies(
            "4096 131072 33554432",
            "4096 4096 65536",
            Cmp::Max
        ));
        assert!(satisfies("1024 65535", "1024 65535", Cmp::Range));
        assert!(!satisfies("32768 60999", "1024 65535", Cmp::Range));
        assert!(satisfies("-1", "-1", Cmp::Exact));
        assert!(!satisfies("950000", "-1", Cmp::Exact));
        assert!(
            !satisfies("4096 4096", "4096 4096 4096", Cmp::Min),
            "field counts differ"
        );
    }

    #[test]
    fn keys_of_another_os_are_refused() {
        let text = "name = \"x\"\nos = \"linux\"\ndescription = \"\"\n[[entry]]\nkey = \"kern.maxfiles\"\nvalue = \"1\"\nreason = \"\"\nsource = \"\"\n";
        let e = Profile::parse(text, "x.toml").unwrap_err();
        assert!(e.to_string().contains("kern.maxfiles"), "{e}");
        let dup = "name = \"x\"\nos = \"linux\"\ndescription = \"\"\n[[entry]]\nkey = \"a.b\"\nvalue = \"1\"\nreason = \"\"\nsource = \"\"\n[[entry]]\nkey = \"a.b\"\nvalue = \"2\"\nreason = \"\"\nsource = \"\"\n";
        assert!(Profile::parse(dup, "x.toml")
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }
}
