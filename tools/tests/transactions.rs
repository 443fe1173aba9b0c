//! Kafka transactions end to end with librdkafka's transactional producer (#20): commits
//! and aborts seen by `read_committed` and `read_uncommitted` consumers, a zombie producer
//! fenced by its next incarnation, a transaction aborted at its timeout, a broker killed
//! mid-transaction, and markers written across the brokers of a 3-node cluster.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, ClusterSpec};
use common::{Broker, HANG_GUARD};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// The coordinator's settings for tests: few state partitions (they are created on the
/// first transactional client), timeouts checked often.
const TXN_TOML: &str =
    "[transactions]\nstate_log_partitions = 4\nabort_timed_out_check_interval_ms = 100\n";

fn broker(dir: &std::path::Path) -> Broker {
    let config = dir.join("sluice.toml");
    std::fs::write(&config, TXN_TOML).unwrap();
    Broker::start_with(&dir.join("data"), &["--config", config.to_str().unwrap()])
}

fn txn_producer(bootstrap: &str, id: &str, extra: &[(&str, &str)]) -> BaseProducer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("transactional.id", id)
        .set("linger.ms", "5");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    let p: BaseProducer = c.create().expect("producer");
    p.init_transactions(HANG_GUARD).expect("init_transactions");
    p
}

/// Sends `values` to `topic` (partition by index) within the producer's open transaction.
fn send_all(p: &BaseProducer, topic: &str, partitions: i32, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        let record = BaseRecord::<(), String>::to(topic)
            .payload(v)
            .partition(i as i32 % partitions);
        p.send(record).map_err(|(e, _)| e).expect("send");
        p.poll(Duration::ZERO);
    }
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// A plain (non-transactional) "end" record in every partition, so a reader knows when it
/// has read everything written before.
fn send_sentinels(bootstrap: &str, topic: &str, partitions: i32) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    for part in 0..partitions {
        let payload = format!("end-{part}");
        let record = BaseRecord::<(), String>::to(topic)
            .payload(&payload)
            .partition(part);
        p.send(record).map_err(|(e, _)| e).expect("send");
    }
    p.flush(HANG_GUARD).expect("flush");
}

/// Every value a consumer with `isolation` reads from the start until it has seen the
/// sentinel of every partition; each value with how often it came.
fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
) -> BTreeMap<String, usize> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "transactions-unused")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let started = Instant::now();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut ends = 0;
    while ends < partitions {
        assert!(
            started.elapsed() < HANG_GUARD,
            "{isolation}: read {seen:?}, {ends} of {partitions} sentinels"
        );
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            let v = String::from_utf8_lossy(m.payload().unwrap_or(b"")).into_owned();
            if v.starts_with("end-") {
                ends += 1;
            } else {
                *seen.entry(v).or_default() += 1;
            }
        }
    }
    seen
}

fn once(vs: &[Vec<String>]) -> BTreeMap<String, usize> {
    vs.iter().flatten().map(|v| (v.clone(), 1)).collect()
}

