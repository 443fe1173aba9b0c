//! Partition replication across real `sluice serve` processes (issue #8): three brokers on
//! 127.0.0.1 in racks r1..r3, topics with replication factor 3 and
//! `min.insync.replicas=2`, written by an rdkafka idempotent producer with acks=all while
//! brokers are killed, stopped, restarted or all crash at once. Each test records every
//! acknowledged (partition, offset, payload) from the delivery reports (payloads carry a
//! sequence number; partition = sequence mod partitions) and then reads every partition
//! from the beginning: every acknowledged message must be there at its offset, and each
//! partition's sequence numbers must only increase (in order, no duplicates).
//!
//! Waits are on observed state (Metadata from a named broker, delivery reports), bounded by
//! a hang guard only; the durations printed as `figure:` lines are for the report and are
//! never checked. The tests take turns (one cluster at a time), so they do not starve each
//! other's heartbeats on a small machine.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::acks::{payload, Ack, AckContext, Acks};
use common::cluster::{Cluster, ClusterSpec, Part};
use common::load::{
    acked_ends, assert_no_failures, check_read_back, finish_and_verify, idempotent_config,
    read_all, Load, MESSAGE_TIMEOUT_MS, PAYLOAD_BYTES,
};
use common::sluice;
use common::HANG_GUARD;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Guard for a broker's SIGTERM exit (controlled shutdown waits, bounded, for the
/// controller to move its leaderships).
const STOP_GUARD: Duration = Duration::from_secs(90);
const SESSION_TIMEOUT_MS: u64 = 3_000;
/// `[cluster] replica_lag_time_max_ms`: short, so a stopped follower leaves the ISR soon.
const REPLICA_LAG_MS: u64 = 2_000;

/// One cluster at a time (see the header).
static TURN: Mutex<()> = Mutex::new(());

fn take_turn() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn spec() -> ClusterSpec {
    ClusterSpec {
        session_timeout_ms: SESSION_TIMEOUT_MS,
        cluster_toml: format!("replica_lag_time_max_ms = {REPLICA_LAG_MS}"),
        ..ClusterSpec::default()
    }
}

fn start_cluster(name: &str) -> Cluster {
    Cluster::start(name, spec(), HANG_GUARD)
}

