//! Kernel checks: io_uring, the kernel version, sysctls, transparent huge pages, CPU
//! frequency governor, clocksource.

use super::{left_as_is, read_u64, CheckContext, Identity};
use crate::check::{Check, Severity, Status};
use crate::sysroot::{bracketed, choices};

/// glommio needs io_uring features of Linux 5.8.
pub const KERNEL_MIN: (u32, u32) = (5, 8);

pub(super) const IO_URING_DISABLED: &str = "/proc/sys/kernel/io_uring_disabled";
const IO_URING_GROUP: &str = "/proc/sys/kernel/io_uring_group";
pub(super) const SWAPPINESS: &str = "/proc/sys/vm/swappiness";
pub(super) const AIO_MAX_NR: &str = "/proc/sys/fs/aio-max-nr";
pub(super) const NR_OPEN: &str = "/proc/sys/fs/nr_open";
pub(super) const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
pub(super) const THP_DEFRAG: &str = "/sys/kernel/mm/transparent_hugepage/defrag";
const OSRELEASE: &str = "/proc/sys/kernel/osrelease";
const CLOCKSOURCE: &str = "/sys/devices/system/clocksource/clocksource0/current_clocksource";
const CLOCKSOURCES: &str = "/sys/devices/system/clocksource/clocksource0/available_clocksource";

pub(super) fn io_uring(ctx: &CheckContext<'_>) -> Check {
    let name = "kernel.io_uring_disabled";
    let why = "every shard does all its disk and network I/O through io_uring";
    let rec = "0 (io_uring allowed)";
    match ctx.root.read(IO_URING_DISABLED) {
        Ok(v) if v == "0" => Check::judged(name, Severity::Required, true, v, rec, why),
        Ok(v) if v == "1" => group_only(ctx, rec, why),
        Ok(v) => Check::judged(
            name,
            Severity::Required,
            false,
            format!("{v} (io_uring off for everyone)"),
            rec,
            format!("{why} (sysctl -w kernel.io_uring_disabled=0)"),
        ),
        // The switch came with Linux 6.6; before it io_uring cannot be turned off.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Check::judged(
            name,
            Severity::Required,
            true,
            "absent (kernel without the switch: io_uring on)",
            rec,
            why,
        ),
        Err(e) => Check::unknown(
            name,
            Severity::Required,
            format!("unreadable: {e}"),
            rec,
            why,
        ),
    }
}

/// `kernel.io_uring_disabled = 1`: io_uring is allowed to processes with CAP_SYS_ADMIN
/// (taken here as euid 0) and to members of `kernel.io_uring_group`. The check runs with
/// the broker's identity (the unit's `ExecStartPre`), so it judges that identity.
fn group_only(ctx: &CheckContext<'_>, rec: &str, why: &str) -> Check {
    let name = "kernel.io_uring_disabled";
    let group = ctx
        .root
        .read(IO_URING_GROUP)
        .ok()
        .and_then(|g| g.parse::<i64>().ok())
        .and_then(|g| u32::try_from(g).ok());
    let id = &ctx.identity;
    let allowed = io_uring_permitted(group, id);
    let group_text = group.map_or("no group".to_string(), |g| format!("group {g}"));
    let current = format!(
        "1 (only CAP_SYS_ADMIN and kernel.io_uring_group: {group_text}; this process: uid {}, groups {:?})",
        id.euid, id.gids
    );
    let why = format!(
        "{why}; the broker's user must be root or in kernel.io_uring_group \
         (or sysctl -w kernel.io_uring_disabled=0)"
    );
    Check::judged(name, Severity::Required, allowed, current, rec, why)
}

/// Whether a process may create io_uring instances under `io_uring_disabled = 1`.
pub fn io_uring_permitted(group: Option<u32>, id: &Identity) -> bool {
    id.euid == 0 || group.is_some_and(|g| id.gids.contains(&g))
}

/// `6.1.0-18-amd64` → (6, 1).
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    Some((major, minor))
}

pub(super) fn version(ctx: &CheckContext<'_>) -> Check {
    let name = "kernel.version";
    let rec = format!("{}.{} or newer", KERNEL_MIN.0, KERNEL_MIN.1);
    let why = "glommio's io_uring use (registered buffers, polled rings, statx) needs Linux 5.8";
    match ctx.root.read(OSRELEASE) {
        Ok(release) => match parse_kernel_version(&release) {
            Some(v) => Check::judged(name, Severity::Required, v >= KERNEL_MIN, release, rec, why),
            None => Check::unknown(
                name,
                Severity::Required,
                format!("unparsable {release:?}"),
                rec,
                why,
            ),
        },
        Err(e) => Check::unknown(
            name,
            Severity::Required,
            format!("unreadable: {e}"),
            rec,
            why,
        ),
    }
}

/// A numeric sysctl that should be at least (`floor`) or at most (`!floor`) `want`.
fn sysctl_bound(
    ctx: &CheckContext<'_>,
    name: &'static str,
    abs: &str,
    want: Option<u64>,
    floor: bool,
    why: &str,
) -> Check {
    let current = match read_u64(ctx.root, abs) {
        Ok(v) => v,
        Err(e) => {
            let rec = want.map_or_else(|| left_as_is(ctx), |w| w.to_string());
            return Check::unknown(name, Severity::Recommended, e.to_string(), rec, why);
        }
    };
    match want {
        None => Check::judged(
            name,
            Severity::Recommended,
            true,
            current.to_string(),
            left_as_is(ctx),
            why,
        ),
        Some(w) => {
            let (good, rec) = if floor {
                (current >= w, format!("{w} or more"))
            } else {
                (current <= w, format!("{w} or less"))
            };
            Check::judged(
                name,
                Severity::Recommended,
                good,
                current.to_string(),
                rec,
                why,
            )
        }
    }
}

