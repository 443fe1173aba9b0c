//! Every check and `apply` against fake `/proc` and `/sys` trees (pass, fail and unreadable
//! paths), with the data dir a real directory (real statfs, real O_DIRECT probe).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sluice_tuning::apply::{apply, plan};
use sluice_tuning::checks::{probe_direct_io, CHECK_NAMES};
use sluice_tuning::{
    profile, run_all, CheckContext, CpuSet, Identity, Limit, Placement, PlacementError, Profile,
    Report, Rlimits, Status, SysRoot,
};

struct Fake {
    dir: PathBuf,
    root: SysRoot,
    data: PathBuf,
}

impl Fake {
    /// An empty tree with a real data dir beside it.
    fn empty(name: &str) -> Fake {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tuning-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root")).unwrap();
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        Fake {
            root: SysRoot::at(dir.join("root")),
            dir,
            data,
        }
    }

    fn put(&self, abs: &str, text: &str) {
        let path = self.root.path(abs);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn get(&self, abs: &str) -> String {
        self.root.read(abs).unwrap()
    }

    fn mkdir(&self, abs: &str) {
        std::fs::create_dir_all(self.root.path(abs)).unwrap();
    }

    /// A host set up as the dedicated-nvme profile wants, 4 CPUs, NIC interrupts on CPU 0.
    fn tuned(name: &str) -> Fake {
        let f = Fake::empty(name);
        f.put("/proc/sys/kernel/io_uring_disabled", "0\n");
        f.put("/proc/sys/kernel/osrelease", "6.1.0-18-amd64\n");
        f.put("/proc/sys/vm/swappiness", "1\n");
        f.put("/proc/sys/fs/aio-max-nr", "1048576\n");
        f.put("/proc/sys/fs/nr_open", "2097152\n");
        f.put(
            "/sys/kernel/mm/transparent_hugepage/enabled",
            "always [madvise] never\n",
        );
        f.put(
            "/sys/kernel/mm/transparent_hugepage/defrag",
            "always defer [defer+madvise] madvise never\n",
        );
        f.put("/sys/devices/system/cpu/online", "0-3\n");
        for cpu in 0..4 {
            let d = format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq");
            f.put(&format!("{d}/scaling_governor"), "performance\n");
            f.put(
                &format!("{d}/scaling_available_governors"),
                "performance powersave\n",
            );
        }
        let cs = "/sys/devices/system/clocksource/clocksource0";
        f.put(&format!("{cs}/current_clocksource"), "tsc\n");
        f.put(&format!("{cs}/available_clocksource"), "tsc hpet acpi_pm\n");
        // The data dir's real device number, pointing at a partition of a fake NVMe disk.
        let dev = std::fs::metadata(&f.data).unwrap().dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        f.put(
            "/sys/block/nvme0n1/queue/scheduler",
            "[none] mq-deadline kyber\n",
        );
        f.put("/sys/block/nvme0n1/queue/nomerges", "2\n");
        f.put("/sys/block/nvme0n1/nvme0n1p1/partition", "1\n");
        f.mkdir("/sys/dev/block");
        std::os::unix::fs::symlink(
            "../../block/nvme0n1/nvme0n1p1",
            f.root.path(&format!("/sys/dev/block/{major}:{minor}")),
        )
        .unwrap();
        // eth0 (a device, MSI vectors 40 and 41, a named queue 42); lo (virtual, skipped).
        f.mkdir("/sys/class/net/eth0/device/msi_irqs/40");
        f.mkdir("/sys/class/net/eth0/device/msi_irqs/41");
        f.mkdir("/sys/class/net/lo");
        f.put(
            "/proc/interrupts",
            "           CPU0 CPU1 CPU2 CPU3\n  \
             9:  0 0 0 0  IO-APIC  9-fasteoi  acpi\n \
             40: 10 0 0 0 PCI-MSIX-0000:01:00.0 0-edge eth0-rx-0\n \
             41: 10 0 0 0 PCI-MSIX-0000:01:00.0 1-edge eth0-tx-0\n \
             42:  5 0 0 0 PCI-MSIX-0000:01:00.0 2-edge eth0-TxRx-2\n\
             NMI: 0 0 0 0 Non-maskable interrupts\n",
        );
        for irq in [9, 40, 41, 42] {
            f.put(&format!("/proc/irq/{irq}/smp_affinity_list"), "0\n");
        }
        f.put("/proc/1/comm", "systemd\n");
        f.put("/proc/77/comm", "sshd\n");
        f.mkdir("/run/systemd/system");
        f
    }

    /// The same host left at distribution defaults, and worse.
    fn untuned(name: &str) -> Fake {
        let f = Fake::tuned(name);
        f.put("/proc/sys/kernel/io_uring_disabled", "2\n");
        f.put("/proc/sys/kernel/osrelease", "5.4.0-150-generic\n");
        f.put("/proc/sys/vm/swappiness", "60\n");
        f.put("/proc/sys/fs/aio-max-nr", "65536\n");
        f.put("/proc/sys/fs/nr_open", "1048576\n");
        f.put(
            "/sys/kernel/mm/transparent_hugepage/enabled",
            "[always] madvise never\n",
        );
        f.put(
            "/sys/kernel/mm/transparent_hugepage/defrag",
            "[always] defer defer+madvise madvise never\n",
        );
        for cpu in 0..4 {
            let d = format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq");
            f.put(&format!("{d}/scaling_governor"), "powersave\n");
        }
        let cs = "/sys/devices/system/clocksource/clocksource0";
        f.put(&format!("{cs}/current_clocksource"), "hpet\n");
        f.put(
            "/sys/block/nvme0n1/queue/scheduler",
            "none [mq-deadline] kyber\n",
        );
        f.put("/sys/block/nvme0n1/queue/nomerges", "0\n");
        for irq in [40, 41, 42] {
            f.put(&format!("/proc/irq/{irq}/smp_affinity_list"), "0-3\n");
        }
        f.put("/proc/500/comm", "irqbalance\n");
        std::fs::remove_dir_all(f.root.path("/run/systemd")).unwrap();
        f
    }
}

fn cpus(s: &str) -> CpuSet {
    CpuSet::parse_list(s).unwrap()
}

fn placement(shards: &str, reserved: &str) -> Result<Placement, PlacementError> {
    Ok(Placement {
        shard_cores: cpus(shards),
        reserved_cores: if reserved.is_empty() {
            CpuSet::new()
        } else {
            cpus(reserved)
        },
    })
}

const UNLIMITED: Rlimits = Rlimits {
    memlock_bytes: Limit::Infinite,
    nofile: Limit::Finite(1 << 20),
};

fn dedicated() -> Profile {
    profile::load("dedicated-nvme").unwrap().1
}

fn report(
    f: &Fake,
    profile: &Profile,
    placement: &Result<Placement, PlacementError>,
    limits: Rlimits,
) -> Report {
    run_all(&CheckContext {
        root: &f.root,
        profile_name: "test",
        profile,
        data_dir: &f.data,
        placement,
        limits,
        identity: user(),
        connections_max_per_shard: 4096,
    })
}

/// The broker's user: not root, in its own group only.
fn user() -> Identity {
    Identity {
        euid: 1000,
        gids: vec![1000],
    }
}

fn by_name(r: &Report) -> BTreeMap<&'static str, (Status, String)> {
    r.checks
        .iter()
        .map(|c| (c.name, (c.status, c.current.clone())))
        .collect()
}

