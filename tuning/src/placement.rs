//! Which CPUs run shards: the `cores` and `reserved_cores` settings of `[placement]`,
//! checked against the CPUs the host has online and this process may run on.
//!
//! Invariants: the resolved shard cores are non-empty, disjoint from the reserved cores,
//! and (when shards are pinned) each one is online and in the process's affinity mask;
//! reserved cores are online. Resolution is a pure function of its inputs, so the same
//! config on the same host always yields the same cores, in ascending order.

use std::fmt;

use crate::cpuset::{CpuListError, CpuSet, CPU_MAX};
use crate::sysroot::SysRoot;

/// The `cores` setting as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreSpec {
    /// Every usable CPU that is not reserved.
    All,
    /// The first N usable CPUs that are not reserved (a TOML integer).
    Count(usize),
    /// Exactly these CPUs (`"2-15"`, `"1,3,5-7"`).
    List(CpuSet),
}

impl CoreSpec {
    /// Parses the string form: `all` or a CPU list. (A count is a TOML integer, so `"4"`
    /// stays CPU 4, as `--cores 4` always meant.)
    pub fn parse(text: &str) -> Result<CoreSpec, CpuListError> {
        if text.trim() == "all" {
            return Ok(CoreSpec::All);
        }
        CpuSet::parse_list(text).map(CoreSpec::List)
    }

    /// The TOML forms: a string (`"all"`, `"2-15"`) or an integer (a count).
    pub fn from_toml(value: &toml::Value) -> Result<CoreSpec, CoreSpecError> {
        match value {
            toml::Value::Integer(n) => CoreSpec::count(*n),
            toml::Value::String(s) => Ok(CoreSpec::parse(s)?),
            other => Err(CoreSpecError::NotASpec(other.to_string())),
        }
    }

    /// A core count; zero and more than `CPU_MAX + 1` are refused.
    pub fn count(n: i64) -> Result<CoreSpec, CoreSpecError> {
        match usize::try_from(n) {
            Ok(n) if (1..=CPU_MAX + 1).contains(&n) => Ok(CoreSpec::Count(n)),
            _ => Err(CoreSpecError::Count(n)),
        }
    }
}

/// Why a `cores` setting is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreSpecError {
    #[error("a core count must be between 1 and {max}, not {0}", max = CPU_MAX + 1)]
    Count(i64),
    #[error(transparent)]
    List(#[from] CpuListError),
    /// A TOML value of another kind (shown as TOML writes it).
    #[error("{0} is not \"all\", a core count or a CPU list such as \"2-15\"")]
    NotASpec(String),
}

impl fmt::Display for CoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreSpec::All => f.write_str("all"),
            CoreSpec::Count(n) => write!(f, "{n}"),
            CoreSpec::List(set) => write!(f, "{set}"),
        }
    }
}

/// The CPUs of a host that placement can choose from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCpus {
    /// `/sys/devices/system/cpu/online`.
    pub online: CpuSet,
    /// The process's affinity mask (systemd `CPUAffinity=`, `taskset`), within `online`.
    pub allowed: CpuSet,
}

impl HostCpus {
    /// Reads the online CPUs under `root`; the affinity mask is this process's when `root`
    /// is the host, else all online CPUs (a fake tree has no processes).
    pub fn read(root: &SysRoot) -> Result<HostCpus, PlacementError> {
        let path = "/sys/devices/system/cpu/online";
        let text = root
            .read(path)
            .map_err(|e| PlacementError::Host(format!("reading {path}: {e}")))?;
        let online =
            CpuSet::parse_list(&text).map_err(|e| PlacementError::Host(format!("{path}: {e}")))?;
        let allowed = match root.is_host().then(process_affinity).flatten() {
            Some(mask) => mask.intersection(&online),
            None => online.clone(),
        };
        Ok(HostCpus { online, allowed })
    }
}

/// The CPUs this process may run on (`sched_getaffinity`), or `None` if it cannot tell.
fn process_affinity() -> Option<CpuSet> {
    // SAFETY: cpu_set_t is plain data for which all zeroes is the empty set.
    let mut mask: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer and size describe `mask`, which outlives the call.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&mask), &mut mask) };
    if rc != 0 {
        return None;
    }
    let bits = (8 * std::mem::size_of_val(&mask)).min(CPU_MAX + 1);
    // SAFETY: CPU_ISSET reads one bit of `mask`; `cpu` is below the set's size in bits.
    Some(
        (0..bits)
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &mask) })
            .collect(),
    )
}

