//! One scenario end to end: control plane before (topic, routing, versions, offsets), the
//! executors with their actors, the statistics loop, the control plane after (the count
//! check), then the report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use glommio::{LocalExecutorBuilder, Placement};
use kafka_protocol::messages::ApiKey;

use super::consumer::{self, ConsumerConfig, Until};
use super::encoder::RequestTemplate;
use super::group::{GroupConfig, GroupProgress, GroupVersions};
use super::metadata::{ensure_topic, offsets, OffsetSpec, Routing, TopicSpec};
use super::producer::{self, KeyMode, ProducerConfig};
use super::report::{self, CountCheck, Report};
use super::stats::{now_ns, ActorStats, Collector, Role};
use super::wire::{AdminConn, Versions};
use super::{Control, Scenario, Workload};

/// Seconds a run lasts when neither --messages nor --duration is given.
const DEFAULT_DURATION_S: f64 = 10.0;
/// How long consumers of an e2e run may take to catch up once the producers stopped.
const E2E_DRAIN_MS_MAX: u64 = 10_000;
/// How long end offsets (high watermarks) may take to reflect an acks=0 or acks=1 run.
const COUNT_SETTLE_MS_MAX: u64 = 10_000;
/// How often the main thread looks at the actors between ticks.
const POLL_MS: u64 = 20;
/// Fetch limits.
const FETCH_WAIT_MS: i32 = 100;
const FETCH_BYTES_MAX: i32 = 64 << 20;
const PARTITION_FETCH_BYTES_MAX: i32 = 16 << 20;

/// Set by SIGINT or SIGTERM: the run ends as if its duration was up (actors stop, group
/// members commit and leave, the report is written). Registered once per process.
fn interrupted() -> Result<&'static Arc<AtomicBool>> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    if let Some(f) = FLAG.get() {
        return Ok(f);
    }
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone()).context("installing signal handlers")?;
    }
    Ok(FLAG.get_or_init(|| flag))
}

/// Runs the scenario against its first bootstrap address and prints/writes the report.
pub fn run_and_report(workload: Workload, sc: &Scenario) -> Result<Report> {
    let bootstrap = sc
        .bootstrap
        .first()
        .ok_or_else(|| anyhow!("no --bootstrap address"))?
        .clone();
    let report = run(workload, sc, &bootstrap)?;
    print!("{}", report::table(&report));
    report::write_files(&report, sc)?;
    if let Some(c) = &report.check {
        if !c.ok {
            bail!(
                "count check failed: {} acknowledged, end offsets grew by {}",
                c.acknowledged,
                c.offset_growth
            );
        }
    }
    Ok(report)
}

/// One actor to start on some executor.
enum ActorPlan {
    Producer(ProducerConfig),
    Consumer(ConsumerConfig),
}

