//! Tuning profiles: the values `sluice tune` checks against and `apply` sets. Two ship in
//! `tuning/profiles/` (compiled in); an operator may pass a file of the same form.
//!
//! Invariant: a key a profile leaves out is never changed by `apply`, and its check reports
//! the current value as acceptable.

use std::path::Path;

use serde::Deserialize;

/// The shipped profiles: (name, TOML text).
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "dedicated-nvme",
        include_str!("../profiles/dedicated-nvme.toml"),
    ),
    ("shared-host", include_str!("../profiles/shared-host.toml")),
];

/// The profile `sluice tune` uses unless told otherwise: the bare-metal deployment it is for.
pub const DEFAULT_PROFILE: &str = "dedicated-nvme";

/// Largest profile file read (they are a screenful).
const PROFILE_BYTES_MAX: u64 = 64 << 10;

const THP_ENABLED: &[&str] = &["always", "madvise", "never"];
const THP_DEFRAG: &[&str] = &["always", "defer", "defer+madvise", "madvise", "never"];

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// What host the profile is for.
    pub description: String,
    /// `vm.swappiness`: at most this.
    pub vm_swappiness: Option<u32>,
    /// `fs.aio-max-nr`: at least this.
    pub fs_aio_max_nr: Option<u64>,
    /// `fs.nr_open`: at least this.
    pub fs_nr_open: Option<u64>,
    /// RLIMIT_NOFILE: at least this (set by the service manager, never by `apply`).
    pub nofile: Option<u64>,
    /// `/sys/kernel/mm/transparent_hugepage/enabled`.
    pub transparent_hugepage: Option<String>,
    /// `/sys/kernel/mm/transparent_hugepage/defrag`.
    pub transparent_hugepage_defrag: Option<String>,
    /// `scaling_governor` of every shard core.
    pub cpu_governor: Option<String>,
    /// `current_clocksource` (checked only).
    pub clocksource: Option<String>,
    /// The data device's `queue/scheduler`.
    pub io_scheduler: Option<String>,
    /// The data device's `queue/nomerges` (0, 1 or 2).
    pub io_nomerges: Option<u32>,
    /// NIC interrupts only on `placement.reserved_cores`.
    pub nic_irqs_on_reserved_cores: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "profile {name:?}: no such built-in profile ({}) and no such file",
        builtin_names()
    )]
    Unknown { name: String },
    #[error("profile {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("profile {name}: {message}")]
    Invalid { name: String, message: String },
}

fn builtin_names() -> String {
    BUILTIN
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A built-in profile by name, or a profile file by path. Returns the name shown in
/// reports and the profile.
pub fn load(name_or_path: &str) -> Result<(String, Profile), ProfileError> {
    if let Some((name, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
        return parse(name, text).map(|p| (name.to_string(), p));
    }
    let path = Path::new(name_or_path);
    if !path.exists() {
        return Err(ProfileError::Unknown {
            name: name_or_path.into(),
        });
    }
    let text = crate::sysroot::read_bounded_limit(path, PROFILE_BYTES_MAX).map_err(|source| {
        ProfileError::Read {
            path: path.display().to_string(),
            source,
        }
    })?;
    let name = path.display().to_string();
    parse(&name, &text).map(|p| (name, p))
}

/// Parses and validates a profile's TOML; errors name the key.
pub fn parse(name: &str, text: &str) -> Result<Profile, ProfileError> {
    let invalid = |message: String| ProfileError::Invalid {
        name: name.into(),
        message,
    };
    let p: Profile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    one_of("transparent_hugepage", &p.transparent_hugepage, THP_ENABLED).map_err(invalid)?;
    one_of(
        "transparent_hugepage_defrag",
        &p.transparent_hugepage_defrag,
        THP_DEFRAG,
    )
    .map_err(invalid)?;
    if let Some(s) = p.vm_swappiness.filter(|&s| s > 200) {
        return Err(invalid(format!("vm_swappiness: {s} is above 200")));
    }
    if let Some(n) = p.io_nomerges.filter(|&n| n > 2) {
        return Err(invalid(format!("io_nomerges: {n} is not 0, 1 or 2")));
    }
    for (key, v) in [
        ("cpu_governor", &p.cpu_governor),
        ("clocksource", &p.clocksource),
        ("io_scheduler", &p.io_scheduler),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !is_knob_word(v)) {
            return Err(invalid(format!("{key}: {v:?} is not a kernel choice word")));
        }
    }
    Ok(p)
}

fn one_of(key: &str, v: &Option<String>, allowed: &[&str]) -> Result<(), String> {
    match v.as_deref() {
        Some(v) if !allowed.contains(&v) => Err(format!("{key}: {v:?} is not one of {allowed:?}")),
        _ => Ok(()),
    }
}

/// Knob values are written into sysfs: only plain words (`mq-deadline`, `performance`).
fn is_knob_word(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'+')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse() {
        for (name, _) in BUILTIN {
            let (n, p) = load(name).unwrap();
            assert_eq!(n, *name);
            assert!(!p.description.is_empty());
        }
        let (_, p) = load("dedicated-nvme").unwrap();
        assert_eq!(p.io_scheduler.as_deref(), Some("none"));
        assert_eq!(p.nic_irqs_on_reserved_cores, Some(true));
        let (_, p) = load("shared-host").unwrap();
        assert_eq!(p.cpu_governor, None);
    }

    #[test]
    fn bad_profiles_name_the_key() {
        let err = |t: &str| parse("p", t).unwrap_err().to_string();
        assert!(err("description = \"x\"\nbogus = 1").contains("bogus"));
        assert!(
            err("description = \"x\"\ntransparent_hugepage = \"sometimes\"")
                .contains("transparent_hugepage")
        );
        assert!(err("description = \"x\"\nio_nomerges = 3").contains("io_nomerges"));
        assert!(err("description = \"x\"\nvm_swappiness = 300").contains("vm_swappiness"));
        assert!(
            err("description = \"x\"\nio_scheduler = \"none; reboot\"").contains("io_scheduler")
        );
        assert!(load("no-such-profile")
            .unwrap_err()
            .to_string()
            .contains("dedicated-nvme"));
    }
}