/// Where shards run, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// One shard per CPU, in ascending order (shard i runs on the i-th).
    pub shard_cores: CpuSet,
    /// Kept free of shards, e.g. for NIC interrupts.
    pub reserved_cores: CpuSet,
}

/// What `resolve` needs besides the host.
#[derive(Debug, Clone)]
pub struct PlacementConfig<'a> {
    pub cores: &'a CoreSpec,
    /// The key `cores` came from (`placement.cores`, `cores`, `--cores`): errors name it.
    pub cores_field: &'a str,
    pub reserved: &'a CpuSet,
    /// Shards are pinned: listed CPUs must be online and allowed. Unpinned, a list only
    /// sets how many shards run.
    pub pinned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("{field}: CPU {cpus} not online (online: {online})")]
    NotOnline {
        field: String,
        cpus: CpuSet,
        online: CpuSet,
    },
    #[error(
        "{field}: CPU {cpus} not in this process's CPU affinity (allowed: {allowed}; see \
         CPUAffinity= in the systemd unit or taskset)"
    )]
    NotAllowed {
        field: String,
        cpus: CpuSet,
        allowed: CpuSet,
    },
    #[error("{field}: CPU {cpus} also in placement.reserved_cores")]
    Overlap { field: String, cpus: CpuSet },
    #[error("placement.reserved_cores: {reserved} leaves no CPU for shards (usable: {usable})")]
    NoneLeft { reserved: CpuSet, usable: CpuSet },
    #[error("{field}: {asked} cores asked, only {} usable CPUs are not reserved ({available})", available.len())]
    TooMany {
        field: String,
        asked: usize,
        available: CpuSet,
    },
    #[error("online CPUs: {0}")]
    Host(String),
}

/// Resolves `cores` and `reserved_cores` against the host's CPUs.
pub fn resolve(config: &PlacementConfig<'_>, host: &HostCpus) -> Result<Placement, PlacementError> {
    let field = config.cores_field.to_string();
    let reserved = config.reserved.clone();
    let absent = reserved.difference(&host.online);
    if !absent.is_empty() {
        return Err(PlacementError::NotOnline {
            field: "placement.reserved_cores".into(),
            cpus: absent,
            online: host.online.clone(),
        });
    }
    let usable = host.allowed.difference(&reserved);
    let shard_cores = match config.cores {
        CoreSpec::All if usable.is_empty() => {
            return Err(PlacementError::NoneLeft {
                reserved,
                usable: host.allowed.clone(),
            })
        }
        CoreSpec::All => usable,
        CoreSpec::Count(n) if *n > usable.len() => {
            return Err(PlacementError::TooMany {
                field,
                asked: *n,
                available: usable,
            })
        }
        CoreSpec::Count(n) => usable.iter().take(*n).collect(),
        CoreSpec::List(list) => check_list(list, &field, config, host)?,
    };
    Ok(Placement {
        shard_cores,
        reserved_cores: reserved,
    })
}

