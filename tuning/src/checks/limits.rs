//! Process limits (locked memory, open files) and the service manager that sets them.

use std::fmt;

use super::CheckContext;
use crate::check::{Check, Severity};

/// glommio's registered I/O memory per executor (`LocalExecutorBuilder::io_memory`, default
/// 10 MiB): locked, so it counts against RLIMIT_MEMLOCK.
pub const IO_MEMORY_BYTES_PER_SHARD: u64 = 10 << 20;
/// Each executor's three rings (main, latency, poll; 128 entries each) with their
/// submission and completion arrays, rounded up generously: kernels before 5.12 charge
/// ring memory to RLIMIT_MEMLOCK too.
pub const RING_BYTES_PER_SHARD: u64 = 1 << 20;
/// glommio refuses to start an executor below this limit.
pub const MEMLOCK_BYTES_MIN: u64 = 512 << 10;
/// Files a broker keeps open besides connections: segments, indexes, listeners, rings.
pub const NOFILE_HEADROOM: u64 = 1024;

/// A resource limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Finite(u64),
    Infinite,
}

impl Limit {
    pub fn at_least(self, n: u64) -> bool {
        match self {
            Limit::Infinite => true,
            Limit::Finite(v) => v >= n,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Infinite => f.write_str("unlimited"),
            Limit::Finite(v) => write!(f, "{v}"),
        }
    }
}

/// Soft limits of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimits {
    pub memlock_bytes: Limit,
    pub nofile: Limit,
}

impl Rlimits {
    /// This process's soft limits.
    pub fn current() -> std::io::Result<Rlimits> {
        Ok(Rlimits {
            memlock_bytes: soft_limit(libc::RLIMIT_MEMLOCK)?,
            nofile: soft_limit(libc::RLIMIT_NOFILE)?,
        })
    }
}

fn soft_limit(resource: libc::__rlimit_resource_t) -> std::io::Result<Limit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit struct we own.
    if unsafe { libc::getrlimit(resource, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(if lim.rlim_cur == libc::RLIM_INFINITY {
        Limit::Infinite
    } else {
        Limit::Finite(lim.rlim_cur)
    })
}

/// Who the process is, for permission decisions (io_uring under `io_uring_disabled = 1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub euid: u32,
    /// The effective group and the supplementary groups.
    pub gids: Vec<u32>,
}

/// Supplementary groups read (Linux's NGROUPS_MAX).
const GROUPS_MAX: usize = 65536;

impl Identity {
    /// This process's.
    pub fn current() -> Identity {
        // SAFETY: geteuid and getegid only return the caller's ids.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let mut gids = vec![egid];
        // SAFETY: a zero size asks only for the count; the pointer is not written.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        if let Ok(n) = usize::try_from(n) {
            let mut buf = vec![0 as libc::gid_t; n.min(GROUPS_MAX)];
            // SAFETY: `buf` holds `buf.len()` gids and outlives the call.
            let got = unsafe { libc::getgroups(buf.len() as libc::c_int, buf.as_mut_ptr()) };
            if let Ok(got) = usize::try_from(got) {
                gids.extend(buf.into_iter().take(got));
            }
        }
        gids.sort_unstable();
        gids.dedup();
        Identity { euid, gids }
    }
}

/// Locked memory a broker with `shards` shards needs.
pub fn memlock_bytes_needed(shards: usize) -> u64 {
    shards as u64 * (IO_MEMORY_BYTES_PER_SHARD + RING_BYTES_PER_SHARD)
}

/// Open files a broker needs: every shard's connection bound plus headroom.
pub fn nofile_needed(shards: usize, connections_max_per_shard: u64) -> u64 {
    shards as u64 * connections_max_per_shard + NOFILE_HEADROOM
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes.div_ceil(1 << 20))
}

pub(super) fn memlock(ctx: &CheckContext<'_>) -> Check {
    let name = "rlimit.memlock";
    let shards = ctx.shard_cores().len().max(1);
    let needed = memlock_bytes_needed(shards);
    let current = match ctx.limits.memlock_bytes {
        Limit::Infinite => "unlimited".to_string(),
        Limit::Finite(v) => format!("{v} bytes ({})", mib(v)),
    };
    let rec = format!(
        "unlimited, at least {needed} bytes ({}) for {shards} shards (LimitMEMLOCK=infinity)",
        mib(needed)
    );
    let why = "io_uring locks each shard's registered I/O buffers and rings in memory";
    if !ctx.limits.memlock_bytes.at_least(MEMLOCK_BYTES_MIN) {
        let why = format!("{why}; below {MEMLOCK_BYTES_MIN} bytes no shard starts");
        return Check::judged(name, Severity::Required, false, current, rec, why);
    }
    // Between the two, shards start but run without registered buffers (slower I/O).
    let mut check = Check::judged(name, Severity::Required, true, current, rec, why);
    if !ctx.limits.memlock_bytes.at_least(needed) {
        check = check.with_status(crate::check::Status::Warn);
        check.why = format!(
            "{why}; below what the placement needs, I/O falls back to unregistered buffers"
        );
    }
    check
}

pub(super) fn nofile(ctx: &CheckContext<'_>) -> Check {
    let name = "rlimit.nofile";
    let shards = ctx.shard_cores().len().max(1);
    let needed = nofile_needed(shards, ctx.connections_max_per_shard);
    let want = ctx.profile.nofile.unwrap_or(0).max(needed);
    let rec = format!(
        "{want} or more; at least {needed} ({shards} shards x {} connections + {NOFILE_HEADROOM}) (LimitNOFILE)",
        ctx.connections_max_per_shard
    );
    let why = "every connection, segment and index file is a descriptor; out of them, accepts and rolls fail";
    let current = ctx.limits.nofile.to_string();
    if !ctx.limits.nofile.at_least(needed) {
        return Check::judged(name, Severity::Required, false, current, rec, why);
    }
    let check = Check::judged(name, Severity::Required, true, current, rec, why);
    if ctx.limits.nofile.at_least(want) {
        check
    } else {
        check.with_status(crate::check::Status::Warn)
    }
}

pub(super) fn systemd(ctx: &CheckContext<'_>) -> Check {
    let name = "init.systemd";
    let why =
        "deploy/sluice.service sets the limits above (memlock, open files) and restarts the broker";
    let running = ctx.root.exists("/run/systemd/system");
    let current = if running {
        "systemd is the service manager"
    } else {
        "no systemd (set limits with limits.conf, ulimit or the container runtime)"
    };
    Check::judged(
        name,
        Severity::Recommended,
        running,
        current,
        "systemd",
        why,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_scale_with_shards() {
        assert_eq!(memlock_bytes_needed(2), 22 << 20);
        assert_eq!(nofile_needed(2, 4096), 9216);
        assert!(Limit::Infinite.at_least(u64::MAX));
        assert!(!Limit::Finite(10).at_least(11));
        assert!(Rlimits::current().is_ok());
    }
}