pub fn run(workload: Workload, sc: &Scenario, bootstrap: &str) -> Result<Report> {
    let bootstrap = &super::tls::select(bootstrap, sc.tls_ca.as_deref())?;
    let (size_min, size_max) = parse_size(&sc.message_size)?;
    validate(sc, size_max)?;
    if sc.group.is_some() && workload == Workload::Produce {
        bail!("--group is for consume and e2e runs (produce has no consumers)");
    }
    let spec = TopicSpec {
        name: sc.topic.clone(),
        partitions: sc.partitions,
        replication_factor: sc.replication_factor,
        configs: parse_configs(&sc.topic_config)?,
    };
    let routing = Arc::new(ensure_topic(
        bootstrap,
        &spec,
        workload != Workload::Consume,
    )?);
    let versions = AdminConn::connect(bootstrap)?.versions;
    let cores = parse_cores(sc.cores.as_deref())?;
    let before = offsets(&routing, OffsetSpec::Latest)?;
    let duration_s = match (sc.messages, sc.duration) {
        (_, Some(d)) => Some(d),
        (Some(_), None) => None,
        (None, None) if workload == Workload::Consume => None,
        (None, None) => Some(DEFAULT_DURATION_S),
    };

    let mut plans = Vec::new();
    let mut names = Vec::new();
    if workload != Workload::Consume {
        let template = RequestTemplate {
            topic: sc.topic.clone(),
            api_version: versions.pick(ApiKey::Produce)?,
            acks: sc.acks.wire(),
            timeout_ms: sc.request_timeout_ms,
            compression: sc.compression,
        };
        let mut payload = vec![0u8; size_max];
        fastrand::Rng::with_seed(7).fill(&mut payload);
        let payload = Arc::new(payload);
        for i in 0..sc.producers {
            let cfg = ProducerConfig {
                routing: routing.clone(),
                partitions: producer_partitions(i, sc.producers, routing.partitions(), sc.keys),
                keys: sc.keys,
                message_bytes_min: size_min,
                message_bytes_max: size_max,
                batch_bytes: sc.batch_bytes,
                request_bytes: sc.request_bytes,
                linger_ns: (sc.linger_ms * 1e6) as u64,
                max_in_flight: sc.max_in_flight,
                template: template.clone(),
                rate: sc.rate.map(|r| r / sc.producers as f64),
                messages_max: sc.messages.map(|m| share(m, i, sc.producers)),
                stamp: workload == Workload::E2e,
                payload: payload.clone(),
                seed: 0x5eed + i as u64,
            };
            plans.push(ActorPlan::Producer(cfg));
            names.push((format!("producer-{i}"), Role::Produce));
        }
    }
    if workload != Workload::Produce {
        let (start, until) = match workload {
            Workload::Consume => {
                let start = offsets(&routing, OffsetSpec::Earliest)?;
                // Without a duration the run ends at the end offsets found at the start (or
                // earlier, at --messages).
                let until = if duration_s.is_some() {
                    Until::Stop
                } else {
                    Until::Offsets(before.clone())
                };
                (start, until)
            }
            _ => (before.clone(), Until::ProducersDone),
        };
        let consumers = sc.consumers.min(routing.partitions());
        if consumers < sc.consumers {
            eprintln!(
                "sluice bench: {} consumers for {} partitions; using {consumers}",
                sc.consumers,
                routing.partitions()
            );
        }
        let group = match &sc.group {
            Some(name) => Some(group_config(
                bootstrap, name, consumers, &versions, &routing,
            )?),
            None => None,
        };
        for i in 0..consumers {
            let partitions = (0..routing.partitions() as i32)
                .filter(|p| *p as usize % consumers == i)
                .collect();
            let cfg = ConsumerConfig {
                routing: routing.clone(),
                partitions,
                start: start.clone(),
                until: until.clone(),
                stamped: workload == Workload::E2e,
                fetch_version: versions.pick(ApiKey::Fetch)?,
                max_wait_ms: FETCH_WAIT_MS,
                fetch_bytes_max: FETCH_BYTES_MAX,
                partition_fetch_bytes_max: PARTITION_FETCH_BYTES_MAX,
                messages_max: if workload == Workload::Consume {
                    sc.messages
                } else {
                    None
                },
                group: group.clone(),
            };
            plans.push(ActorPlan::Consumer(cfg));
            names.push((format!("consumer-{i}"), Role::Consume));
        }
    }

    let control = Arc::new(Control::default());
    control.producers_running.store(
        sc.producers * usize::from(workload != Workload::Consume),
        Ordering::Release,
    );
    let stats: Vec<Arc<ActorStats>> = names
        .into_iter()
        .map(|(n, r)| Arc::new(ActorStats::new(n, r)))
        .collect();
    let started_unix_ms = super::stats::wall_ms();
    let started = now_ns();
    let warmup_ns = (sc.warmup * 1e9) as u64;
    let mut collector = Collector::new(stats.clone(), started, warmup_ns);
    interrupted()?;
    let handles = spawn_executors(&cores, !sc.no_pin, plans, &stats, &control)?;

    let deadline = duration_s.map(|d| started + warmup_ns + (d * 1e9) as u64);
    let mut next_tick = started + 1_000_000_000;
    let mut producers_done_at: Option<u64> = None;
    while stats.iter().any(|s| !s.done.load(Ordering::Acquire)) {
        let now = now_ns();
        let wait = next_tick.saturating_sub(now).min(POLL_MS * 1_000_000);
        std::thread::sleep(Duration::from_nanos(wait.max(1_000_000)));
        let now = now_ns();
        if now >= next_tick {
            let samples = collector.tick(now);
            if !sc.quiet {
                eprintln!(
                    "{}",
                    report::progress_line((now - started) as f64 / 1e9, &samples, &control)
                );
            }
            next_tick += 1_000_000_000;
        }
        if deadline.is_some_and(|d| now >= d) || interrupted()?.load(Ordering::Relaxed) {
            control.stop.store(true, Ordering::Relaxed);
            if workload != Workload::E2e {
                control.stop_consumers.store(true, Ordering::Relaxed);
            }
        }
        if workload == Workload::E2e && control.producers_done() {
            let at = *producers_done_at.get_or_insert(now);
            if now - at > E2E_DRAIN_MS_MAX * 1_000_000 {
                control.stop_consumers.store(true, Ordering::Relaxed);
            }
        }
    }
    let ended = now_ns();
    collector.tick(ended);
    let mut errors = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(anyhow!("bench executor failed: {e}")),
        }
    }
    if let Some(e) = errors.into_iter().next() {
        return Err(e.context("bench actor failed"));
    }

    let check = if workload != Workload::Consume && !sc.no_check {
        let acknowledged = control.acked();
        let growth_now = || -> Result<i64> {
            let after =
                offsets(&routing, OffsetSpec::Latest).context("end offsets after the run")?;
            Ok(after.iter().zip(&before).map(|(a, b)| a - b).sum())
        };
        let mut growth = growth_now()?;
        if sc.acks != super::Acks::All {
            // ListOffsets answers the high watermark. With acks=0 nothing tells us the
            // broker has appended what we wrote, and with acks=1 a replicated partition's
            // high watermark passes the last writes only once the followers have them;
            // give it a bounded time to get there.
            let deadline = now_ns() + COUNT_SETTLE_MS_MAX * 1_000_000;
            while growth < acknowledged as i64 && now_ns() < deadline {
                std::thread::sleep(Duration::from_millis(POLL_MS));
                growth = growth_now()?;
            }
        }
        Some(CountCheck {
            acknowledged,
            offset_growth: growth,
            ok: growth >= 0 && growth as u64 == acknowledged,
        })
    } else {
        None
    };
    let consumed_all = (workload == Workload::E2e).then(|| control.consumed());
    Ok(report::build(
        workload,
        sc,
        bootstrap,
        started_unix_ms,
        &collector,
        ended,
        check,
        consumed_all,
        control.acked(),
    ))
}