fn check_list(
    list: &CpuSet,
    field: &str,
    config: &PlacementConfig<'_>,
    host: &HostCpus,
) -> Result<CpuSet, PlacementError> {
    let shared = list.intersection(config.reserved);
    if !shared.is_empty() {
        return Err(PlacementError::Overlap {
            field: field.into(),
            cpus: shared,
        });
    }
    if config.pinned {
        let absent = list.difference(&host.online);
        if !absent.is_empty() {
            return Err(PlacementError::NotOnline {
                field: field.into(),
                cpus: absent,
                online: host.online.clone(),
            });
        }
        let denied = list.difference(&host.allowed);
        if !denied.is_empty() {
            return Err(PlacementError::NotAllowed {
                field: field.into(),
                cpus: denied,
                allowed: host.allowed.clone(),
            });
        }
    }
    Ok(list.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(online: &str, allowed: &str) -> HostCpus {
        HostCpus {
            online: CpuSet::parse_list(online).unwrap(),
            allowed: CpuSet::parse_list(allowed).unwrap(),
        }
    }

    fn run(cores: &str, reserved: &str, pinned: bool, h: &HostCpus) -> Result<String, String> {
        let spec = match cores.parse::<i64>() {
            Ok(n) => CoreSpec::count(n).map_err(|e| e.to_string())?,
            Err(_) => CoreSpec::parse(cores).map_err(|e| e.to_string())?,
        };
        let reserved = if reserved.is_empty() {
            CpuSet::new()
        } else {
            CpuSet::parse_list(reserved).unwrap()
        };
        let config = PlacementConfig {
            cores: &spec,
            cores_field: "placement.cores",
            reserved: &reserved,
            pinned,
        };
        resolve(&config, h)
            .map(|p| p.shard_cores.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_form() {
        let h = host("0-15", "0-15");
        assert_eq!(run("all", "", true, &h).unwrap(), "0-15");
        assert_eq!(run("all", "0-1", true, &h).unwrap(), "2-15");
        assert_eq!(run("4", "0-1", true, &h).unwrap(), "2-5");
        assert_eq!(run("2-15", "0-1", true, &h).unwrap(), "2-15");
        assert_eq!(run("1,3,5-7", "", true, &h).unwrap(), "1,3,5-7");
        // Deterministic: the same inputs resolve alike.
        assert_eq!(run("3", "1", true, &h), run("3", "1", true, &h));
        assert_eq!(run("3", "1", true, &h).unwrap(), "0,2-3");
    }

    #[test]
    fn affinity_limits_all_and_count() {
        let h = host("0-7", "2-7");
        assert_eq!(run("all", "", true, &h).unwrap(), "2-7");
        assert_eq!(run("2", "0", true, &h).unwrap(), "2-3");
        let err = run("0-3", "", true, &h).unwrap_err();
        assert!(
            err.contains("placement.cores: CPU 0-1 not in this process's CPU affinity"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let h = host("0-3", "0-3");
        let err = run("2-5", "", true, &h).unwrap_err();
        assert_eq!(err, "placement.cores: CPU 4-5 not online (online: 0-3)");
        let err = run("0-2", "2-3", true, &h).unwrap_err();
        assert_eq!(
            err,
            "placement.cores: CPU 2 also in placement.reserved_cores"
        );
        let err = run("all", "0-3", true, &h).unwrap_err();
        assert!(
            err.starts_with("placement.reserved_cores: 0-3 leaves no CPU"),
            "{err}"
        );
        let err = run("3", "0-1", true, &h).unwrap_err();
        assert_eq!(
            err,
            "placement.cores: 3 cores asked, only 2 usable CPUs are not reserved (2-3)"
        );
        let err = run("all", "6", true, &h).unwrap_err();
        assert_eq!(
            err,
            "placement.reserved_cores: CPU 6 not online (online: 0-3)"
        );
        assert!(run("0", "", true, &h)
            .unwrap_err()
            .contains("between 1 and"));
        assert!(run("-2", "", true, &h).is_err());
    }

    #[test]
    fn unpinned_lists_only_count() {
        let h = host("0-1", "0-1");
        assert_eq!(run("0-3", "", false, &h).unwrap(), "0-3");
        assert!(run("0-3", "", true, &h).is_err());
    }

    #[test]
    fn toml_forms() {
        let spec = |t: &str| {
            let v: toml::Table = toml::from_str(t).unwrap();
            CoreSpec::from_toml(&v["cores"])
        };
        assert_eq!(spec("cores = 4"), Ok(CoreSpec::Count(4)));
        assert_eq!(spec("cores = \"all\""), Ok(CoreSpec::All));
        assert_eq!(spec("cores = \"1,3,5-7\"").unwrap().to_string(), "1,3,5-7");
        assert_eq!(spec("cores = \"4\"").unwrap().to_string(), "4");
        assert!(spec("cores = 0")
            .unwrap_err()
            .to_string()
            .contains("between 1 and"));
        assert!(spec("cores = -1").is_err());
        assert!(spec("cores = \"7-2\"")
            .unwrap_err()
            .to_string()
            .contains("backwards"));
        assert!(spec("cores = \"x\"")
            .unwrap_err()
            .to_string()
            .contains("not a CPU number"));
        assert!(spec("cores = 1.5")
            .unwrap_err()
            .to_string()
            .contains("1.5 is not \"all\""));
    }
}