/// Waits until `ok(open transactions, LSO lag summed over the topic's partitions)`.
fn wait_transaction_gauges(b: &Broker, topic: &str, ok: impl Fn(f64, f64) -> bool) {
    let label = format!("topic=\"{topic}\"");
    common::wait_for("the transaction gauges", HANG_GUARD, &mut || {
        let page = b.admin_get("/metrics").ok()?;
        let open = common::metric(&page, "sluice_transactions_open", &[])?;
        let lag: f64 = page
            .lines()
            .filter(|l| l.starts_with("sluice_partition_lso_lag{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        ok(open, lag).then_some(())
    });
}

#[test]
fn committed_and_aborted_transactions_as_each_isolation_level_reads_them() {
    let dir = common::tempdir("txn-basic");
    let b = broker(dir.path());
    common::create_topic_at(&b.addr, "orders", 3, 1, &[]);
    let p = txn_producer(&b.addr, "tx-basic", &[]);
    let (first, aborted, second) = (values("c1", 12), values("ab", 9), values("c2", 6));
    p.begin_transaction().unwrap();
    send_all(&p, "orders", 3, &first);
    p.commit_transaction(HANG_GUARD).expect("commit");
    p.begin_transaction().unwrap();
    send_all(&p, "orders", 3, &aborted);
    // A BaseProducer's delivery reports must be served before an abort (librdkafka).
    p.flush(HANG_GUARD).expect("flush");
    p.abort_transaction(HANG_GUARD).expect("abort");
    p.begin_transaction().unwrap();
    send_all(&p, "orders", 3, &second);
    p.flush(HANG_GUARD).expect("flush");
    // While it is open, the coordinator counts it and the partitions' LSO lags.
    wait_transaction_gauges(&b, "orders", |open, lag| open == 1.0 && lag > 0.0);
    p.commit_transaction(HANG_GUARD).expect("commit");
    wait_transaction_gauges(&b, "orders", |open, lag| open == 0.0 && lag == 0.0);
    send_sentinels(&b.addr, "orders", 3);
    assert_eq!(
        read_all(&b.addr, "orders", 3, "read_committed"),
        once(&[first.clone(), second.clone()])
    );
    assert_eq!(
        read_all(&b.addr, "orders", 3, "read_uncommitted"),
        once(&[first, aborted, second])
    );
    // The coordinator counts what it finished.
    common::wait_for("the transaction counters", HANG_GUARD, &mut || {
        let page = b.admin_get("/metrics").ok()?;
        let committed = common::metric(&page, "sluice_transactions_committed_total", &[])?;
        let aborted = common::metric(&page, "sluice_transactions_aborted_total", &[])?;
        (committed == 2.0 && aborted == 1.0).then_some(())
    });
}

#[test]
fn a_new_incarnation_fences_the_old_producer_and_aborts_its_transaction() {
    let dir = common::tempdir("txn-zombie");
    let b = broker(dir.path());
    common::create_topic_at(&b.addr, "zombie", 2, 1, &[]);
    let old = txn_producer(&b.addr, "tx-zombie", &[]);
    old.begin_transaction().unwrap();
    let lost = values("zombie", 6);
    send_all(&old, "zombie", 2, &lost);
    old.flush(HANG_GUARD)
        .expect("the zombie's records are written");
    // The same transactional id starts again: the open transaction is aborted and the
    // old producer fenced.
    let new = txn_producer(&b.addr, "tx-zombie", &[]);
    let late = old.commit_transaction(HANG_GUARD);
    assert!(late.is_err(), "a fenced producer committed: {late:?}");
    new.begin_transaction().unwrap();
    let kept = values("new", 4);
    send_all(&new, "zombie", 2, &kept);
    new.commit_transaction(HANG_GUARD).expect("commit");
    send_sentinels(&b.addr, "zombie", 2);
    assert_eq!(
        read_all(&b.addr, "zombie", 2, "read_committed"),
        once(&[kept])
    );
}

#[test]
fn a_transaction_past_its_timeout_is_aborted_by_the_coordinator() {
    let dir = common::tempdir("txn-timeout");
    let b = broker(dir.path());
    common::create_topic_at(&b.addr, "slow", 1, 1, &[]);
    let p = txn_producer(&b.addr, "tx-slow", &[("transaction.timeout.ms", "1000")]);
    p.begin_transaction().unwrap();
    let open = values("slow", 3);
    send_all(&p, "slow", 1, &open);
    p.flush(HANG_GUARD).expect("flush");
    // The coordinator aborts it (its marker makes the records stable): wait for that.
    common::wait_for(
        "the timed-out transaction to be aborted",
        HANG_GUARD,
        &mut || {
            let stable = read_committed_end(&b.addr, "slow");
            (stable > 0).then_some(())
        },
    );
    let late = p.commit_transaction(HANG_GUARD);
    assert!(late.is_err(), "a timed-out transaction committed: {late:?}");
    let page = b.admin_get("/metrics").expect("metrics");
    assert_eq!(
        common::metric(&page, "sluice_transactions_timed_out_total", &[]),
        Some(1.0),
        "{page}"
    );
    send_sentinels(&b.addr, "slow", 1);
    assert!(read_all(&b.addr, "slow", 1, "read_committed").is_empty());
}

/// The latest offset a `read_committed` reader is given for partition 0 (the LSO).
fn read_committed_end(bootstrap: &str, topic: &str) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    c.fetch_watermarks(topic, 0, Duration::from_secs(10))
        .map(|(_, high)| high)
        .unwrap_or(-1)
}

#[test]
fn a_broker_killed_mid_transaction_comes_back_and_the_next_incarnation_aborts_it() {
    let dir = common::tempdir("txn-crash");
    let mut b = broker(dir.path());
    common::create_topic_at(&b.addr, "crash", 2, 1, &[]);
    let p = txn_producer(&b.addr, "tx-crash", &[]);
    let committed = values("before", 4);
    p.begin_transaction().unwrap();
    send_all(&p, "crash", 2, &committed);
    p.commit_transaction(HANG_GUARD).expect("commit");
    p.begin_transaction().unwrap();
    let open = values("open", 4);
    send_all(&p, "crash", 2, &open);
    p.flush(HANG_GUARD).expect("flush");
    b.kill();
    drop(p);
    let addr = b.addr.clone();
    let config = dir.path().join("sluice.toml");
    let b = Broker::start_at(
        &dir.path().join("data"),
        &addr,
        "0-1",
        &["--config", config.to_str().unwrap()],
    );
    let again = txn_producer(&b.addr, "tx-crash", &[]);
    again.begin_transaction().unwrap();
    let after = values("after", 4);
    send_all(&again, "crash", 2, &after);
    again.commit_transaction(HANG_GUARD).expect("commit");
    send_sentinels(&b.addr, "crash", 2);
    assert_eq!(
        read_all(&b.addr, "crash", 2, "read_committed"),
        once(&[committed, after])
    );
}

#[test]
fn markers_reach_partition_leaders_on_every_broker_of_a_cluster() {
    let spec = ClusterSpec {
        cluster_toml: format!("\n{TXN_TOML}"),
        ..ClusterSpec::default()
    };
    let c = Cluster::launch("txn-cluster", spec);
    c.wait_all_active(HANG_GUARD);
    common::create_topic_at(&c.bootstrap(), "spread", 6, 3, &[]);
    let p = txn_producer(&c.bootstrap(), "tx-spread", &[]);
    let mut committed = Vec::new();
    for round in 0..5 {
        let batch = values(&format!("r{round}"), 12);
        p.begin_transaction().unwrap();
        send_all(&p, "spread", 6, &batch);
        if round == 2 {
            p.flush(HANG_GUARD).expect("flush");
            p.abort_transaction(HANG_GUARD).expect("abort");
        } else {
            p.commit_transaction(HANG_GUARD).expect("commit");
            committed.push(batch);
        }
    }
    send_sentinels(&c.bootstrap(), "spread", 6);
    assert_eq!(
        read_all(&c.bootstrap(), "spread", 6, "read_committed"),
        once(&committed)
    );
}

/// Runs one logical transaction of `vals` to completion the way librdkafka asks
/// applications to: a retriable commit error is retried, an abortable one aborts and the
/// same records go again in a new transaction. Each logical transaction's records are
/// then committed once, whatever failed in between.
fn commit_once(p: &BaseProducer, topic: &str, partitions: i32, vals: &[String]) {
    for _attempt in 0..20 {
        p.begin_transaction().expect("begin");
        send_all(p, topic, partitions, vals);
        loop {
            match p.commit_transaction(HANG_GUARD) {
                Ok(()) => return,
                Err(KafkaError::Transaction(e)) if e.is_retriable() => continue,
                Err(KafkaError::Transaction(e)) if e.txn_requires_abort() => {
                    p.flush(HANG_GUARD).ok();
                    abort(p);
                    break;
                }
                Err(e) => panic!("commit: {e}"),
            }
        }
    }
    panic!("a transaction did not commit in 20 attempts");
}

/// Aborts the transaction, calling again while librdkafka says the abort is retriable
/// (its documented use: a coordinator moving mid-abort answers that way).
fn abort(p: &BaseProducer) {
    for _attempt in 0..20 {
        match p.abort_transaction(HANG_GUARD) {
            Ok(()) => return,
            Err(KafkaError::Transaction(e)) if e.is_retriable() => {
                eprintln!("abort_transaction: {e} (retriable; again)");
            }
            Err(e) => panic!("abort: {e}"),
        }
    }
    panic!("an abort did not complete in 20 attempts");
}

/// The node coordinating `transactional_id` (FindCoordinator, key type 1, raw).
fn coordinator_of(c: &Cluster, transactional_id: &str) -> usize {
    use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, FindCoordinatorResponse};
    use kafka_protocol::protocol::StrBytes;
    c.wait("a transaction coordinator", HANG_GUARD, || {
        let node = c.ids().into_iter().find(|i| c.is_running(*i))?;
        let mut s = common::raw::connect(&c.addr(node));
        let req = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(transactional_id.to_string()))
            .with_key_type(1);
        let r: FindCoordinatorResponse =
            common::raw::call(&mut s, ApiKey::FindCoordinator, 3, &req);
        (r.error_code == 0).then_some(r.node_id.0 as usize)
    })
}

