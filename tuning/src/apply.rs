//! `sluice tune apply`: the changes a profile asks for that can be made safely at run time
//! as root (sysctls and sysfs knobs), planned from what the host has now, then written one
//! by one and read back.
//!
//! Invariants: only keys the profile sets are changed; numeric floors are only raised and
//! ceilings only lowered; a value is written only if the knob offers it; nothing is ever
//! undone. What cannot or should not be changed here (rlimits, clocksource, io_uring
//! policy, services) is reported with what to do instead.

use std::fmt;

use crate::checks::{data_device_queue, nic_irqs, CheckContext};
use crate::checks::{memlock_bytes_needed, nofile_needed};
use crate::sysroot::{bracketed, choices, SysRoot};

const SWAPPINESS: &str = "/proc/sys/vm/swappiness";
const AIO_MAX_NR: &str = "/proc/sys/fs/aio-max-nr";
const NR_OPEN: &str = "/proc/sys/fs/nr_open";
const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
const THP_DEFRAG: &str = "/sys/kernel/mm/transparent_hugepage/defrag";
const IO_URING_DISABLED: &str = "/proc/sys/kernel/io_uring_disabled";
const CLOCKSOURCE: &str = "/sys/devices/system/clocksource/clocksource0/current_clocksource";

/// One planned step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write `new` to the knob at `path` (a kernel path under the root).
    Change {
        key: String,
        path: String,
        old: String,
        new: String,
    },
    /// Already as the profile wants.
    Unchanged { key: String, value: String },
    /// Not changed by `apply`, and what the operator can do.
    NotChanged { key: String, why: String },
}

/// What happened to one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Changed {
        key: String,
        old: String,
        new: String,
    },
    WouldChange {
        key: String,
        old: String,
        new: String,
    },
    Failed {
        key: String,
        old: String,
        new: String,
        error: String,
    },
    Unchanged {
        key: String,
        value: String,
    },
    NotChanged {
        key: String,
        why: String,
    },
}

impl Outcome {
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed { .. })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Changed { key, old, new } => write!(f, "{key}: {old} -> {new}"),
            Outcome::WouldChange { key, old, new } => {
                write!(f, "{key}: {old} -> {new} (dry run: not written)")
            }
            Outcome::Failed {
                key,
                old,
                new,
                error,
            } => {
                write!(f, "{key}: {old} -> {new} FAILED: {error}")
            }
            Outcome::Unchanged { key, value } => {
                write!(f, "{key}: {value} (already as recommended)")
            }
            Outcome::NotChanged { key, why } => write!(f, "{key}: not changed: {why}"),
        }
    }
}

/// The steps the profile asks for, from the host's current values.
pub fn plan(ctx: &CheckContext<'_>) -> Vec<Action> {
    let p = ctx.profile;
    let mut out = Vec::new();
    if let Some(w) = p.vm_swappiness {
        out.push(bound(
            ctx.root,
            "vm.swappiness",
            SWAPPINESS,
            u64::from(w),
            false,
        ));
    }
    if let Some(w) = p.fs_aio_max_nr {
        out.push(bound(ctx.root, "fs.aio-max-nr", AIO_MAX_NR, w, true));
    }
    if let Some(w) = p.fs_nr_open {
        out.push(bound(ctx.root, "fs.nr_open", NR_OPEN, w, true));
    }
    if let Some(w) = &p.transparent_hugepage {
        out.push(choice(
            ctx.root,
            "transparent_hugepage.enabled",
            THP_ENABLED,
            None,
            w,
        ));
    }
    if let Some(w) = &p.transparent_hugepage_defrag {
        out.push(choice(
            ctx.root,
            "transparent_hugepage.defrag",
            THP_DEFRAG,
            None,
            w,
        ));
    }
    if let Some(w) = &p.cpu_governor {
        out.extend(governors(ctx, w));
    }
    out.extend(device_queue(ctx));
    if p.nic_irqs_on_reserved_cores == Some(true) {
        out.extend(irq_affinity(ctx));
    }
    out.extend(advice(ctx));
    out
}