/// Creates `topic` (replication factor 3, `min.insync.replicas=2`, plus `configs`) and
/// waits until `asked` lists every partition with a leader and all three replicas in sync.
fn create_topic(
    c: &Cluster,
    asked: usize,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> BTreeMap<i32, Part> {
    let mut all = vec![("min.insync.replicas", "2")];
    all.extend_from_slice(configs);
    common::create_topic_at(&c.bootstrap(), topic, partitions, 3, &all);
    wait_in_sync(c, asked, topic, partitions as usize, 3)
}

/// Waits until broker `asked` reports every partition of `topic` led, with `isr` in sync.
fn wait_in_sync(
    c: &Cluster,
    asked: usize,
    topic: &str,
    partitions: usize,
    isr: usize,
) -> BTreeMap<i32, Part> {
    c.wait(
        &format!("{topic}: {partitions} partitions led with {isr} in sync (broker {asked})"),
        HANG_GUARD,
        || {
            let (_, parts) = c.metadata(asked, topic)?;
            let ok = parts.len() == partitions
                && parts.values().all(|p| p.leader >= 0 && p.isr.len() == isr);
            ok.then_some(parts)
        },
    )
}

/// The longest pause between consecutive acknowledgements of `partition` (the figure of
/// an outage as clients see it), and when it began.
fn longest_ack_gap(acked: &[Ack], partition: i32) -> (Duration, Option<Instant>) {
    let mut times: Vec<Instant> = acked
        .iter()
        .filter(|a| a.partition == partition)
        .map(|a| a.at)
        .collect();
    times.sort();
    times
        .windows(2)
        .map(|w| (w[1] - w[0], Some(w[0])))
        .max_by_key(|(d, _)| *d)
        .unwrap_or((Duration::ZERO, None))
}

#[test]
fn kill_9_of_the_leader_under_load_loses_no_acknowledged_message() {
    let _turn = take_turn();
    const TOPIC: &str = "kill-leader";
    const PARTITIONS: i32 = 3;
    let mut c = start_cluster("kill-leader");
    let parts = create_topic(&c, 1, TOPIC, PARTITIONS, &[]);
    let load = Load::start(&c.bootstrap(), TOPIC, PARTITIONS);
    load.wait_acked("acks before the kill", 0, 2_000);

    let victim = parts[&0].leader as usize;
    let led: Vec<i32> = parts
        .iter()
        .filter(|(_, p)| p.leader == victim as i32)
        .map(|(i, _)| *i)
        .collect();
    let survivor = c.ids().into_iter().find(|i| *i != victim).unwrap();
    let killed_at = Instant::now();
    c.kill(victim);
    let after_kill = load.acks.count();
    let moved = c.wait("new leaders from the ISR", HANG_GUARD, || {
        let (_, now) = c.metadata(survivor, TOPIC)?;
        let done = led.iter().all(|i| {
            let p = &now[i];
            p.leader >= 0 && p.leader != victim as i32 && parts[i].isr.contains(&p.leader)
        });
        done.then_some(now)
    });
    eprintln!("{TOPIC}: broker {victim} killed; new leaders {moved:?}");
    // Production goes on, on the new leaders too.
    common::wait_for("acks on the new leaders", HANG_GUARD, &mut || {
        load.acks.assert_not_fatal();
        let acked = load.acks.snapshot();
        led.iter()
            .all(|p| {
                acked[after_kill..]
                    .iter()
                    .filter(|a| a.partition == *p && a.at > killed_at)
                    .count()
                    >= 200
            })
            .then_some(())
    });
    let acked = finish_and_verify(load, &c, TOPIC, PARTITIONS);
    for p in &led {
        let last_old = acked
            .iter()
            .filter(|a| a.partition == *p && a.at <= killed_at)
            .map(|a| a.at)
            .max();
        let first_new = acked
            .iter()
            .filter(|a| a.partition == *p && a.at > killed_at)
            .map(|a| a.at)
            .min();
        if let (Some(old), Some(new)) = (last_old, first_new) {
            eprintln!(
                "figure: failover {TOPIC}-{p}: last ack from the old leader (broker {victim}) to the first from the new one (broker {}): {} ms (session timeout {SESSION_TIMEOUT_MS} ms)",
                moved[p].leader,
                (new - old).as_millis()
            );
        }
    }
}

#[test]
fn a_stopped_follower_leaves_the_isr_and_rejoins_after_catching_up() {
    let _turn = take_turn();
    const TOPIC: &str = "stop-follower";
    // One partition, so the stopped broker only follows.
    const PARTITIONS: i32 = 1;
    let c = start_cluster("stop-follower");
    let parts = create_topic(&c, 1, TOPIC, PARTITIONS, &[]);
    let leader = parts[&0].leader as usize;
    // A follower that is not the active controller, if there is one (stopping the
    // controller would add a controller failover to the test).
    let controller = c.controller_leader(leader);
    let follower = parts[&0]
        .replicas
        .iter()
        .map(|r| *r as usize)
        .filter(|r| *r != leader)
        .min_by_key(|r| Some(*r) == controller)
        .unwrap();
    let load = Load::start(&c.bootstrap(), TOPIC, PARTITIONS);
    load.wait_acked("acks before the stop", 0, 1_000);

    let stopped_at = Instant::now();
    c.signal(follower, libc::SIGSTOP);
    let shrunk = c.wait("the ISR without the stopped follower", HANG_GUARD, || {
        let (_, now) = c.metadata(leader, TOPIC)?;
        let p = now[&0].clone();
        (!p.isr.contains(&(follower as i32)) && p.leader == leader as i32).then_some(p)
    });
    eprintln!(
        "figure: {TOPIC}: follower {follower} stopped; ISR {:?} after {} ms (replica lag limit {REPLICA_LAG_MS} ms, session timeout {SESSION_TIMEOUT_MS} ms)",
        shrunk.isr,
        stopped_at.elapsed().as_millis()
    );
    assert!(shrunk.isr.len() >= 2, "{shrunk:?}");
    // Writes go on with two in sync.
    load.wait_acked("acks with the follower stopped", load.acks.count(), 1_000);

    let resumed_at = Instant::now();
    c.signal(follower, libc::SIGCONT);
    let full = c.wait("the follower back in the ISR", HANG_GUARD, || {
        let (_, now) = c.metadata(leader, TOPIC)?;
        let p = now[&0].clone();
        (p.isr.len() == 3).then_some(p)
    });
    eprintln!(
        "figure: {TOPIC}: follower {follower} resumed; ISR {:?} again after {} ms",
        full.isr,
        resumed_at.elapsed().as_millis()
    );
    load.wait_acked("acks after the rejoin", load.acks.count(), 500);
    finish_and_verify(load, &c, TOPIC, PARTITIONS);
    // An operator sees the shrink in the leader's metrics (published every interval).
    c.wait(
        "the ISR shrink counted in the leader's metrics",
        HANG_GUARD,
        || {
            let metrics = c.node(leader).admin_get("/metrics").ok()?;
            (metric_sum(&metrics, "sluice_isr_shrinks_total") >= 1.0).then_some(())
        },
    );
}

/// The sum of every sample of `name` in a Prometheus text answer.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_rolling_restart_under_load_loses_no_acknowledged_message() {
    let _turn = take_turn();
    const TOPIC: &str = "rolling";
    const PARTITIONS: i32 = 3;
    let mut c = start_cluster("rolling");
    create_topic(&c, 1, TOPIC, PARTITIONS, &[]);
    let load = Load::start(&c.bootstrap(), TOPIC, PARTITIONS);
    load.wait_acked("acks before the restarts", 0, 1_000);
    for id in c.ids() {
        let other = c.ids().into_iter().find(|i| *i != id).unwrap();
        let t0 = Instant::now();
        let status = c.stop(id, STOP_GUARD);
        assert!(
            status.is_some_and(|s| s.success()),
            "broker {id} after SIGTERM: {status:?}"
        );
        let stopped_ms = t0.elapsed().as_millis();
        // Controlled shutdown took it out of every ISR, so a full ISR below means it
        // caught up again.
        c.wait("the stopped broker out of every ISR", HANG_GUARD, || {
            let (_, parts) = c.metadata(other, TOPIC)?;
            let gone = parts
                .values()
                .all(|p| p.leader != id as i32 && !p.isr.contains(&(id as i32)));
            gone.then_some(())
        });
        c.start_node(id);
        c.wait_all_active(HANG_GUARD);
        wait_in_sync(&c, other, TOPIC, PARTITIONS as usize, 3);
        eprintln!(
            "figure: {TOPIC}: broker {id} stopped (SIGTERM to exit) in {stopped_ms} ms, back with every ISR full after {} ms",
            t0.elapsed().as_millis()
        );
        load.wait_acked("acks after the restart", load.acks.count(), 500);
    }
    let acked = finish_and_verify(load, &c, TOPIC, PARTITIONS);
    for p in 0..PARTITIONS {
        eprintln!(
            "figure: {TOPIC}-{p}: longest pause between acknowledgements during the rolling restart {} ms",
            longest_ack_gap(&acked, p).0.as_millis()
        );
    }
}