#[test]
fn exactly_once_through_a_killed_coordinator_and_a_killed_partition_leader() {
    let spec = ClusterSpec {
        cluster_toml: format!("\n{TXN_TOML}"),
        ..ClusterSpec::default()
    };
    let mut c = Cluster::launch("txn-failover", spec);
    c.wait_all_active(HANG_GUARD);
    common::create_topic_at(&c.bootstrap(), "eos", 6, 3, &[("min.insync.replicas", "2")]);
    let p = txn_producer(&c.bootstrap(), "tx-eos", &[]);
    let coordinator = coordinator_of(&c, "tx-eos");
    let mut committed = Vec::new();
    let mut killed = Vec::new();
    for round in 0..24 {
        match round {
            // The coordinator dies between transactions' requests; it comes back later.
            6 => {
                c.kill(coordinator);
                killed.push(coordinator);
            }
            12 => c.start_node(coordinator),
            // Then a data partition's leader (another node, if the coordinator moved).
            16 => {
                let leader = c.wait("a leader of eos/0", HANG_GUARD, || {
                    let node = c.ids().into_iter().find(|i| c.is_running(*i))?;
                    let (_, parts) = c.metadata(node, "eos")?;
                    parts.get(&0).map(|p| p.leader).filter(|l| *l > 0)
                }) as usize;
                c.kill(leader);
                killed.push(leader);
            }
            20 => {
                let last = *killed.last().unwrap();
                c.start_node(last);
            }
            _ => {}
        }
        let batch = values(&format!("t{round}"), 12);
        commit_once(&p, "eos", 6, &batch);
        committed.push(batch);
    }
    c.wait_all_active(HANG_GUARD);
    send_sentinels(&c.bootstrap(), "eos", 6);
    let read = read_all(&c.bootstrap(), "eos", 6, "read_committed");
    let twice: Vec<_> = read.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "read twice: {twice:?}");
    assert_eq!(read, once(&committed), "killed {killed:?}");
}