#[test]
fn tuned_host_passes_every_check() {
    let f = Fake::tuned("tuned");
    let r = report(&f, &dedicated(), &placement("1-3", "0"), UNLIMITED);
    let names: Vec<_> = r.checks.iter().map(|c| c.name).collect();
    assert_eq!(names, CHECK_NAMES);
    for c in &r.checks {
        // The data dir is real: ext4/xfs here, but a developer's btrfs only warns.
        if c.name == "data_dir.filesystem" && c.status == Status::Warn {
            continue;
        }
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(!c.why.is_empty() && !c.recommended.is_empty(), "{c:?}");
    }
    assert_eq!(r.required_failures(), 0);
    let m = by_name(&r);
    assert_eq!(m["data_device.scheduler"].1, "none (nvme0n1)");
    assert_eq!(m["irq.nic_affinity"].1, "all 3 on reserved cores 0");
    assert_eq!(
        m["cpu.governor"].1,
        "cpu1=performance,cpu2=performance,cpu3=performance"
    );
}

#[test]
fn untuned_host_fails_and_warns_where_it_should() {
    let f = Fake::untuned("untuned");
    let limits = Rlimits {
        memlock_bytes: Limit::Finite(64 << 10),
        nofile: Limit::Finite(1024),
    };
    let bad = Err(PlacementError::Host("test".into()));
    let r = report(&f, &dedicated(), &bad, limits);
    let m = by_name(&r);
    for name in [
        "placement.cores",
        "kernel.io_uring_disabled",
        "kernel.version",
        "rlimit.memlock",
        "rlimit.nofile",
    ] {
        assert_eq!(m[name].0, Status::Fail, "{name}: {:?}", m[name]);
    }
    assert_eq!(r.required_failures(), 5);
    for name in [
        "fs.aio-max-nr",
        "vm.swappiness",
        "transparent_hugepage.enabled",
        "transparent_hugepage.defrag",
        "cpu.governor",
        "clocksource",
        "data_device.scheduler",
        "data_device.nomerges",
        "init.systemd",
    ] {
        assert_eq!(m[name].0, Status::Warn, "{name}: {:?}", m[name]);
    }
    // With an invalid placement there are no reserved cores: nothing to steer to.
    assert_eq!(m["irq.nic_affinity"].0, Status::Ok);
    assert_eq!(m["vm.swappiness"].1, "60");
    assert_eq!(m["clocksource"].1, "hpet");
    let clock = r.checks.iter().find(|c| c.name == "clocksource").unwrap();
    assert!(
        clock.recommended.contains("boot with clocksource=tsc"),
        "{clock:?}"
    );
}

