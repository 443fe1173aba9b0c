//! `sluice tune check | apply`: the host checks and changes of `sluice-tuning`, run for the
//! placement and data dir of a broker config. `check` exits 2 when a required check fails
//! (so a systemd `ExecStartPre` stops the start); `apply` exits 1 when a write failed.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use sluice_tuning::apply::{apply, plan};
use sluice_tuning::{
    profile, run_all, CheckContext, Identity, Outcome, Report, Rlimits, Status, SysRoot,
};

use crate::config;

/// Exit status of `check` when a required check fails (1 is a usage or config error).
pub const EXIT_REQUIRED_FAILED: i32 = 2;

#[derive(Debug, Args)]
pub struct TuneArgs {
    #[command(subcommand)]
    command: TuneCommand,
}

#[derive(Debug, Subcommand)]
enum TuneCommand {
    /// Compare the host with a profile: every item with its current value, the
    /// recommended one and why. Read-only (the O_DIRECT probe writes and removes one file
    /// in the data dir).
    Check(TuneOptions),
    /// Set the sysctls and sysfs knobs of the profile that can be changed at run time (as
    /// root), printing each change as `key: old -> new`.
    Apply(ApplyArgs),
}

#[derive(Debug, Args)]
struct TuneOptions {
    /// A built-in profile (dedicated-nvme, shared-host) or a profile file.
    #[arg(long, value_name = "NAME|FILE", default_value = profile::DEFAULT_PROFILE)]
    profile: String,
    /// The broker's config file: placement (cores, reserved cores), data dir, connection
    /// bounds.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The data dir to check (default: the config's, else ./sluice-data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Read and write /proc, /sys and /run under DIR instead of / (tests, chroots).
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
}

#[derive(Debug, Args)]
struct ApplyArgs {
    #[command(flatten)]
    options: TuneOptions,
    /// Print what would change; write nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Everything the checks need, owned.
struct Inputs {
    root: SysRoot,
    profile_name: String,
    profile: sluice_tuning::Profile,
    data_dir: PathBuf,
    placement: Result<sluice_tuning::Placement, sluice_tuning::PlacementError>,
    limits: Rlimits,
    identity: Identity,
    connections_max_per_shard: u64,
}

impl Inputs {
    fn load(o: &TuneOptions) -> Result<Inputs> {
        let (profile_name, profile) = profile::load(&o.profile)?;
        let file = match &o.config {
            Some(path) => config::load_file(path)?,
            None => config::FileConfig::default(),
        };
        let root = SysRoot::at(&o.root);
        let pinned = file.pin_cores.unwrap_or(true);
        let placement = config::placement(&file, None, pinned, &config::host_cpus(&root))?;
        let data_dir = o
            .data_dir
            .clone()
            .or(file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(config::DATA_DIR_DEFAULT));
        let connections = file
            .network
            .connections_max_per_shard
            .map_or(config::CONNECTIONS_MAX_PER_SHARD_DEFAULT, u64::from);
        Ok(Inputs {
            root,
            profile_name,
            profile,
            data_dir,
            placement,
            limits: Rlimits::current().context("reading this process's rlimits")?,
            identity: Identity::current(),
            connections_max_per_shard: connections,
        })
    }

    fn context(&self) -> CheckContext<'_> {
        CheckContext {
            root: &self.root,
            profile_name: &self.profile_name,
            profile: &self.profile,
            data_dir: &self.data_dir,
            placement: &self.placement,
            limits: self.limits,
            identity: self.identity.clone(),
            connections_max_per_shard: self.connections_max_per_shard,
        }
    }
}

/// Runs the subcommand; returns the process exit status.
pub fn main(args: TuneArgs) -> Result<i32> {
    match args.command {
        TuneCommand::Check(o) => check(&o),
        TuneCommand::Apply(a) => apply_cmd(&a),
    }
}

fn check(o: &TuneOptions) -> Result<i32> {
    let inputs = Inputs::load(o)?;
    let report = run_all(&inputs.context());
    if o.json {
        let doc = json!({
            "profile": report.profile,
            "data_dir": inputs.data_dir,
            "required_failures": report.required_failures(),
            "checks": report.checks,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_report(&report, &inputs);
    }
    Ok(if report.required_failures() > 0 {
        EXIT_REQUIRED_FAILED
    } else {
        0
    })
}

fn print_report(report: &Report, inputs: &Inputs) {
    println!(
        "sluice tune check: profile {} ({}), data dir {}",
        report.profile,
        inputs.profile.description,
        inputs.data_dir.display()
    );
    for c in &report.checks {
        let severity = format!("{:?}", c.severity).to_lowercase();
        println!(
            "\n[{:<7}] {} ({severity}): {}",
            c.status.as_str(),
            c.name,
            c.current
        );
        println!("          recommended: {}", c.recommended);
        println!("          why: {}", c.why);
    }
    let count = |s: Status| report.checks.iter().filter(|c| c.status == s).count();
    println!(
        "\n{} checks: {} ok, {} warn, {} fail, {} unknown",
        report.checks.len(),
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail),
        count(Status::Unknown)
    );
    match report.required_failures() {
        0 => println!("no required check failed"),
        n => println!("NOT READY: {n} required check(s) failed"),
    }
}

fn apply_cmd(a: &ApplyArgs) -> Result<i32> {
    let inputs = Inputs::load(&a.options)?;
    let outcomes = apply(&inputs.root, &plan(&inputs.context()), a.dry_run);
    if a.options.json {
        let items: Vec<_> = outcomes.iter().map(outcome_json).collect();
        let doc = json!({"profile": inputs.profile_name, "dry_run": a.dry_run, "changes": items});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        let mode = if a.dry_run { " (dry run)" } else { "" };
        println!("sluice tune apply{mode}: profile {}", inputs.profile_name);
        for o in &outcomes {
            println!("{o}");
        }
        let changed = outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Changed { .. }));
        if changed {
            println!(
                "these changes last until reboot; to keep them, see \"Run on a bare-metal host\" in docs/operations.md"
            );
        }
    }
    Ok(if outcomes.iter().any(Outcome::is_failure) {
        1
    } else {
        0
    })
}

fn outcome_json(o: &Outcome) -> serde_json::Value {
    match o {
        Outcome::Changed { key, old, new } => {
            json!({"key": key, "action": "changed", "old": old, "new": new})
        }
        Outcome::WouldChange { key, old, new } => {
            json!({"key": key, "action": "would_change", "old": old, "new": new})
        }
        Outcome::Failed {
            key,
            old,
            new,
            error,
        } => json!({"key": key, "action": "failed", "old": old, "new": new, "error": error}),
        Outcome::Unchanged { key, value } => {
            json!({"key": key, "action": "unchanged", "old": value, "new": value})
        }
        Outcome::NotChanged { key, why } => {
            json!({"key": key, "action": "not_changed", "why": why})
        }
    }
}