/// A consumer of `group` reading `topic` read_committed, from the group's committed
/// offsets (the start when none).
fn group_consumer(bootstrap: &str, group: &str, topic: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    c
}

/// Polls `n` records from `c`: (partition, offset, value).
fn poll_n(c: &BaseConsumer, n: usize) -> Vec<(i32, i64, String)> {
    let started = Instant::now();
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            started.elapsed() < HANG_GUARD,
            "polled {} of {n}",
            out.len()
        );
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            let v = String::from_utf8_lossy(m.payload().unwrap_or(b"")).into_owned();
            out.push((m.partition(), m.offset(), v));
        }
    }
    out
}

/// Transforms `records` into `out` and commits the consumer's offsets past them in the
/// same transaction; aborts instead when `abort`.
fn transform(p: &BaseProducer, c: &BaseConsumer, records: &[(i32, i64, String)], abort: bool) {
    p.begin_transaction().expect("begin");
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for (partition, offset, v) in records {
        let out = format!("out:{v}");
        let record = BaseRecord::<(), String>::to("ctp-out")
            .payload(&out)
            .partition(0);
        p.send(record).map_err(|(e, _)| e).expect("send");
        next.insert(*partition, offset + 1);
    }
    let mut tpl = TopicPartitionList::new();
    for (partition, offset) in next {
        tpl.add_partition_offset("ctp-in", partition, Offset::Offset(offset))
            .unwrap();
    }
    let meta = c.group_metadata().expect("group metadata");
    p.send_offsets_to_transaction(&tpl, &meta, HANG_GUARD)
        .expect("send offsets");
    p.flush(HANG_GUARD).expect("flush");
    if abort {
        p.abort_transaction(HANG_GUARD).expect("abort");
    } else {
        p.commit_transaction(HANG_GUARD).expect("commit");
    }
}