#[test]
fn interrupts_on_shard_cores_and_irqbalance_warn() {
    let f = Fake::untuned("irqs");
    let r = report(&f, &dedicated(), &placement("1-3", "0"), UNLIMITED);
    let m = by_name(&r);
    assert_eq!(m["irq.nic_affinity"].0, Status::Warn);
    let cur = &m["irq.nic_affinity"].1;
    for irq in ["irq 40 (eth0) on 0-3", "irq 41 (eth0)", "irq 42 (eth0)"] {
        assert!(cur.contains(irq), "{cur}");
    }
    assert!(!cur.contains("irq 9"), "{cur}");
    assert_eq!(m["irqbalance"], (Status::Warn, "running".to_string()));
    // The shared-host profile does not steer interrupts: both are fine there.
    let shared = profile::load("shared-host").unwrap().1;
    let m = by_name(&report(&f, &shared, &placement("1-3", "0"), UNLIMITED));
    assert_eq!(m["irq.nic_affinity"].0, Status::Ok);
    assert_eq!(m["irqbalance"].0, Status::Ok);
    // Keys the profile leaves out are reported, not judged.
    assert_eq!(m["cpu.governor"].0, Status::Ok);
    assert_eq!(m["data_device.scheduler"].0, Status::Ok);
}

#[test]
fn limits_between_minimum_and_recommended_warn() {
    let f = Fake::tuned("limits");
    let limits = Rlimits {
        memlock_bytes: Limit::Finite(8 << 20),
        nofile: Limit::Finite(20000),
    };
    let r = report(&f, &dedicated(), &placement("1-3", "0"), limits);
    let m = by_name(&r);
    assert_eq!(
        m["rlimit.memlock"].0,
        Status::Warn,
        "{:?}",
        m["rlimit.memlock"]
    );
    assert_eq!(
        m["rlimit.nofile"].0,
        Status::Warn,
        "{:?}",
        m["rlimit.nofile"]
    );
    assert_eq!(r.required_failures(), 0);
    let r = report(&f, &dedicated(), &placement("0-3", ""), limits);
    let nofile = r.checks.iter().find(|c| c.name == "rlimit.nofile").unwrap();
    assert!(nofile.recommended.contains("at least 17408"), "{nofile:?}");
}

