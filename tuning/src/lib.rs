//! `sluice-tuning`: where shards run and how the host should be set up for them.
//!
//! It owns, as plain data and pure functions:
//! - placement: the `cores` / `reserved_cores` settings, resolved against the CPUs the
//!   host has online and the process may use (`placement`, `cpuset`);
//! - host checks (`sluice tune check`): io_uring, kernel, limits, sysctls, huge pages,
//!   CPU governor, clocksource, the data dir's filesystem, O_DIRECT and device queue, NIC
//!   interrupts, irqbalance, systemd (`checks`), judged against a profile (`profile`);
//! - host changes (`sluice tune apply`): planned from the current values, written only for
//!   keys the profile sets, each printed as `key: old -> new` (`apply`).
//!
//! Invariants:
//! - Every read of `/proc`, `/sys` and `/run` goes through a `SysRoot`, so tests run the same
//!   code on a fake tree; checks never write to the tree (the O_DIRECT probe writes one
//!   file in the data dir and removes it).
//! - Every check always yields exactly one item, `unknown` when it cannot read its value;
//!   only `required` items that `fail` make the host unfit.
//! - `apply` changes nothing the profile does not name, never lowers a floor or raises a
//!   ceiling, never creates files, and reports what it could not change and why.
//! - Everything read is bounded (`sysroot::READ_BYTES_MAX`, processes scanned, CPU numbers).

pub mod apply;
pub mod check;
pub mod checks;
pub mod cpuset;
pub mod placement;
pub mod profile;
pub mod sysroot;

pub use apply::{Action, Outcome};
pub use check::{Check, Report, Severity, Status};
pub use checks::{run_all, CheckContext, Identity, Limit, Rlimits};
pub use cpuset::{CpuListError, CpuSet};
pub use placement::{
    resolve, CoreSpec, CoreSpecError, HostCpus, Placement, PlacementConfig, PlacementError,
};
pub use profile::{Profile, ProfileError};
pub use sysroot::SysRoot;