fn spawn_executors(
    cores: &[usize],
    pin: bool,
    plans: Vec<ActorPlan>,
    stats: &[Arc<ActorStats>],
    control: &Arc<Control>,
) -> Result<Vec<glommio::ExecutorJoinHandle<Result<()>>>> {
    let n = cores.len().min(plans.len()).max(1);
    let mut per_exec: Vec<Vec<(ActorPlan, Arc<ActorStats>)>> = (0..n).map(|_| Vec::new()).collect();
    for (i, (plan, s)) in plans.into_iter().zip(stats.iter().cloned()).enumerate() {
        per_exec[i % n].push((plan, s));
    }
    let mut handles = Vec::new();
    for (i, actors) in per_exec.into_iter().enumerate() {
        let placement = if pin {
            Placement::Fixed(cores[i])
        } else {
            Placement::Unbound
        };
        let control = control.clone();
        let h = LocalExecutorBuilder::new(placement)
            .name(&format!("bench{i}"))
            .spawn(move || run_actors(actors, control))
            .map_err(|e| anyhow!("starting bench executor {i}: {e}"))?;
        handles.push(h);
    }
    Ok(handles)
}

async fn run_actors(
    actors: Vec<(ActorPlan, Arc<ActorStats>)>,
    control: Arc<Control>,
) -> Result<()> {
    let tasks: Vec<_> = actors
        .into_iter()
        .map(|(plan, stats)| {
            let control = control.clone();
            glommio::spawn_local(async move {
                let result = match plan {
                    ActorPlan::Producer(cfg) => {
                        let r = producer::run(cfg, stats.clone(), control.clone()).await;
                        control.producers_running.fetch_sub(1, Ordering::AcqRel);
                        if r.is_err() {
                            // A failed producer ends the run rather than leaving the rest waiting.
                            control.stop.store(true, Ordering::Relaxed);
                            control.stop_consumers.store(true, Ordering::Relaxed);
                        }
                        r.with_context(|| stats.name.clone())
                    }
                    ActorPlan::Consumer(cfg) => {
                        let r = consumer::run(cfg, stats.clone(), control.clone()).await;
                        if r.is_err() {
                            control.stop.store(true, Ordering::Relaxed);
                            control.stop_consumers.store(true, Ordering::Relaxed);
                        }
                        r.with_context(|| stats.name.clone())
                    }
                };
                stats.done.store(true, Ordering::Release);
                result
            })
        })
        .collect();
    let mut result = Ok(());
    for t in tasks {
        if let Err(e) = t.await {
            result = Err(e);
        }
    }
    result
}

