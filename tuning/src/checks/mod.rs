//! Every host check of `sluice tune check`. Each reads what it needs under the `SysRoot`
//! (plus the data dir and the process's rlimits, passed in), never writes to the tree, and
//! yields one `Check`; `run_all` returns them in a fixed order so every item is always
//! reported, readable or not.

mod irq;
mod kernel;
mod limits;
mod storage;

use std::path::Path;

pub(crate) use irq::{affinity_path as irq_affinity_path, irqbalance_running};
pub use irq::{nic_irqs, AffinityError, NicIrq};
pub use limits::{memlock_bytes_needed, nofile_needed, Identity, Limit, Rlimits};
pub use storage::{data_device_queue, probe_direct_io, DeviceError, DirectIoError, DirectIoProbe};

use crate::check::{Check, Report, Severity};
use crate::cpuset::CpuSet;
use crate::placement::{Placement, PlacementError};
use crate::profile::Profile;
use crate::sysroot::SysRoot;

/// What the checks look at besides the tree.
#[derive(Debug, Clone)]
pub struct CheckContext<'a> {
    pub root: &'a SysRoot,
    /// The report's name for the profile (built-in name or file path).
    pub profile_name: &'a str,
    pub profile: &'a Profile,
    pub data_dir: &'a Path,
    /// The configured placement, or why it is invalid (a failed required check).
    pub placement: &'a Result<Placement, PlacementError>,
    /// This process's soft limits (a broker started the same way inherits them).
    pub limits: Rlimits,
    /// This process's user and groups (judged for io_uring access).
    pub identity: Identity,
    /// `network.connections_max_per_shard` of the config: sizes the open-file need.
    pub connections_max_per_shard: u64,
}

impl CheckContext<'_> {
    /// Shard cores of a valid placement; with an invalid one, every online CPU (what the
    /// per-core checks then look at), or none if even that is unreadable.
    fn shard_cores(&self) -> CpuSet {
        match self.placement {
            Ok(p) => p.shard_cores.clone(),
            Err(_) => crate::placement::HostCpus::read(self.root)
                .map(|h| h.online)
                .unwrap_or_default(),
        }
    }

    fn reserved_cores(&self) -> CpuSet {
        match self.placement {
            Ok(p) => p.reserved_cores.clone(),
            Err(_) => CpuSet::new(),
        }
    }
}

/// Runs every check, in report order.
/// The name of every item [`run_all`] reports, in its order (what `sluice tune check`
/// prints and what its tests expect).
pub const CHECK_NAMES: &[&str] = &[
    "placement.cores",
    "kernel.io_uring_disabled",
    "kernel.version",
    "rlimit.memlock",
    "rlimit.nofile",
    "fs.nr_open",
    "fs.aio-max-nr",
    "vm.swappiness",
    "transparent_hugepage.enabled",
    "transparent_hugepage.defrag",
    "cpu.governor",
    "clocksource",
    "data_dir.filesystem",
    "data_dir.o_direct",
    "data_device.scheduler",
    "data_device.nomerges",
    "irq.nic_affinity",
    "irqbalance",
    "init.systemd",
];

pub fn run_all(ctx: &CheckContext<'_>) -> Report {
    let checks = vec![
        placement(ctx),
        kernel::io_uring(ctx),
        kernel::version(ctx),
        limits::memlock(ctx),
        limits::nofile(ctx),
        kernel::nr_open(ctx),
        kernel::aio_max_nr(ctx),
        kernel::swappiness(ctx),
        kernel::thp_enabled(ctx),
        kernel::thp_defrag(ctx),
        kernel::cpu_governor(ctx),
        kernel::clocksource(ctx),
        storage::filesystem(ctx),
        storage::direct_io(ctx),
        storage::scheduler(ctx),
        storage::nomerges(ctx),
        irq::nic_affinity(ctx),
        irq::irqbalance(ctx),
        limits::systemd(ctx),
    ];
    Report {
        profile: ctx.profile_name.to_string(),
        checks,
    }
}

fn placement(ctx: &CheckContext<'_>) -> Check {
    let why = "one shard runs on each of these cores; reserved cores stay free for interrupts";
    match ctx.placement {
        Ok(p) => Check::judged(
            "placement.cores",
            Severity::Required,
            true,
            format!("shards on {}, reserved {}", p.shard_cores, p.reserved_cores),
            "valid cores, disjoint from reserved_cores",
            why,
        ),
        Err(e) => Check::judged(
            "placement.cores",
            Severity::Required,
            false,
            e.to_string(),
            "valid cores, disjoint from reserved_cores",
            why,
        ),
    }
}

/// The recommendation text of a key the profile leaves out.
fn left_as_is(ctx: &CheckContext<'_>) -> String {
    format!("any (not set by profile {})", ctx.profile_name)
}

/// Reads a numeric kernel value.
fn read_u64(root: &SysRoot, abs: &str) -> Result<u64, KernelValueError> {
    let text = root
        .read(abs)
        .map_err(|e| KernelValueError::Unreadable(e.to_string()))?;
    text.parse().map_err(|_| KernelValueError::NotANumber(text))
}

/// Why a numeric kernel value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelValueError {
    #[error("unreadable: {0}")]
    Unreadable(String),
    #[error("{0:?} is not a number")]
    NotANumber(String),
}