/// A numeric sysctl with a floor (`raise`) or a ceiling: moved only toward the profile.
fn bound(root: &SysRoot, key: &str, path: &str, want: u64, raise: bool) -> Action {
    let current = match root.read(path).map(|t| t.parse::<u64>()) {
        Ok(Ok(v)) => v,
        Ok(Err(_)) | Err(_) => {
            return Action::NotChanged {
                key: key.into(),
                why: format!("{path} is missing or not a number"),
            }
        }
    };
    let fine = if raise {
        current >= want
    } else {
        current <= want
    };
    if fine {
        return Action::Unchanged {
            key: key.into(),
            value: current.to_string(),
        };
    }
    Action::Change {
        key: key.into(),
        path: path.into(),
        old: current.to_string(),
        new: want.to_string(),
    }
}

/// A sysfs choice file (`a [b] c`); `available` names another file listing the choices
/// (cpufreq keeps them apart), else the file lists them itself.
fn choice(root: &SysRoot, key: &str, path: &str, available: Option<&str>, want: &str) -> Action {
    let Ok(text) = root.read(path) else {
        return Action::NotChanged {
            key: key.into(),
            why: format!("{path} does not exist on this host"),
        };
    };
    let current = bracketed(&text).unwrap_or(&text).to_string();
    if current == want {
        return Action::Unchanged {
            key: key.into(),
            value: current,
        };
    }
    let offered = match available {
        Some(a) => root.read(a).unwrap_or_default(),
        None => text.clone(),
    };
    if !choices(&offered).contains(&want) {
        return Action::NotChanged {
            key: key.into(),
            why: format!("{want:?} is not offered here (choices: {offered})"),
        };
    }
    Action::Change {
        key: key.into(),
        path: path.into(),
        old: current,
        new: want.into(),
    }
}

fn governors(ctx: &CheckContext<'_>, want: &str) -> Vec<Action> {
    let cores = match ctx.placement {
        Ok(p) => p.shard_cores.clone(),
        Err(e) => {
            return vec![Action::NotChanged {
                key: "cpu.governor".into(),
                why: format!("the placement is invalid ({e})"),
            }]
        }
    };
    cores
        .iter()
        .map(|cpu| {
            let dir = format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq");
            choice(
                ctx.root,
                &format!("cpu{cpu}.governor"),
                &format!("{dir}/scaling_governor"),
                Some(&format!("{dir}/scaling_available_governors")),
                want,
            )
        })
        .collect()
}

fn device_queue(ctx: &CheckContext<'_>) -> Vec<Action> {
    let p = ctx.profile;
    if p.io_scheduler.is_none() && p.io_nomerges.is_none() {
        return Vec::new();
    }
    let (dev, queue) = match data_device_queue(ctx.root, ctx.data_dir) {
        Ok(q) => q,
        Err(e) => {
            return vec![Action::NotChanged {
                key: "data_device".into(),
                why: e.to_string(),
            }]
        }
    };
    let mut out = Vec::new();
    if let Some(w) = &p.io_scheduler {
        let key = format!("{dev}.scheduler");
        out.push(choice(
            ctx.root,
            &key,
            &format!("{queue}/scheduler"),
            None,
            w,
        ));
    }
    if let Some(w) = p.io_nomerges {
        let key = format!("{dev}.nomerges");
        let path = format!("{queue}/nomerges");
        out.push(match ctx.root.read(&path) {
            Ok(v) if v == w.to_string() => Action::Unchanged { key, value: v },
            Ok(v) => Action::Change {
                key,
                path,
                old: v,
                new: w.to_string(),
            },
            Err(e) => Action::NotChanged {
                key,
                why: format!("{path}: {e}"),
            },
        });
    }
    out
}

fn irq_affinity(ctx: &CheckContext<'_>) -> Vec<Action> {
    let reserved = match ctx.placement {
        Ok(p) if !p.reserved_cores.is_empty() => p.reserved_cores.clone(),
        _ => {
            return vec![Action::NotChanged {
                key: "irq.nic_affinity".into(),
                why: "the placement reserves no cores to move NIC interrupts to".into(),
            }]
        }
    };
    nic_irqs(ctx.root)
        .into_iter()
        .map(|i| {
            let key = format!("irq{}({}).affinity", i.irq, i.iface);
            match i.affinity {
                Ok(set) if set.is_subset(&reserved) => Action::Unchanged {
                    key,
                    value: set.to_string(),
                },
                Ok(set) => Action::Change {
                    key,
                    path: crate::checks::irq_affinity_path(i.irq),
                    old: set.to_string(),
                    new: reserved.to_string(),
                },
                Err(e) => Action::NotChanged {
                    key,
                    why: e.to_string(),
                },
            }
        })
        .collect()
}

