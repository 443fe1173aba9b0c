//! What a run reports: the summary table, the progress line, JSON, the HdrHistogram interval
//! log and a self-contained HTML page with inline SVG charts.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2Serializer;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::stats::{new_histogram, Collector, Percentiles, Role, Sample};
use super::{Control, Scenario, Workload};

/// The acknowledged count against the growth of the end offsets.
#[derive(Debug, Clone, Serialize)]
pub struct CountCheck {
    pub acknowledged: u64,
    pub offset_growth: i64,
    pub ok: bool,
}

/// One row of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub role: Role,
    pub messages: u64,
    pub bytes: u64,
    pub errors: u64,
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    pub latency_us: Percentiles,
}

/// The whole report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workload: Workload,
    pub bootstrap: String,
    pub scenario: Scenario,
    pub started_unix_ms: i64,
    /// Seconds of the measured window (after warm-up).
    pub measured_s: f64,
    /// What latency means for each role in this run.
    pub latency: Vec<(Role, &'static str)>,
    pub actors: Vec<Row>,
    pub totals: Vec<Row>,
    /// Latency percentile curve per role: (percentile, microseconds).
    pub curves: Vec<(Role, Vec<(f64, f64)>)>,
    pub timeline: Vec<Sample>,
    pub check: Option<CountCheck>,
    /// Acknowledged messages over the whole run, warm-up included.
    pub acknowledged_all: u64,
    /// e2e: messages the consumers read over the whole run.
    pub consumed_all: Option<u64>,
    #[serde(skip)]
    pub intervals: Vec<(u64, u64, Role, Histogram<u64>)>,
}

#[allow(clippy::too_many_arguments)]
pub fn build(
    workload: Workload,
    sc: &Scenario,
    bootstrap: &str,
    started_unix_ms: i64,
    c: &Collector,
    ended_ns: u64,
    check: Option<CountCheck>,
    consumed_all: Option<u64>,
    acknowledged_all: u64,
) -> Report {
    let measured_s = c
        .measured_from_ns
        .map_or(0.0, |f| ended_ns.saturating_sub(f) as f64 / 1e9)
        .max(1e-9);
    let row = |name: String, role, messages: u64, bytes: u64, errors, h: &Histogram<u64>| Row {
        name,
        role,
        messages,
        bytes,
        errors,
        msgs_per_s: messages as f64 / measured_s,
        mb_per_s: bytes as f64 / measured_s / 1e6,
        latency_us: Percentiles::of(h),
    };
    let actors: Vec<Row> = c
        .actors
        .iter()
        .zip(&c.totals)
        .map(|(a, t)| {
            row(
                a.name.clone(),
                a.role,
                t.messages,
                t.bytes,
                t.errors,
                &t.histogram,
            )
        })
        .collect();
    let mut totals = Vec::new();
    let mut curves = Vec::new();
    for role in [Role::Produce, Role::Consume] {
        let idx: Vec<usize> = (0..actors.len())
            .filter(|&i| actors[i].role == role)
            .collect();
        if idx.is_empty() {
            continue;
        }
        let mut h = new_histogram();
        for &i in &idx {
            let _ = h.add(&c.totals[i].histogram);
        }
        let sum = |f: fn(&Row) -> u64| idx.iter().map(|&i| f(&actors[i])).sum::<u64>();
        totals.push(row(
            format!("total {}", role_name(role)),
            role,
            sum(|r| r.messages),
            sum(|r| r.bytes),
            sum(|r| r.errors),
            &h,
        ));
        curves.push((role, percentile_curve(&h)));
    }
    let latency = totals
        .iter()
        .map(|t| {
            let what = match (workload, t.role) {
                (_, Role::Produce) => "produce acknowledgement",
                (Workload::E2e, Role::Consume) => "end to end (send to receipt)",
                (_, Role::Consume) => "fetch round trip",
            };
            (t.role, what)
        })
        .collect();
    Report {
        workload,
        bootstrap: bootstrap.to_string(),
        scenario: sc.clone(),
        started_unix_ms,
        measured_s,
        latency,
        actors,
        totals,
        curves,
        timeline: c.timeline.clone(),
        check,
        acknowledged_all,
        consumed_all,
        intervals: c
            .intervals
            .iter()
            .map(|(a, b, r, h)| (*a, *b, *r, h.clone()))
            .collect(),
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Produce => "produce",
        Role::Consume => "consume",
    }
}