#[test]
fn with_fsync_every_acknowledged_message_survives_all_brokers_killed_at_once() {
    let _turn = take_turn();
    const TOPIC: &str = "power-loss";
    const PARTITIONS: i32 = 3;
    let mut c = start_cluster("power-loss");
    create_topic(&c, 1, TOPIC, PARTITIONS, &[("flush.policy", "fsync")]);
    let load = Load::start(&c.bootstrap(), TOPIC, PARTITIONS);
    load.wait_acked("acks before the crash", 0, 2_000);
    // SIGKILL all three before reaping any, so none outlives the others by more than the
    // signals' delivery.
    for id in c.ids() {
        c.signal(id, libc::SIGKILL);
    }
    let crashed_at = Instant::now();
    for id in c.ids() {
        c.kill(id);
    }
    let before_crash = load.acks.count();
    eprintln!("{TOPIC}: all brokers killed with {before_crash} messages acknowledged");
    for id in c.ids() {
        c.start_node(id);
    }
    c.wait_all_active(HANG_GUARD);
    wait_in_sync(&c, 1, TOPIC, PARTITIONS as usize, 3);
    eprintln!(
        "figure: {TOPIC}: every partition led with 3 in sync {} ms after the crash",
        crashed_at.elapsed().as_millis()
    );
    load.wait_acked("acks after the restart", before_crash, 1_000);
    finish_and_verify(load, &c, TOPIC, PARTITIONS);
}

/// A plain producer (acks=1, not idempotent, no retries): what the leader alone accepted.
fn produce_acks_1(bootstrap: &str, topic: &str, seqs: std::ops::Range<u64>) -> Vec<Ack> {
    let config = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "1")
        .set("enable.idempotence", "false")
        .set("retries", "0")
        .set("linger.ms", "0")
        .clone();
    produce_to_partition_0(config, topic, seqs, HANG_GUARD)
}

/// Idempotent acks=all writes of `seqs` to partition 0; all must be acknowledged.
fn produce_acks_all(bootstrap: &str, topic: &str, seqs: std::ops::Range<u64>) -> Vec<Ack> {
    let flush = Duration::from_millis(MESSAGE_TIMEOUT_MS + 10_000);
    produce_to_partition_0(idempotent_config(bootstrap), topic, seqs, flush)
}