pub(super) fn nr_open(ctx: &CheckContext<'_>) -> Check {
    sysctl_bound(
        ctx,
        "fs.nr_open",
        NR_OPEN,
        ctx.profile.fs_nr_open,
        true,
        "the ceiling for the open-file limit: LimitNOFILE cannot be raised above it",
    )
}

pub(super) fn aio_max_nr(ctx: &CheckContext<'_>) -> Check {
    sysctl_bound(
        ctx,
        "fs.aio-max-nr",
        AIO_MAX_NR,
        ctx.profile.fs_aio_max_nr,
        true,
        "Sluice uses io_uring, not AIO, but other AIO users on the host share this pool",
    )
}

pub(super) fn swappiness(ctx: &CheckContext<'_>) -> Check {
    sysctl_bound(
        ctx,
        "vm.swappiness",
        SWAPPINESS,
        ctx.profile.vm_swappiness.map(u64::from),
        false,
        "swapped-out caches and buffers turn memory reads into disk reads mid-request",
    )
}

/// A sysfs choice file (`a [b] c`) whose selected word should equal `want`.
fn choice(
    ctx: &CheckContext<'_>,
    name: &'static str,
    abs: &str,
    want: Option<&str>,
    why: &str,
) -> Check {
    let rec = want.map_or_else(|| left_as_is(ctx), str::to_string);
    let text = match ctx.root.read(abs) {
        Ok(t) => t,
        Err(e) => {
            return Check::unknown(
                name,
                Severity::Recommended,
                format!("unreadable: {e}"),
                rec,
                why,
            )
        }
    };
    let current = bracketed(&text).unwrap_or(&text).to_string();
    let good = want.is_none_or(|w| w == current);
    Check::judged(name, Severity::Recommended, good, current, rec, why)
}

pub(super) fn thp_enabled(ctx: &CheckContext<'_>) -> Check {
    choice(
        ctx,
        "transparent_hugepage.enabled",
        THP_ENABLED,
        ctx.profile.transparent_hugepage.as_deref(),
        "with `always` the kernel compacts memory behind allocations, stalling them at random",
    )
}

pub(super) fn thp_defrag(ctx: &CheckContext<'_>) -> Check {
    choice(
        ctx,
        "transparent_hugepage.defrag",
        THP_DEFRAG,
        ctx.profile.transparent_hugepage_defrag.as_deref(),
        "direct compaction on a page fault stalls the faulting shard",
    )
}

pub(super) fn governor_path(cpu: usize) -> String {
    format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor")
}

pub(super) fn cpu_governor(ctx: &CheckContext<'_>) -> Check {
    let name = "cpu.governor";
    let why = "a shard core that clocks down between bursts adds latency to the next request";
    let want = ctx.profile.cpu_governor.as_deref();
    let rec = want.map_or_else(|| left_as_is(ctx), |w| format!("{w} on shard cores"));
    let cores = ctx.shard_cores();
    let mut seen: Vec<(usize, String)> = Vec::new();
    for cpu in cores.iter() {
        if let Ok(g) = ctx.root.read(&governor_path(cpu)) {
            seen.push((cpu, g));
        }
    }
    if seen.is_empty() {
        return Check::unknown(
            name,
            Severity::Recommended,
            format!("no cpufreq for cores {cores} (virtual machine, or frequency set by firmware)"),
            rec,
            why,
        );
    }
    let current = seen
        .iter()
        .map(|(cpu, g)| format!("cpu{cpu}={g}"))
        .collect::<Vec<_>>()
        .join(",");
    let good = want.is_none_or(|w| seen.iter().all(|(_, g)| g == w));
    Check::judged(name, Severity::Recommended, good, current, rec, why)
}

pub(super) fn clocksource(ctx: &CheckContext<'_>) -> Check {
    let name = "clocksource";
    let mut check = choice(
        ctx,
        name,
        CLOCKSOURCE,
        ctx.profile.clocksource.as_deref(),
        "timers and latency histograms read the clock per request; tsc is read without a system call",
    );
    if check.status == Status::Warn {
        if let (Ok(avail), Some(want)) = (
            ctx.root.read(CLOCKSOURCES),
            ctx.profile.clocksource.as_deref(),
        ) {
            let note = if choices(&avail).contains(&want) {
                format!(" (available: {avail}; boot with clocksource={want})")
            } else {
                format!(" (not offered by this host: {avail})")
            };
            check.recommended.push_str(&note);
        }
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_uring_group_membership() {
        let user = Identity {
            euid: 1000,
            gids: vec![1000, 27],
        };
        assert!(io_uring_permitted(Some(27), &user));
        assert!(!io_uring_permitted(Some(5), &user));
        assert!(!io_uring_permitted(None, &user));
        let root = Identity {
            euid: 0,
            gids: vec![0],
        };
        assert!(io_uring_permitted(None, &root));
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.8.0"), Some((5, 8)));
        assert_eq!(parse_kernel_version("5.10rc1"), Some((5, 10)));
        assert_eq!(parse_kernel_version("4"), None);
        assert_eq!(parse_kernel_version("x.y"), None);
        assert!(parse_kernel_version("5.4.0").unwrap() < KERNEL_MIN);
    }
}