/// (percentile, µs) points from p0 to p99.999 and the max, spaced evenly on a log scale of
/// 1 / (1 - p), the usual shape of a latency percentile plot.
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for i in 0..=50 {
        let nines = i as f64 / 10.0; // 0 .. 5 nines
        let q = 1.0 - 10f64.powf(-nines);
        out.push((q * 100.0, h.value_at_quantile(q) as f64 / 1000.0));
    }
    out.push((100.0, h.max() as f64 / 1000.0));
    out
}

pub fn progress_line(t_s: f64, samples: &[Sample], control: &Control) -> String {
    let mut s = format!("[{t_s:6.1}s]");
    for x in samples {
        let _ = write!(
            s,
            " {}: {:>12} msgs/s {:>9.1} MB/s p99 {:>8} (so far {:>8}) err {}",
            role_name(x.role),
            thousands(x.msgs_per_s as u64),
            x.mb_per_s,
            micros(x.p99_us),
            micros(x.p99_so_far_us),
            x.errors
        );
    }
    let _ = write!(s, " | acked {}", thousands(control.acked()));
    s
}

fn thousands(n: u64) -> String {
    let d = n.to_string();
    let mut out = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn micros(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.0}µs")
    }
}

/// The summary table printed at the end.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nsluice bench {:?} against {} — measured {:.2} s",
        r.workload, r.bootstrap, r.measured_s
    );
    for (role, what) in &r.latency {
        let _ = writeln!(s, "latency of {}: {what}", role_name(*role));
    }
    let _ = writeln!(
        s,
        "{:<18} {:>13} {:>14} {:>13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "actor",
        "messages",
        "bytes",
        "msgs/s",
        "MB/s",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "p99.99",
        "max",
        "errors"
    );
    for row in r.actors.iter().chain(&r.totals) {
        let l = &row.latency_us;
        let _ = writeln!(
            s,
            "{:<18} {:>13} {:>14} {:>13} {:>9.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
            row.name,
            thousands(row.messages),
            thousands(row.bytes),
            thousands(row.msgs_per_s as u64),
            row.mb_per_s,
            micros(l.p50),
            micros(l.p90),
            micros(l.p99),
            micros(l.p99_9),
            micros(l.p99_99),
            micros(l.max),
            row.errors
        );
    }
    if let Some(c) = &r.check {
        let verdict = if c.ok { "ok" } else { "MISMATCH" };
        let _ = writeln!(
            s,
            "count check: {} acknowledged, end offsets grew by {} — {verdict}",
            thousands(c.acknowledged),
            c.offset_growth
        );
    }
    if let Some(n) = r.consumed_all {
        let _ = writeln!(
            s,
            "consumed {} of {} acknowledged",
            thousands(n),
            thousands(r.acknowledged_all)
        );
    }
    s
}