/// What `apply` leaves to the operator, when it is not as recommended.
fn advice(ctx: &CheckContext<'_>) -> Vec<Action> {
    let mut out = Vec::new();
    let shards = ctx
        .placement
        .as_ref()
        .map_or(1, |p| p.shard_cores.len().max(1));
    let memlock = memlock_bytes_needed(shards);
    if !ctx.limits.memlock_bytes.at_least(memlock) {
        out.push(Action::NotChanged {
            key: "rlimit.memlock".into(),
            why: format!(
                "{} < {memlock} needed; a limit is set where the broker starts: LimitMEMLOCK=infinity \
                 in deploy/sluice.service, memlock in /etc/security/limits.conf, or ulimit -l",
                ctx.limits.memlock_bytes
            ),
        });
    }
    if let Some(want) = ctx.profile.nofile {
        let want = want.max(nofile_needed(shards, ctx.connections_max_per_shard));
        if !ctx.limits.nofile.at_least(want) {
            out.push(Action::NotChanged {
                key: "rlimit.nofile".into(),
                why: format!(
                    "{} < {want}; set LimitNOFILE={want} in deploy/sluice.service or nofile in \
                     /etc/security/limits.conf",
                    ctx.limits.nofile
                ),
            });
        }
    }
    if let Some(want) = &ctx.profile.clocksource {
        if let Ok(cur) = ctx.root.read(CLOCKSOURCE) {
            if &cur != want {
                out.push(Action::NotChanged {
                    key: "clocksource".into(),
                    why: format!(
                        "{cur}, profile wants {want}: switching at run time can jump the clock; \
                         boot with clocksource={want} if the host offers it"
                    ),
                });
            }
        }
    }
    if let Ok(v) = ctx.root.read(IO_URING_DISABLED) {
        if v != "0" {
            out.push(Action::NotChanged {
                key: "kernel.io_uring_disabled".into(),
                why: format!(
                    "{v}: a security policy for the host's owner to lift (sysctl -w kernel.io_uring_disabled=0)"
                ),
            });
        }
    }
    let steering = ctx.profile.nic_irqs_on_reserved_cores == Some(true)
        && ctx
            .placement
            .as_ref()
            .is_ok_and(|p| !p.reserved_cores.is_empty());
    if steering && crate::checks::irqbalance_running(ctx.root) {
        out.push(Action::NotChanged {
            key: "irqbalance".into(),
            why: "running, and it will move interrupts back; stop it (systemctl disable --now irqbalance) \
                  or ban the shard cores (IRQBALANCE_BANNED_CPULIST)"
                .into(),
        });
    }
    out
}

/// Carries out the plan (or, with `dry_run`, only says what it would write). Each write is
/// read back: a knob that accepts a value but shows another is reported as failed.
pub fn apply(root: &SysRoot, plan: &[Action], dry_run: bool) -> Vec<Outcome> {
    plan.iter().map(|a| step(root, a, dry_run)).collect()
}

fn step(root: &SysRoot, action: &Action, dry_run: bool) -> Outcome {
    match action.clone() {
        Action::Unchanged { key, value } => Outcome::Unchanged { key, value },
        Action::NotChanged { key, why } => Outcome::NotChanged { key, why },
        Action::Change { key, old, new, .. } if dry_run => Outcome::WouldChange { key, old, new },
        Action::Change {
            key,
            path,
            old,
            new,
        } => {
            if let Err(e) = root.write(&path, &new) {
                let error = match e.kind() {
                    std::io::ErrorKind::PermissionDenied => format!("{path}: {e} (run as root)"),
                    _ => format!("{path}: {e}"),
                };
                return Outcome::Failed {
                    key,
                    old,
                    new,
                    error,
                };
            }
            match root.read(&path) {
                Ok(t) if bracketed(&t).unwrap_or(&t) == new => Outcome::Changed { key, old, new },
                Ok(t) => Outcome::Failed {
                    key,
                    old,
                    new,
                    error: format!("written, but {path} reads {t:?}"),
                },
                Err(e) => Outcome::Failed {
                    key,
                    old,
                    new,
                    error: format!("written, but reading {path}: {e}"),
                },
            }
        }
    }
}