#[test]
fn consume_transform_produce_commits_offsets_with_the_output_exactly_once() {
    let dir = common::tempdir("txn-ctp");
    let mut b = broker(dir.path());
    common::create_topic_at(&b.addr, "ctp-in", 2, 1, &[]);
    common::create_topic_at(&b.addr, "ctp-out", 1, 1, &[]);
    let input = values("in", 20);
    send_plain(&b.addr, "ctp-in", 2, &input);
    let p = txn_producer(&b.addr, "tx-ctp", &[]);
    // Ten records transformed and committed with their offsets.
    let c = group_consumer(&b.addr, "ctp", "ctp-in");
    let first = poll_n(&c, 10);
    transform(&p, &c, &first, false);
    // The next five transformed, then aborted: neither the output nor the offsets count.
    let second = poll_n(&c, 5);
    transform(&p, &c, &second, true);
    drop(c);
    // The offsets live through a coordinator restart (loaded back from the log, the
    // aborted ones dropped again).
    let addr = b.addr.clone();
    b.stop();
    let config = dir.path().join("sluice.toml");
    let b = Broker::start_at(
        &dir.path().join("data"),
        &addr,
        "0-1",
        &["--config", config.to_str().unwrap()],
    );
    drop(p);
    let p = txn_producer(&b.addr, "tx-ctp", &[]);
    // A new member resumes from the committed offsets: the aborted five come again.
    let c = group_consumer(&b.addr, "ctp", "ctp-in");
    let rest = poll_n(&c, 10);
    transform(&p, &c, &rest, false);
    send_sentinels(&b.addr, "ctp-out", 1);
    let got = read_all(&b.addr, "ctp-out", 1, "read_committed");
    let want: BTreeMap<String, usize> = input.iter().map(|v| (format!("out:{v}"), 1)).collect();
    assert_eq!(got, want, "each input transformed once");
}

/// Plain records `vals` into `topic` (partition by index).
fn send_plain(bootstrap: &str, topic: &str, partitions: i32, vals: &[String]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    for (i, v) in vals.iter().enumerate() {
        let record = BaseRecord::<(), String>::to(topic)
            .payload(v)
            .partition(i as i32 % partitions);
        p.send(record).map_err(|(e, _)| e).expect("send");
    }
    p.flush(HANG_GUARD).expect("flush");
}

/// ListTransactions (v1) and DescribeTransactions (v0) of `id` at the broker, raw:
/// (listed state, described state, described partitions, described error).
fn admin_view(addr: &str, id: &str) -> (Option<String>, String, Vec<(String, i32)>, i16) {
    use kafka_protocol::messages::{
        ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse, ListTransactionsRequest,
        ListTransactionsResponse, TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;
    let mut s = common::raw::connect(addr);
    let list: ListTransactionsResponse = common::raw::call(
        &mut s,
        ApiKey::ListTransactions,
        1,
        &ListTransactionsRequest::default().with_duration_filter(-1),
    );
    let listed = list
        .transaction_states
        .iter()
        .find(|t| t.transactional_id.as_str() == id)
        .map(|t| t.transaction_state.to_string());
    let req = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(StrBytes::from_string(id.to_string()))]);
    let d: DescribeTransactionsResponse =
        common::raw::call(&mut s, ApiKey::DescribeTransactions, 0, &req);
    let t = &d.transaction_states[0];
    let parts = t
        .topics
        .iter()
        .flat_map(|tp| tp.partitions.iter().map(|p| (tp.topic.0.to_string(), *p)))
        .collect();
    (listed, t.transaction_state.to_string(), parts, t.error_code)
}

