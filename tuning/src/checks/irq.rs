//! Network interrupts against the reserved cores, and irqbalance, which would undo them.

use std::collections::BTreeMap;

use super::{left_as_is, CheckContext};
use crate::check::{Check, Severity};
use crate::cpuset::{CpuListError, CpuSet};
use crate::sysroot::SysRoot;

/// Interrupts listed per check line before "and N more".
const IRQS_SHOWN_MAX: usize = 8;
/// Processes looked at when searching for irqbalance (pid_max on most hosts is 4M; a busy
/// host has a few thousand processes).
const PROCESSES_SCANNED_MAX: usize = 1 << 16;

/// One interrupt of a network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicIrq {
    pub irq: u32,
    pub iface: String,
    /// `/proc/irq/N/smp_affinity_list`, or why it could not be read.
    pub affinity: Result<CpuSet, AffinityError>,
}

/// Why an interrupt's affinity could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AffinityError {
    #[error("{0}")]
    Unreadable(String),
    #[error("{text:?}: {source}")]
    BadList {
        text: String,
        #[source]
        source: CpuListError,
    },
}

/// `/proc/interrupts` as (irq number, device name) for numbered lines.
fn interrupt_names(root: &SysRoot) -> Vec<(u32, String)> {
    let Ok(text) = root.read("/proc/interrupts") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (num, rest) = line.trim_start().split_once(':')?;
            let irq = num.parse().ok()?;
            let name = rest.split_whitespace().last()?.to_string();
            Some((irq, name))
        })
        .collect()
}

/// Interrupts of every interface backed by a device (not `lo`, bridges, veths): the
/// device's MSI vectors (or its parent's, for virtio), plus `/proc/interrupts` lines named
/// after the interface (`eth0-TxRx-0`).
pub fn nic_irqs(root: &SysRoot) -> Vec<NicIrq> {
    let names = interrupt_names(root);
    let mut found: BTreeMap<u32, String> = BTreeMap::new();
    for iface in root.list("/sys/class/net").unwrap_or_default() {
        let device = format!("/sys/class/net/{iface}/device");
        if !root.exists(&device) {
            continue;
        }
        let msi = root
            .list(&format!("{device}/msi_irqs"))
            .or_else(|_| root.list(&format!("{device}/../msi_irqs")))
            .unwrap_or_default();
        for irq in msi.iter().filter_map(|n| n.parse().ok()) {
            found.entry(irq).or_insert_with(|| iface.clone());
        }
        for (irq, name) in &names {
            if name == &iface || name.starts_with(&format!("{iface}-")) {
                found.entry(*irq).or_insert_with(|| iface.clone());
            }
        }
    }
    found
        .into_iter()
        .map(|(irq, iface)| NicIrq {
            irq,
            iface,
            affinity: affinity(root, irq),
        })
        .collect()
}

pub(crate) fn affinity_path(irq: u32) -> String {
    format!("/proc/irq/{irq}/smp_affinity_list")
}

fn affinity(root: &SysRoot, irq: u32) -> Result<CpuSet, AffinityError> {
    let text = root
        .read(&affinity_path(irq))
        .map_err(|e| AffinityError::Unreadable(e.to_string()))?;
    CpuSet::parse_list(&text).map_err(|source| AffinityError::BadList { text, source })
}

fn describe(irqs: &[&NicIrq]) -> String {
    let mut parts: Vec<String> = irqs
        .iter()
        .take(IRQS_SHOWN_MAX)
        .map(|i| match &i.affinity {
            Ok(set) => format!("irq {} ({}) on {set}", i.irq, i.iface),
            Err(e) => format!("irq {} ({}) unreadable: {e}", i.irq, i.iface),
        })
        .collect();
    if irqs.len() > IRQS_SHOWN_MAX {
        parts.push(format!("and {} more", irqs.len() - IRQS_SHOWN_MAX));
    }
    parts.join(", ")
}

pub(super) fn nic_affinity(ctx: &CheckContext<'_>) -> Check {
    let name = "irq.nic_affinity";
    let why =
        "an interrupt on a shard core preempts its event loop; reserved cores exist to take them";
    let irqs = nic_irqs(ctx.root);
    let all: Vec<&NicIrq> = irqs.iter().collect();
    let reserved = ctx.reserved_cores();
    let wanted = ctx.profile.nic_irqs_on_reserved_cores == Some(true);
    if irqs.is_empty() {
        let rec = if wanted {
            format!("on reserved cores {reserved}")
        } else {
            left_as_is(ctx)
        };
        return Check::unknown(
            name,
            Severity::Recommended,
            "no NIC interrupts found",
            rec,
            why,
        );
    }
    if !wanted {
        return Check::judged(
            name,
            Severity::Recommended,
            true,
            describe(&all),
            left_as_is(ctx),
            why,
        );
    }
    if reserved.is_empty() {
        let rec = "no reserved cores in the placement: NIC interrupts share shard cores";
        return Check::judged(name, Severity::Recommended, true, describe(&all), rec, why);
    }
    let astray: Vec<&NicIrq> = irqs
        .iter()
        .filter(|i| !matches!(&i.affinity, Ok(set) if set.is_subset(&reserved)))
        .collect();
    let current = if astray.is_empty() {
        format!("all {} on reserved cores {reserved}", irqs.len())
    } else {
        describe(&astray)
    };
    let rec = format!("every NIC interrupt on reserved cores {reserved}");
    Check::judged(
        name,
        Severity::Recommended,
        astray.is_empty(),
        current,
        rec,
        why,
    )
}

/// Whether a process named `irqbalance` runs under the root's `/proc`.
pub(crate) fn irqbalance_running(root: &SysRoot) -> bool {
    root.list("/proc")
        .unwrap_or_default()
        .iter()
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .take(PROCESSES_SCANNED_MAX)
        .any(|pid| {
            root.read(&format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c == "irqbalance")
        })
}

pub(super) fn irqbalance(ctx: &CheckContext<'_>) -> Check {
    let name = "irqbalance";
    let running = irqbalance_running(ctx.root);
    let reserved = ctx.reserved_cores();
    let steering = ctx.profile.nic_irqs_on_reserved_cores == Some(true) && !reserved.is_empty();
    let current = if running { "running" } else { "not running" };
    if !steering {
        let why = "only matters when NIC interrupts are steered to reserved cores";
        return Check::judged(
            name,
            Severity::Recommended,
            true,
            current,
            "either (no interrupts steered to reserved cores)",
            why,
        );
    }
    let rec = format!(
        "stopped, or IRQBALANCE_BANNED_CPULIST={} so it keeps interrupts off shard cores",
        ctx.shard_cores()
    );
    let why = "irqbalance periodically moves interrupts back onto shard cores";
    Check::judged(name, Severity::Recommended, !running, current, rec, why)
}