pub fn write_files(r: &Report, sc: &Scenario) -> Result<()> {
    if let Some(p) = &sc.json {
        std::fs::write(p, serde_json::to_vec_pretty(r)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &sc.hdr {
        std::fs::write(p, hdr_log(r)?).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &sc.html {
        std::fs::write(p, html(r)).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// The interval histograms in HdrHistogram's log format, one tagged line per role and second
/// (values in nanoseconds).
pub fn hdr_log(r: &Report) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut ser = V2Serializer::new();
    let start = std::time::UNIX_EPOCH + Duration::from_millis(r.started_unix_ms.max(0) as u64);
    {
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "sluice bench {:?} against {}; values in ns",
                r.workload, r.bootstrap
            ))
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut out, &mut ser)?;
        for (from, to, role, h) in &r.intervals {
            let tag = Tag::new(role_name(*role));
            w.write_histogram(
                h,
                Duration::from_nanos(*from),
                Duration::from_nanos(to - from),
                tag,
            )
            .map_err(|e| anyhow::anyhow!("writing the histogram log: {e:?}"))?;
        }
    }
    Ok(out)
}

const COLORS: [&str; 2] = ["#1f77b4", "#d62728"];

/// A line chart: `series` of (label, points); `log_x` draws x as given (already transformed).
fn svg_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    x_ticks: &[(f64, String)],
) -> String {
    let (w, h, l, b, t, rgt) = (720.0, 320.0, 70.0, 40.0, 30.0, 20.0);
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 >= x1 {
        x1 = x0 + 1.0;
    }
    if y1 <= 0.0 {
        y1 = 1.0;
    }
    let sx = |x: f64| l + (x - x0) / (x1 - x0) * (w - l - rgt);
    let sy = |y: f64| h - b - y / y1 * (h - b - t);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="18" font-size="14" text-anchor="middle">{title}</text>"#,
        w / 2.0
    );
    let _ = write!(
        s,
        r##"<line x1="{l}" y1="{}" x2="{}" y2="{}" stroke="#333"/>"##,
        h - b,
        w - rgt,
        h - b
    );
    let _ = write!(
        s,
        r##"<line x1="{l}" y1="{t}" x2="{l}" y2="{}" stroke="#333"/>"##,
        h - b
    );
    for i in 0..=4 {
        let y = y1 * i as f64 / 4.0;
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end">{:.1}</text>"##,
            l - 4.0,
            sy(y) + 4.0,
            y
        );
        let _ = write!(
            s,
            r##"<line x1="{l}" y1="{0}" x2="{1}" y2="{0}" stroke="#eee"/>"##,
            sy(y),
            w - rgt
        );
    }
    for (x, label) in x_ticks {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{label}</text>"#,
            sx(*x),
            h - b + 14.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{x_label}</text>"#,
        (l + w - rgt) / 2.0,
        h - 6.0
    );
    let _ = write!(
        s,
        r#"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{y_label}</text>"#,
        h / 2.0,
        h / 2.0
    );
    for (i, (label, p)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = p
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" fill="{color}">{label}</text>"#,
            l + 10.0,
            t + 14.0 * (i as f64 + 1.0)
        );
    }
    s.push_str("</svg>");
    s
}

/// A self-contained HTML report: summary table, throughput over time, latency percentiles.
pub fn html(r: &Report) -> String {
    let mut tp = Vec::new();
    for role in [Role::Produce, Role::Consume] {
        let p: Vec<(f64, f64)> = r
            .timeline
            .iter()
            .filter(|s| s.role == role)
            .map(|s| (s.t_s, s.mb_per_s))
            .collect();
        if !p.is_empty() {
            tp.push((format!("{} MB/s", role_name(role)), p));
        }
    }
    let max_t = r.timeline.iter().map(|s| s.t_s).fold(0.0, f64::max);
    let t_ticks: Vec<(f64, String)> = (0..=5)
        .map(|i| {
            (
                max_t * i as f64 / 5.0,
                format!("{:.0}s", max_t * i as f64 / 5.0),
            )
        })
        .collect();
    let throughput = svg_chart("Throughput over time", "time", "MB/s", &tp, &t_ticks);
    // x = number of nines, so p90 sits at 1, p99 at 2 …
    let nines = |p: f64| {
        if p >= 100.0 {
            5.5
        } else {
            -(1.0 - p / 100.0).log10()
        }
    };
    let lat: Vec<(String, Vec<(f64, f64)>)> = r
        .curves
        .iter()
        .map(|(role, c)| {
            (
                format!("{} latency (ms)", role_name(*role)),
                c.iter().map(|&(p, us)| (nines(p), us / 1000.0)).collect(),
            )
        })
        .collect();
    let p_ticks: Vec<(f64, String)> = ["p0", "p90", "p99", "p99.9", "p99.99", "p99.999"]
        .iter()
        .enumerate()
        .map(|(i, l)| (i as f64, (*l).to_string()))
        .collect();
    let latency = svg_chart("Latency by percentile", "percentile", "ms", &lat, &p_ticks);
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut s = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>sluice bench</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}pre{background:#f8f8f8;padding:1em}</style></head><body>");
    let _ = write!(
        s,
        "<h1>sluice bench {:?}</h1><pre>{}</pre>",
        r.workload,
        esc(&table(r))
    );
    let _ = write!(s, "<div>{throughput}</div><div>{latency}</div>");
    let _ = write!(
        s,
        "<h2>Scenario</h2><pre>{}</pre>",
        esc(&serde_json::to_string_pretty(&r.scenario).unwrap_or_default())
    );
    s.push_str("</body></html>\n");
    s
}