#[test]
fn open_and_finished_transactions_are_listed_and_described() {
    let dir = common::tempdir("txn-admin");
    let b = broker(dir.path());
    common::create_topic_at(&b.addr, "listed", 2, 1, &[]);
    let p = txn_producer(&b.addr, "tx-listed", &[]);
    p.begin_transaction().unwrap();
    send_all(&p, "listed", 2, &values("l", 4));
    p.flush(HANG_GUARD).expect("flush");
    let (listed, state, parts, error) = admin_view(&b.addr, "tx-listed");
    assert_eq!(
        (listed.as_deref(), state.as_str(), error),
        (Some("Ongoing"), "Ongoing", 0)
    );
    assert_eq!(
        parts,
        vec![("listed".to_string(), 0), ("listed".to_string(), 1)]
    );
    p.commit_transaction(HANG_GUARD).expect("commit");
    common::wait_for("the commit to complete", HANG_GUARD, &mut || {
        let (_, state, parts, _) = admin_view(&b.addr, "tx-listed");
        (state == "CompleteCommit" && parts.is_empty()).then_some(())
    });
    let (_, _, _, error) = admin_view(&b.addr, "tx-never");
    assert_eq!(error, 105, "TRANSACTIONAL_ID_NOT_FOUND");
}

/// DescribeProducers (raw) of `topic`/`partition`: (producer id, epoch, open transaction's
/// start offset) of each, or the partition's error.
fn producers_of(addr: &str, topic: &str, partition: i32) -> Result<Vec<(i64, i32, i64)>, i16> {
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    use kafka_protocol::messages::{
        ApiKey, DescribeProducersRequest, DescribeProducersResponse, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    let mut s = common::raw::connect(addr);
    let req = DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_indexes(vec![partition])]);
    let r: DescribeProducersResponse =
        common::raw::call(&mut s, ApiKey::DescribeProducers, 0, &req);
    let p = &r.topics[0].partitions[0];
    if p.error_code != 0 {
        return Err(p.error_code);
    }
    Ok(p.active_producers
        .iter()
        .map(|a| {
            (
                a.producer_id.0,
                a.producer_epoch,
                a.current_txn_start_offset,
            )
        })
        .collect())
}

#[test]
fn describe_producers_shows_where_an_open_transaction_began() {
    let dir = common::tempdir("txn-producers");
    let b = broker(dir.path());
    common::create_topic_at(&b.addr, "watched", 1, 1, &[]);
    send_plain(&b.addr, "watched", 1, &values("plain", 3));
    let p = txn_producer(&b.addr, "tx-watched", &[]);
    p.begin_transaction().unwrap();
    send_all(&p, "watched", 1, &values("open", 2));
    p.flush(HANG_GUARD).expect("flush");
    let open = producers_of(&b.addr, "watched", 0).expect("described");
    let txn: Vec<_> = open.iter().filter(|(_, _, start)| *start >= 0).collect();
    assert_eq!(txn.len(), 1, "{open:?}");
    assert_eq!(
        txn[0].2, 3,
        "the transaction began after the three plain records"
    );
    p.commit_transaction(HANG_GUARD).expect("commit");
    // The marker follows the commit's answer: wait for it to close the transaction.
    common::wait_for(
        "the marker to close the transaction",
        HANG_GUARD,
        &mut || {
            let done = producers_of(&b.addr, "watched", 0).expect("described");
            done.iter().all(|(_, _, start)| *start == -1).then_some(())
        },
    );
    assert_eq!(
        producers_of(&b.addr, "watched", 9),
        Err(3),
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
}

#[test]
fn sluice_txn_lists_describes_and_aborts_a_hanging_transaction() {
    let dir = common::tempdir("txn-cli");
    let b = broker(dir.path());
    common::create_topic_at(&b.addr, "hang", 1, 1, &[]);
    let p = txn_producer(&b.addr, "tx-hang", &[]);
    p.begin_transaction().unwrap();
    send_all(&p, "hang", 1, &values("stuck", 2));
    p.flush(HANG_GUARD).expect("flush");
    let listed = common::sluice(&["txn", "list", "--bootstrap", &b.addr]);
    assert!(
        listed
            .lines()
            .any(|l| l.contains("tx-hang") && l.contains("Ongoing")),
        "{listed}"
    );
    let described = common::sluice(&[
        "txn",
        "describe",
        "--bootstrap",
        &b.addr,
        "--transactional-id",
        "tx-hang",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&described).expect("json");
    assert_eq!(v["state"], "Ongoing", "{described}");
    assert_eq!(v["partitions"], serde_json::json!(["hang-0"]));
    let producer_id = v["producer_id"].as_i64().expect("producer id").to_string();
    // The transaction hangs (its producer is gone without ending it): the records after
    // it stay invisible to read_committed readers until it is aborted by hand.
    drop(p);
    send_plain(&b.addr, "hang", 1, &values("after", 2));
    assert_eq!(read_committed_end(&b.addr, "hang"), 0);
    let out = common::sluice(&[
        "txn",
        "abort",
        "--bootstrap",
        &b.addr,
        "--topic",
        "hang",
        "--partition",
        "0",
        "--producer-id",
        &producer_id,
    ]);
    assert!(out.contains("aborted"), "{out}");
    send_sentinels(&b.addr, "hang", 1);
    let read = read_all(&b.addr, "hang", 1, "read_committed");
    assert_eq!(read, once(&[values("after", 2)]), "only the plain records");
}

/// OffsetFetch v8 (raw) of `group`'s `topic`/0: (committed offset, partition error).
fn fetch_offset(addr: &str, group: &str, topic: &str, require_stable: bool) -> (i64, i16) {
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::{
        ApiKey, GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    let mut s = common::raw::connect(addr);
    let req = OffsetFetchRequest::default()
        .with_require_stable(require_stable)
        .with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_indexes(vec![0])]))]);
    let r: OffsetFetchResponse = common::raw::call(&mut s, ApiKey::OffsetFetch, 8, &req);
    let g = &r.groups[0];
    assert_eq!(g.error_code, 0, "OffsetFetch");
    let p = &g.topics[0].partitions[0];
    (p.committed_offset, p.error_code)
}