#[test]
fn io_uring_restricted_to_a_group_fails_unless_the_user_is_in_it() {
    let f = Fake::tuned("uring1");
    f.put("/proc/sys/kernel/io_uring_disabled", "1\n");
    f.put("/proc/sys/kernel/io_uring_group", "27\n");
    let profile = dedicated();
    let p = placement("1-3", "0");
    let status = |identity: Identity| {
        let r = run_all(&CheckContext {
            identity,
            ..ctx(&f, &profile, &p, UNLIMITED)
        });
        by_name(&r)["kernel.io_uring_disabled"].clone()
    };
    let (st, current) = status(user());
    assert_eq!(st, Status::Fail, "{current}");
    assert!(current.contains("group 27"), "{current}");
    let member = Identity {
        euid: 1000,
        gids: vec![27, 1000],
    };
    assert_eq!(status(member).0, Status::Ok);
    let root = Identity {
        euid: 0,
        gids: vec![0],
    };
    assert_eq!(status(root).0, Status::Ok);
    // 2: off for everyone, root included.
    f.put("/proc/sys/kernel/io_uring_disabled", "2\n");
    let r = report(&f, &profile, &p, UNLIMITED);
    assert_eq!(by_name(&r)["kernel.io_uring_disabled"].0, Status::Fail);
    // Kernels before 6.6 have no switch at all: io_uring is on.
    std::fs::remove_file(f.root.path("/proc/sys/kernel/io_uring_disabled")).unwrap();
    let r = report(&f, &profile, &p, UNLIMITED);
    assert_eq!(by_name(&r)["kernel.io_uring_disabled"].0, Status::Ok);
}

#[test]
fn unreadable_values_are_unknown_and_still_reported() {
    let f = Fake::empty("bare");
    let r = report(&f, &dedicated(), &placement("0", ""), UNLIMITED);
    let names: Vec<_> = r.checks.iter().map(|c| c.name).collect();
    assert_eq!(names, CHECK_NAMES);
    let m = by_name(&r);
    for name in [
        "kernel.version",
        "fs.nr_open",
        "fs.aio-max-nr",
        "vm.swappiness",
        "transparent_hugepage.enabled",
        "cpu.governor",
        "clocksource",
        "data_device.scheduler",
        "data_device.nomerges",
        "irq.nic_affinity",
    ] {
        assert_eq!(m[name].0, Status::Unknown, "{name}: {:?}", m[name]);
    }
    // The data dir is real: its checks still run.
    assert_eq!(
        m["data_dir.o_direct"].0,
        Status::Ok,
        "{:?}",
        m["data_dir.o_direct"]
    );
    assert_eq!(r.required_failures(), 0);
}

#[test]
fn missing_data_dir_is_probed_at_its_parent() {
    let f = Fake::tuned("nodata");
    let missing = f.data.join("not/yet");
    let p = placement("1-3", "0");
    let profile = dedicated();
    let r = run_all(&CheckContext {
        root: &f.root,
        profile_name: "test",
        profile: &profile,
        data_dir: &missing,
        placement: &p,
        limits: UNLIMITED,
        identity: user(),
        connections_max_per_shard: 1,
    });
    let m = by_name(&r);
    assert_eq!(m["data_dir.o_direct"].0, Status::Ok);
    assert!(
        m["data_dir.o_direct"].1.contains("data dir absent"),
        "{:?}",
        m["data_dir.o_direct"]
    );
    assert!(!missing.exists(), "a check created the data dir");
}

#[test]
fn direct_io_probe_fails_where_o_direct_does() {
    let f = Fake::empty("probe");
    assert_eq!(probe_direct_io(&f.data).outcome, Ok(()));
    let leftovers: Vec<_> = std::fs::read_dir(&f.data).unwrap().collect();
    assert!(leftovers.is_empty(), "the probe left {leftovers:?}");
    let gone = probe_direct_io(&f.data.join("absent"));
    assert!(gone.outcome.unwrap_err().to_string().contains("creating"));
}