/// Partitions a producer writes to: keyed records may go anywhere; unkeyed ones use this
/// producer's share of the partitions (all of them, round robin, when there are more
/// producers than partitions).
fn producer_partitions(i: usize, producers: usize, partitions: usize, keys: KeyMode) -> Vec<i32> {
    if keys != KeyMode::None || partitions == 0 {
        return (0..partitions as i32).collect();
    }
    if producers > partitions {
        return vec![(i % partitions) as i32];
    }
    (0..partitions)
        .filter(|p| p % producers == i)
        .map(|p| p as i32)
        .collect()
}

/// Actor `i`'s share of `total`.
fn share(total: u64, i: usize, n: usize) -> u64 {
    total / n as u64 + u64::from((i as u64) < total % n as u64)
}

/// Group mode: the coordinator (found once, here) and the versions every member uses.
fn group_config(
    bootstrap: &str,
    name: &str,
    members: usize,
    versions: &Versions,
    routing: &Routing,
) -> Result<GroupConfig> {
    if name.is_empty() {
        bail!("--group: the group name is empty");
    }
    let coordinator = crate::group::client::Client::connect(bootstrap)?.coordinator(name)?;
    Ok(GroupConfig {
        group_id: name.to_string(),
        coordinator,
        members_expected: members,
        versions: GroupVersions {
            join: versions.pick(ApiKey::JoinGroup)?,
            sync: versions.pick(ApiKey::SyncGroup)?,
            heartbeat: versions.pick(ApiKey::Heartbeat)?,
            leave: versions.pick(ApiKey::LeaveGroup)?,
            commit: versions.pick(ApiKey::OffsetCommit)?,
            fetch_offsets: versions.pick(ApiKey::OffsetFetch)?,
        },
        progress: Arc::new(GroupProgress::new(routing.partitions())),
    })
}

fn validate(sc: &Scenario, size_max: usize) -> Result<()> {
    if sc.producers == 0 && sc.consumers == 0 {
        bail!("nothing to run");
    }
    if sc.partitions < 1 {
        bail!("--partitions must be at least 1");
    }
    if sc.max_in_flight == 0 {
        bail!("--max-in-flight must be at least 1");
    }
    if sc.batch_bytes < size_max + 256 {
        bail!(
            "--batch-bytes {} cannot hold a {size_max}-byte message",
            sc.batch_bytes
        );
    }
    if sc.request_bytes < sc.batch_bytes + 1024 {
        bail!(
            "--request-bytes {} cannot hold one --batch-bytes {} batch and the request header",
            sc.request_bytes,
            sc.batch_bytes
        );
    }
    if sc.rate.is_some_and(|r| r <= 0.0 || !r.is_finite()) {
        bail!("--rate must be positive");
    }
    Ok(())
}

/// `100` or `100-1000`.
fn parse_size(s: &str) -> Result<(usize, usize)> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse()?, b.trim().parse()?),
        None => {
            let v = s.trim().parse()?;
            (v, v)
        }
    };
    if a > b {
        bail!("message size range {s} is empty");
    }
    Ok((a, b))
}

fn parse_configs(items: &[String]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|i| {
            i.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("--topic-config {i}: expected KEY=VALUE"))
        })
        .collect()
}

/// `all`, or a list like `0-3,6`; default every online CPU.
fn parse_cores(s: Option<&str>) -> Result<Vec<usize>> {
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    let s = match s {
        None | Some("all") => return Ok((0..online).collect()),
        Some(s) => s,
    };
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse()?, b.parse()?);
                if a > b {
                    bail!("bad core range {part}");
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse()?),
        }
    }
    if out.is_empty() {
        bail!("--cores {s} names no CPU");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_cores_and_shares_parse() {
        assert_eq!(parse_size("100").unwrap(), (100, 100));
        assert_eq!(parse_size("10-20").unwrap(), (10, 20));
        assert!(parse_size("20-10").is_err());
        assert_eq!(parse_cores(Some("0-2,5")).unwrap(), vec![0, 1, 2, 5]);
        assert!(parse_cores(Some("3-1")).is_err());
        assert_eq!(
            (0..3).map(|i| share(10, i, 3)).collect::<Vec<_>>(),
            vec![4, 3, 3]
        );
        assert_eq!(producer_partitions(1, 2, 4, KeyMode::None), vec![1, 3]);
        assert_eq!(producer_partitions(2, 3, 2, KeyMode::None), vec![0]);
        assert_eq!(producer_partitions(0, 2, 3, KeyMode::Random), vec![0, 1, 2]);
    }
}