#[test]
fn offsets_of_an_undecided_transaction_are_unstable_to_a_stable_fetch() {
    let dir = common::tempdir("txn-stable");
    let b = broker(dir.path());
    common::create_topic_at(&b.addr, "stable", 1, 1, &[]);
    let p = txn_producer(&b.addr, "tx-stable", &[]);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .set("group.id", "stable-g")
        .create()
        .expect("consumer");
    p.begin_transaction().unwrap();
    send_all(&p, "stable", 1, &values("s", 1));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("stable", 0, Offset::Offset(42))
        .unwrap();
    let meta = c.group_metadata().expect("group metadata");
    p.send_offsets_to_transaction(&tpl, &meta, HANG_GUARD)
        .expect("send offsets");
    // UNSTABLE_OFFSET_COMMIT (88) to a client that asks for stable offsets; nothing yet
    // to one that does not.
    assert_eq!(fetch_offset(&b.addr, "stable-g", "stable", true), (-1, 88));
    assert_eq!(fetch_offset(&b.addr, "stable-g", "stable", false), (-1, 0));
    p.commit_transaction(HANG_GUARD).expect("commit");
    common::wait_for("the committed offset", HANG_GUARD, &mut || {
        (fetch_offset(&b.addr, "stable-g", "stable", true) == (42, 0)).then_some(())
    });
}

#[test]
fn group_lag_against_the_last_stable_offset_for_read_committed_consumers() {
    use rdkafka::consumer::CommitMode;
    let dir = common::tempdir("txn-lag");
    let b = broker(dir.path());
    common::create_topic_at(&b.addr, "lagged", 1, 1, &[]);
    send_plain(&b.addr, "lagged", 1, &values("done", 3));
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .set("group.id", "lag-g")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("lagged", 0, Offset::Offset(3))
        .unwrap();
    c.commit(&tpl, CommitMode::Sync).expect("commit");
    let p = txn_producer(&b.addr, "tx-lag", &[]);
    p.begin_transaction().unwrap();
    send_all(&p, "lagged", 1, &values("open", 2));
    p.flush(HANG_GUARD).expect("flush");
    let lag = |extra: &[&str]| {
        let mut args = vec![
            "group",
            "describe",
            "lag-g",
            "--bootstrap",
            &b.addr,
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = common::sluice(&args);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        v["total_lag"].as_i64().expect("total lag")
    };
    assert_eq!(lag(&[]), 2, "against the high watermark");
    assert_eq!(
        lag(&["--read-committed"]),
        0,
        "nothing committed to read yet"
    );
}
