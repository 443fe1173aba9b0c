//! `sluice bench compare`: one scenario against several brokers in turn (A B A B …), so
//! peers are measured by the same generator under the same conditions, then a side-by-side
//! table with ratios to the first address.

use std::fmt::Write as _;

use anyhow::{bail, Result};

use super::report::{self, Report};
use super::run;
use super::{CompareArgs, Scenario};

pub fn compare(args: &CompareArgs) -> Result<()> {
    let targets = &args.scenario.bootstrap;
    if targets.len() < 2 {
        bail!("compare needs at least two --bootstrap addresses");
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let mut results: Vec<Vec<Report>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds {
        for (i, t) in targets.iter().enumerate() {
            eprintln!("compare: round {} of {}, {t}", round + 1, args.rounds);
            let r = run::run(args.workload, &round_scenario(&args.scenario, round), t)?;
            print!("{}", report::table(&r));
            if let Some(c) = &r.check {
                if !c.ok {
                    eprintln!(
                        "compare: {t}: count check failed ({} acknowledged, offsets grew {})",
                        c.acknowledged, c.offset_growth
                    );
                }
            }
            results[i].push(r);
        }
    }
    print!("{}", side_by_side(targets, &results));
    Ok(())
}

/// Per target: mean msgs/s and MB/s, median p50/p99 over rounds, ratio to the first target.
/// The scenario of one round: with `--group NAME` each round gets its own group
/// (`NAME-1`, `NAME-2`, …), since a group resumes at its commits and a later consume round
/// would otherwise find nothing left to read.
fn round_scenario(sc: &Scenario, round: usize) -> Scenario {
    let mut sc = sc.clone();
    if let Some(g) = &mut sc.group {
        *g = format!("{g}-{}", round + 1);
    }
    sc
}

fn side_by_side(targets: &[String], results: &[Vec<Report>]) -> String {
    let mut s = String::new();
    let roles: Vec<_> = results[0]
        .first()
        .map(|r| r.totals.iter().map(|t| t.role).collect())
        .unwrap_or_default();
    for role in roles {
        let _ = writeln!(s, "\ncompare ({role:?}, {} rounds)", results[0].len());
        let _ = writeln!(
            s,
            "{:<24} {:>13} {:>9} {:>10} {:>10} {:>9} {:>9}",
            "bootstrap", "msgs/s", "MB/s", "p50 µs", "p99 µs", "x msgs/s", "x p99"
        );
        let mut base: Option<(f64, f64)> = None;
        for (t, rs) in targets.iter().zip(results) {
            let rows: Vec<_> = rs
                .iter()
                .filter_map(|r| r.totals.iter().find(|x| x.role == role))
                .collect();
            let n = rows.len().max(1) as f64;
            let msgs = rows.iter().map(|r| r.msgs_per_s).sum::<f64>() / n;
            let mb = rows.iter().map(|r| r.mb_per_s).sum::<f64>() / n;
            let p50 = median(rows.iter().map(|r| r.latency_us.p50).collect());
            let p99 = median(rows.iter().map(|r| r.latency_us.p99).collect());
            let (bm, bp) = *base.get_or_insert((msgs, p99));
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
            let _ = writeln!(
                s,
                "{t:<24} {:>13.0} {:>9.1} {:>10.0} {:>10.0} {:>9.2} {:>9.2}",
                msgs,
                mb,
                p50,
                p99,
                ratio(msgs, bm),
                ratio(p99, bp)
            );
        }
    }
    s
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        scenario: Scenario,
    }

    #[test]
    fn each_round_has_its_own_group() {
        let sc = Flags::parse_from(["bench", "--group", "g"]).scenario;
        assert_eq!(round_scenario(&sc, 0).group.as_deref(), Some("g-1"));
        assert_eq!(round_scenario(&sc, 1).group.as_deref(), Some("g-2"));
        let pinned = Flags::parse_from(["bench"]).scenario;
        assert_eq!(round_scenario(&pinned, 1).group, None);
    }
}
