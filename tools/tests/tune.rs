//! `sluice tune`: `check` on this machine (read-only: it must report every item, and its exit
//! status must follow the required checks), and `apply` only ever against fake trees.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sluice_tuning::checks::CHECK_NAMES;

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tune-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sluice")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn check_json(args: &[&str]) -> (i32, serde_json::Value) {
    let out = sluice(args);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (out.status.code().expect("exit code"), doc)
}

#[test]
fn check_on_this_machine_reports_every_item() {
    let data = tmp("host").join("data");
    std::fs::create_dir_all(&data).unwrap();
    let swappiness = std::fs::read_to_string("/proc/sys/vm/swappiness").ok();
    let (code, doc) = check_json(&[
        "tune",
        "check",
        "--json",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let checks = doc["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, CHECK_NAMES);
    let mut failed = 0;
    for c in checks {
        for field in ["current", "recommended", "why"] {
            assert!(
                !c[field].as_str().unwrap().is_empty(),
                "{field} empty in {c}"
            );
        }
        let severity = c["severity"].as_str().unwrap();
        let status = c["status"].as_str().unwrap();
        assert!(["required", "recommended"].contains(&severity), "{c}");
        assert!(["ok", "warn", "fail", "unknown"].contains(&status), "{c}");
        if severity == "required" && status == "fail" {
            failed += 1;
        }
    }
    assert_eq!(doc["required_failures"], failed);
    assert_eq!(code, if failed > 0 { 2 } else { 0 }, "{doc:#}");
    assert_eq!(doc["profile"], "dedicated-nvme");
    // The data dir is a real ext4/xfs directory here: the probe ran and cleaned up.
    let probe = checks
        .iter()
        .find(|c| c["name"] == "data_dir.o_direct")
        .unwrap();
    assert_eq!(probe["status"], "ok", "{probe}");
    assert_eq!(
        std::fs::read_dir(&data).unwrap().count(),
        0,
        "the probe left a file"
    );
    // Read-only: nothing of the host changed.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/swappiness").ok(),
        swappiness
    );
}

#[test]
fn check_text_names_every_item_and_the_summary() {
    let data = tmp("text");
    let out = sluice(&[
        "tune",
        "check",
        "--profile",
        "shared-host",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    for name in CHECK_NAMES {
        assert!(
            stdout.contains(&format!("] {name} (")),
            "{name} missing:\n{stdout}"
        );
    }
    assert!(stdout.contains("19 checks: "), "{stdout}");
    assert!(stdout.contains("profile shared-host"), "{stdout}");
}

#[test]
fn invalid_placement_fails_check_with_the_field_named() {
    let dir = tmp("placement");
    let config = dir.join("sluice.toml");
    std::fs::write(&config, "[placement]\ncores = \"0-999\"\n").unwrap();
    let (code, doc) = check_json(&[
        "tune",
        "check",
        "--json",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{doc:#}");
    let c = &doc["checks"][0];
    assert_eq!(c["name"], "placement.cores");
    assert_eq!(c["status"], "fail");
    assert!(
        c["current"]
            .as_str()
            .unwrap()
            .starts_with("placement.cores: CPU "),
        "{c}"
    );
    // A config that does not parse is a usage error (1), not a check result.
    std::fs::write(&config, "[placement]\ncores = \"x\"\n").unwrap();
    let out = sluice(&["tune", "check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cores"), "{}", text(&out.stderr));
}

#[test]
fn check_reads_the_placement_of_the_sample_production_config() {
    let dir = tmp("sample");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/sluice.toml");
    // --data-dir: the sample's /var/lib/sluice/data is not this test's to probe.
    let (_, doc) = check_json(&[
        "tune",
        "check",
        "--json",
        "--config",
        config,
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    let placement = &doc["checks"][0];
    assert_eq!(placement["name"], "placement.cores");
    let current = placement["current"].as_str().unwrap();
    // The sample reserves CPU 0; on a one-CPU machine nothing is left, and check says so.
    if placement["status"] == "ok" {
        assert!(
            current.ends_with("reserved 0") && !current.starts_with("shards on 0"),
            "{current}"
        );
    } else {
        assert!(current.contains("leaves no CPU for shards"), "{current}");
    }
}

#[test]
fn unknown_profile_is_refused_and_profile_files_load() {
    let out = sluice(&["tune", "check", "--profile", "no-such-profile"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("no-such-profile") && err.contains("dedicated-nvme"),
        "{err}"
    );
    let dir = tmp("profile");
    let file = dir.join("mine.toml");
    std::fs::write(&file, "description = \"mine\"\nvm_swappiness = 200\n").unwrap();
    let (_, doc) = check_json(&[
        "tune",
        "check",
        "--json",
        "--profile",
        file.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    let swap = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "vm.swappiness")
        .unwrap();
    assert_eq!(swap["recommended"], "200 or less");
    std::fs::write(&file, "description = \"mine\"\nswapiness = 1\n").unwrap();
    let out = sluice(&["tune", "check", "--profile", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("swapiness"),
        "{}",
        text(&out.stderr)
    );
}

/// A small fake tree: two CPUs, swappiness 60, THP always.
fn fake_root(name: &str) -> PathBuf {
    let root = tmp(name).join("root");
    let put = |abs: &str, body: &str| {
        let p = root.join(abs.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    };
    put("/sys/devices/system/cpu/online", "0-1\n");
    put("/proc/sys/vm/swappiness", "60\n");
    put("/proc/sys/fs/aio-max-nr", "65536\n");
    put(
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "[always] madvise never\n",
    );
    root
}

#[test]
fn apply_dry_run_on_a_fake_tree_prints_and_writes_nothing() {
    let root = fake_root("dry");
    let data = root.parent().unwrap().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let args = |dry: bool| {
        let mut a = vec![
            "tune",
            "apply",
            "--profile",
            "shared-host",
            "--root",
            root.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ];
        if dry {
            a.push("--dry-run");
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |dry| {
        let a = args(dry);
        sluice(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = run(true);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for line in [
        "vm.swappiness: 60 -> 10 (dry run: not written)",
        "fs.aio-max-nr: 65536 -> 1048576 (dry run: not written)",
        "transparent_hugepage.enabled: always -> madvise (dry run: not written)",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?}:\n{stdout}"
        );
    }
    let swap = root.join("proc/sys/vm/swappiness");
    assert_eq!(std::fs::read_to_string(&swap).unwrap(), "60\n");
    // The same without --dry-run writes them, and says so.
    let out = run(false);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.lines().any(|l| l == "vm.swappiness: 60 -> 10"),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&swap).unwrap(), "10");
    assert_eq!(
        std::fs::read_to_string(root.join("sys/kernel/mm/transparent_hugepage/enabled")).unwrap(),
        "madvise"
    );
    // JSON: every step with its action.
    let mut a = args(true);
    a.push("--json".into());
    let (code, doc) = check_json(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0);
    let swap = doc["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "vm.swappiness")
        .unwrap();
    assert_eq!(swap["action"], "unchanged");
}

/// Starts `sluice serve` with `config`; returns its first stdout line, or its exit status and
/// stderr if it stopped instead.
fn serve_first_line(config: &Path, data: &Path, extra: &[&str]) -> Result<String, (i32, String)> {
    use std::io::{BufRead, BufReader, Read};
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.is_empty() {
        let status = child.wait().unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        return Err((status.code().unwrap_or(-1), err));
    }
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
    Ok(line)
}

#[test]
fn serve_runs_the_configured_placement_and_refuses_a_bad_one() {
    let dir = tmp("serve");
    let config = dir.join("sluice.toml");
    // A count of one core, unpinned (as tests run): one shard.
    std::fs::write(&config, "pin_cores = false\n[placement]\ncores = 1\n").unwrap();
    let line = serve_first_line(&config, &dir.join("data"), &[]).unwrap();
    assert!(line.contains(", 1 shards,"), "{line}");
    // Pinned to CPUs this machine does not have: start-up stops, naming the key.
    std::fs::write(&config, "[placement]\ncores = \"0,4000\"\n").unwrap();
    let (code, err) = serve_first_line(&config, &dir.join("data"), &[]).unwrap_err();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("placement.cores: CPU 4000 not online"),
        "{err}"
    );
    // The old top-level key and the flag still work (the flag wins).
    std::fs::write(&config, "cores = \"0\"\n").unwrap();
    let line =
        serve_first_line(&config, &dir.join("data"), &["--no-pin", "--cores", "0-1"]).unwrap();
    assert!(line.contains(", 2 shards,"), "{line}");
    // Reserved cores overlapping a listed one are refused, pinned or not.
    std::fs::write(
        &config,
        "[placement]\ncores = \"0-1\"\nreserved_cores = \"1\"\n",
    )
    .unwrap();
    let (code, err) = serve_first_line(&config, &dir.join("data"), &["--no-pin"]).unwrap_err();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("placement.cores: CPU 1 also in placement.reserved_cores"),
        "{err}"
    );
}