/// Sends `seqs` to partition 0 with a producer of `config`, waits up to `flush` for every
/// delivery report; all must succeed. The acknowledgements.
fn produce_to_partition_0(
    config: ClientConfig,
    topic: &str,
    seqs: std::ops::Range<u64>,
    flush: Duration,
) -> Vec<Ack> {
    let acks = Arc::new(Acks::default());
    let p: BaseProducer<AckContext> = config
        .create_with_context(AckContext(acks.clone()))
        .expect("producer");
    let n = seqs.end - seqs.start;
    for seq in seqs {
        p.send(
            BaseRecord::<(), [u8]>::to(topic)
                .partition(0)
                .payload(&payload(seq, PAYLOAD_BYTES)),
        )
        .map_err(|(e, _)| e)
        .expect("send");
        p.poll(Duration::ZERO);
    }
    p.flush(flush).expect("flush");
    assert_no_failures(&acks, n);
    acks.snapshot()
}

#[test]
fn a_diverged_old_leader_truncates_its_uncommitted_suffix_on_return() {
    let _turn = take_turn();
    const TOPIC: &str = "diverge";
    let mut c = start_cluster("diverge");
    let parts = create_topic(&c, 1, TOPIC, 1, &[]);
    let old = parts[&0].leader as usize;
    let followers: Vec<usize> = c.ids().into_iter().filter(|i| *i != old).collect();

    // Committed: on every replica.
    let committed = produce_acks_all(&c.bootstrap(), TOPIC, 0..500);

    // Uncommitted: the followers are stopped (briefly: less than the session timeout and
    // the replica lag limit), the leader alone takes acks=1 writes, then dies. Several
    // separate requests: a fetch a follower had parked on the leader may carry the first
    // of them to it, never the later ones.
    for f in &followers {
        c.signal(*f, libc::SIGSTOP);
    }
    let mut uncommitted = Vec::new();
    for round in 0..5u64 {
        let from = 1_000 + round * 20;
        uncommitted.extend(produce_acks_1(&c.addr(old), TOPIC, from..from + 20));
    }
    c.kill(old);
    for f in &followers {
        c.signal(*f, libc::SIGCONT);
    }
    let old_end = uncommitted.iter().map(|a| a.offset + 1).max().unwrap();
    let asked = followers[0];
    let new = c.wait("a new leader from the ISR", HANG_GUARD, || {
        let (_, now) = c.metadata(asked, TOPIC)?;
        let l = now[&0].leader;
        (l >= 0 && l != old as i32).then_some(l as usize)
    });
    eprintln!("{TOPIC}: old leader {old} (log end {old_end}) killed; new leader {new}");

    // Committed under the new leader: the same offsets the old leader's suffix holds.
    let later = produce_acks_all(&c.bootstrap(), TOPIC, 2_000..2_300);
    let mut acked = committed.clone();
    acked.extend(later.iter().copied());
    let ends = acked_ends(&acked, 1);
    let under_new = read_all(&c.bootstrap(), TOPIC, &ends);
    check_read_back(TOPIC, &acked, &under_new);
    let new_log: BTreeMap<i64, u64> = under_new[&0].iter().copied().collect();
    let diverged: Vec<&Ack> = uncommitted
        .iter()
        .filter(|a| new_log.get(&a.offset).is_some_and(|s| *s != a.seq))
        .collect();
    assert!(
        !diverged.is_empty(),
        "the old leader's acks=1 suffix {:?} does not conflict with the new leader's log: the test did not make the logs diverge",
        uncommitted.iter().map(|a| (a.offset, a.seq)).collect::<Vec<_>>()
    );

    // The old leader returns, truncates, catches up, and leads again.
    let returned_at = Instant::now();
    c.start_node(old);
    wait_in_sync(&c, new, TOPIC, 1, 3);
    eprintln!(
        "figure: {TOPIC}: old leader back in the ISR {} ms after its restart",
        returned_at.elapsed().as_millis()
    );
    let out = sluice(&["cluster", "elect-leaders", "--admin", &c.admin_addr(old)]);
    eprintln!("{out}");
    c.wait("the old leader leading again", HANG_GUARD, || {
        let (_, now) = c.metadata(old, TOPIC)?;
        (now[&0].leader == old as i32).then_some(())
    });
    let under_old = read_all(&c.addr(old), TOPIC, &ends);
    assert_eq!(
        under_old[&0], under_new[&0],
        "the returned leader's log differs from the one it missed"
    );
    for a in &diverged {
        assert!(
            !under_old[&0].iter().any(|(_, s)| *s == a.seq),
            "uncommitted seq {} (offset {}) survived",
            a.seq,
            a.offset
        );
    }
    eprintln!(
        "{TOPIC}: old leader truncated {} diverged messages and holds the new leader's log ({} messages)",
        diverged.len(),
        under_old[&0].len()
    );
}