#[test]
fn dry_run_prints_every_change_and_writes_nothing() {
    let f = Fake::untuned("dryrun");
    let p = placement("1-3", "0");
    let profile = dedicated();
    let limits = Rlimits {
        memlock_bytes: Limit::Finite(64 << 10),
        nofile: Limit::Finite(1024),
    };
    let ctx = ctx(&f, &profile, &p, limits);
    let before = snapshot(&f);
    let lines: Vec<String> = apply(&f.root, &plan(&ctx), true)
        .iter()
        .map(|o| o.to_string())
        .collect();
    assert_eq!(before, snapshot(&f), "dry run wrote to the tree");
    for want in [
        "vm.swappiness: 60 -> 1 (dry run: not written)",
        "fs.aio-max-nr: 65536 -> 1048576 (dry run: not written)",
        "transparent_hugepage.enabled: always -> madvise (dry run: not written)",
        "transparent_hugepage.defrag: always -> defer+madvise (dry run: not written)",
        "cpu1.governor: powersave -> performance (dry run: not written)",
        "nvme0n1.scheduler: mq-deadline -> none (dry run: not written)",
        "nvme0n1.nomerges: 0 -> 2 (dry run: not written)",
        "irq40(eth0).affinity: 0-3 -> 0 (dry run: not written)",
        "fs.nr_open: 1048576 (already as recommended)",
    ] {
        assert!(
            lines.iter().any(|l| l == want),
            "missing {want:?} in {lines:#?}"
        );
    }
    for key in [
        "rlimit.memlock",
        "rlimit.nofile",
        "clocksource",
        "kernel.io_uring_disabled",
        "irqbalance",
    ] {
        let prefix = format!("{key}: not changed: ");
        assert!(
            lines.iter().any(|l| l.starts_with(&prefix)),
            "missing {prefix:?} in {lines:#?}"
        );
    }
    // cpu0 is reserved, not a shard core: its governor is not the profile's business.
    assert!(!lines.iter().any(|l| l.starts_with("cpu0.")), "{lines:#?}");
}

#[test]
fn apply_writes_what_the_profile_sets_and_nothing_else() {
    let f = Fake::untuned("apply");
    let p = placement("1-3", "0");
    let profile = dedicated();
    let outcomes = apply(&f.root, &plan(&ctx(&f, &profile, &p, UNLIMITED)), false);
    assert!(outcomes.iter().all(|o| !o.is_failure()), "{outcomes:#?}");
    assert_eq!(f.get("/proc/sys/vm/swappiness"), "1");
    assert_eq!(f.get("/proc/sys/fs/aio-max-nr"), "1048576");
    assert_eq!(
        f.get("/sys/kernel/mm/transparent_hugepage/enabled"),
        "madvise"
    );
    assert_eq!(
        f.get("/sys/devices/system/cpu/cpu2/cpufreq/scaling_governor"),
        "performance"
    );
    assert_eq!(
        f.get("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "powersave"
    );
    assert_eq!(f.get("/sys/block/nvme0n1/queue/scheduler"), "none");
    assert_eq!(f.get("/sys/block/nvme0n1/queue/nomerges"), "2");
    assert_eq!(f.get("/proc/irq/41/smp_affinity_list"), "0");
    assert_eq!(
        f.get("/proc/irq/9/smp_affinity_list"),
        "0",
        "not a NIC interrupt"
    );
    // Never undone, never moved away from the profile: a second run changes nothing.
    let again = apply(&f.root, &plan(&ctx(&f, &profile, &p, UNLIMITED)), false);
    assert!(
        again
            .iter()
            .all(|o| !matches!(o, sluice_tuning::Outcome::Changed { .. })),
        "{again:#?}"
    );
    // Checks now pass where apply could act.
    let m = by_name(&report(&f, &profile, &p, UNLIMITED));
    for name in [
        "vm.swappiness",
        "cpu.governor",
        "data_device.scheduler",
        "irq.nic_affinity",
    ] {
        assert_eq!(m[name].0, Status::Ok, "{name}: {:?}", m[name]);
    }
}

#[test]
fn apply_leaves_better_values_and_keys_outside_the_profile() {
    let f = Fake::untuned("shared");
    f.put("/proc/sys/vm/swappiness", "5\n");
    f.put("/proc/sys/fs/aio-max-nr", "4194304\n");
    let p = placement("1-3", "0");
    let shared = profile::load("shared-host").unwrap().1;
    let before = snapshot(&f);
    let outcomes = apply(&f.root, &plan(&ctx(&f, &shared, &p, UNLIMITED)), false);
    assert!(outcomes.iter().all(|o| !o.is_failure()), "{outcomes:#?}");
    let after = snapshot(&f);
    let changed: Vec<_> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(changed, vec!["sys/kernel/mm/transparent_hugepage/enabled"]);
}

#[test]
fn apply_refuses_values_the_knob_does_not_offer() {
    let f = Fake::untuned("offer");
    f.put(
        "/sys/block/nvme0n1/queue/scheduler",
        "[mq-deadline] kyber\n",
    );
    let p = placement("1-3", "0");
    let profile = dedicated();
    let lines: Vec<String> = apply(&f.root, &plan(&ctx(&f, &profile, &p, UNLIMITED)), false)
        .iter()
        .map(|o| o.to_string())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("nvme0n1.scheduler: not changed: \"none\" is not offered")),
        "{lines:#?}"
    );
    assert_eq!(
        f.get("/sys/block/nvme0n1/queue/scheduler"),
        "[mq-deadline] kyber"
    );
}

#[test]
fn virtio_nic_interrupts_come_from_the_parent_pci_device() {
    // As on a KVM guest: eth0's device is virtio2, whose PCI parent holds the MSI vectors.
    let f = Fake::empty("virtio");
    f.mkdir("/sys/devices/pci0000:00/0000:00:03.0/virtio2");
    for irq in ["37", "38", "39"] {
        f.mkdir(&format!(
            "/sys/devices/pci0000:00/0000:00:03.0/msi_irqs/{irq}"
        ));
        f.put(&format!("/proc/irq/{irq}/smp_affinity_list"), "0-1\n");
    }
    f.mkdir("/sys/class/net/eth0");
    std::os::unix::fs::symlink(
        "../../../devices/pci0000:00/0000:00:03.0/virtio2",
        f.root.path("/sys/class/net/eth0/device"),
    )
    .unwrap();
    let irqs = sluice_tuning::checks::nic_irqs(&f.root);
    let found: Vec<(u32, &str)> = irqs.iter().map(|i| (i.irq, i.iface.as_str())).collect();
    assert_eq!(found, vec![(37, "eth0"), (38, "eth0"), (39, "eth0")]);
    assert!(irqs.iter().all(|i| i.affinity == Ok(cpus("0-1"))));
}

#[test]
fn sysroot_writes_never_create_files() {
    let f = Fake::empty("nocreate");
    assert!(f.root.write("/proc/sys/vm/swappiness", "1").is_err());
    assert!(!f.root.exists("/proc/sys/vm/swappiness"));
}

fn ctx<'a>(
    f: &'a Fake,
    profile: &'a Profile,
    placement: &'a Result<Placement, PlacementError>,
    limits: Rlimits,
) -> CheckContext<'a> {
    CheckContext {
        root: &f.root,
        profile_name: "test",
        profile,
        data_dir: &f.data,
        placement,
        limits,
        identity: user(),
        connections_max_per_shard: 4096,
    }
}

/// Every regular file of the fake tree with its contents.
fn snapshot(f: &Fake) -> BTreeMap<String, String> {
    let base = f.dir.join("root");
    let mut out = BTreeMap::new();
    let mut stack = vec![base.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let ty = e.file_type().unwrap();
            if ty.is_dir() {
                stack.push(e.path());
            } else if ty.is_file() {
                let rel = e.path().strip_prefix(&base).unwrap().display().to_string();
                out.insert(rel, std::fs::read_to_string(e.path()).unwrap());
            }
        }
    }
    out
}
