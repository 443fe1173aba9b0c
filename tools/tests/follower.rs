//! The follower side of replication against a real broker: `sluice serve` (single node)
//! plays the leader of an RF=1 topic that an rdkafka idempotent producer writes to; this
//! process runs `sluice_replication::Fetchers` on a glommio executor with its own
//! `LogManager`, following that partition. The follower's log must end up byte-identical
//! to the leader's (same offsets, epochs, batches), keep following new appends, and cut a
//! diverged suffix (batches of a leader epoch the leader never had) before fetching again.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{free_port, raw, Broker, HANG_GUARD};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::TopicPartitionList;
use sluice_engine::batch::{self, BatchIter};
use sluice_engine::watch::OffsetWatch;
use sluice_engine::{
    LeaderEpoch, LogConfig, LogManager, Offset, PartitionLog, ReadLimits, ShardConfig,
    TopicPartition,
};
use sluice_replication::{FetcherConfig, Fetchers, Followed, LeaderAddr};

const TOPIC: &str = "replicated";
/// This process's broker id as a follower.
const FOLLOWER_ID: i32 = 7;

/// The fetchers' log lines, shown with a failing test's output
/// (`SLUICE_TEST_LOG=info` for more).
fn init_logs() {
    let filter = std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

fn create_topic(b: &Broker) {
    common::create_topic_at(&b.addr, TOPIC, 1, 1, &[]);
}

/// Produces `count` records (values tagged `tag`) with an idempotent acks=all producer.
fn produce(b: &Broker, tag: &str, count: usize) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("batch.num.messages", "50")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    for i in 0..count {
        let value = format!("{tag}-{i:06}-{}", "x".repeat(80));
        let key = format!("k{}", i % 17);
        loop {
            match p.send(BaseRecord::to(TOPIC).key(&key).payload(&value)) {
                Ok(()) => break,
                Err((e, _)) => {
                    assert!(
                        e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        "send: {e}"
                    );
                    p.poll(Duration::from_millis(10));
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(HANG_GUARD).expect("flush");
}

/// The partition's leader id and leader epoch from Metadata v9.
fn leader_of(b: &Broker) -> (i32, i32) {
    let mut s = raw::connect(&b.addr);
    let req = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
        .with_name(Some(TopicName(StrBytes::from_static_str(TOPIC))))]));
    let resp: MetadataResponse = raw::call(&mut s, ApiKey::Metadata, 9, &req);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "metadata of {TOPIC}");
    (p.leader_id.0, p.leader_epoch)
}

fn all_limits() -> ReadLimits {
    ReadLimits {
        max_bytes: 1 << 20,
        max_offset: Offset(i64::MAX),
        min_one_batch: true,
    }
}

/// Every stored byte of the log, read back whole batches at a time.
async fn read_all(log: &PartitionLog) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cursor = log.log_start_offset();
    loop {
        let r = log.read(cursor, all_limits()).await.expect("read");
        if r.slices.is_empty() {
            return out;
        }
        for s in &r.slices {
            out.extend_from_slice(s);
        }
        cursor = BatchIter::new(&out)
            .last()
            .expect("batches")
            .1
            .next_offset();
    }
}

/// (base offset, last offset, leader epoch) of each stored batch, CRCs checked.
fn layout(bytes: &[u8]) -> Vec<(i64, i64, i32)> {
    BatchIter::new(bytes)
        .map(|(_, h, b)| {
            batch::verify_crc(&h, b).expect("stored batches keep their CRC");
            (h.base_offset().0, h.last_offset().0, h.leader_epoch().0)
        })
        .collect()
}

/// (log end, high watermark, lags, synced end) once reached, or what the follower was doing.
type Progress = Result<(i64, i64, Vec<i64>, i64), String>;
/// The log's answers to OffsetForLeaderEpoch for epochs 0..=16.
type Epochs = Vec<Option<(i32, i64)>>;
/// A log's stored bytes, epoch answers and log start offset.
type Contents = (Vec<u8>, Epochs, i64);

/// What the test thread asks of the follower's executor.
enum Command {
    /// Wait until the log end and the follower high watermark reach the offset; answer
    /// (log end, high watermark, lags).
    WaitFor(i64, mpsc::Sender<Progress>),
    /// Stop fetching, append a batch of `epoch` at the log end that the leader never
    /// had, then follow again with new fetchers (which must truncate first); answer the
    /// log end after the diverged append.
    Diverge(i32, mpsc::Sender<i64>),
    /// Follow the same leader at this leader epoch (a restarted leader may have a new one).
    Follow(i32, mpsc::Sender<()>),
    /// Stop fetching and close; answer the log's contents.
    Finish(mpsc::Sender<Contents>),
}

fn epoch_answers(log: &PartitionLog) -> Epochs {
    (0..=16)
        .map(|e| {
            log.end_offset_for_epoch(LeaderEpoch(e))
                .map(|(e, o)| (e.0, o.0))
        })
        .collect()
}

async fn wait_for(
    log: &PartitionLog,
    hw: &OffsetWatch,
    fetchers: &Fetchers,
    target: i64,
) -> Progress {
    let deadline = std::time::Instant::now() + HANG_GUARD;
    loop {
        let end = log.log_end_offset().0;
        if end >= target && hw.get() >= target {
            let lags = fetchers.lag().into_iter().map(|(_, l)| l).collect();
            return Ok((end, hw.get(), lags, log.synced_end_offset().0));
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "follower at end {end}, hw {} after {HANG_GUARD:?}; waiting for {target}; status {:?}",
                hw.get(),
                fetchers.status()
            ));
        }
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
}

/// The follower: a log manager on `dir` and fetchers following the broker at `port`,
/// into a log with `config`.
fn follower(
    dir: std::path::PathBuf,
    port: u16,
    leader: (i32, i32),
    config: LogConfig,
    commands: mpsc::Receiver<Command>,
) -> glommio::ExecutorJoinHandle<()> {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            let tp = TopicPartition::new(TOPIC, 0);
            let log_config = config.clone();
            let manager = LogManager::open(
                &dir,
                ShardConfig::default(),
                |_| true,
                move |_| log_config.clone(),
            )
            .await
            .expect("follower log manager");
            let log = manager
                .create(tp.clone(), config)
                .await
                .expect("follower log");
            let hw = OffsetWatch::new(0);
            let followed = Followed {
                tp,
                log: log.clone(),
                leader: LeaderAddr {
                    id: sluice_engine::BrokerId(leader.0),
                    host: "127.0.0.1".into(),
                    port,
                },
                leader_epoch: sluice_engine::LeaderEpoch(leader.1),
                hw: hw.clone(),
            };
            let config = FetcherConfig {
                // Small answers, so following takes many fetches and appends.
                partition_bytes_max: 16 << 10,
                response_bytes_max: 64 << 10,
                ..FetcherConfig::default()
            };
            let mut fetchers = Fetchers::new(sluice_engine::BrokerId(FOLLOWER_ID), config.clone());
            fetchers.assign(vec![followed.clone()]);
            loop {
                let command = match commands.try_recv() {
                    Ok(c) => c,
                    Err(mpsc::TryRecvError::Empty) => {
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    Err(mpsc::TryRecvError::Disconnected) => break,
                };
                match command {
                    Command::WaitFor(target, reply) => {
                        let _ = reply.send(wait_for(&log, &hw, &fetchers, target).await);
                    }
                    Command::Diverge(epoch, reply) => {
                        fetchers.stop().await;
                        let end = log.log_end_offset().0;
                        let mut diverged = batch::simple_batch(3, 50, 0);
                        batch::stamp(&mut diverged, Offset(end), LeaderEpoch(epoch));
                        log.append_replica(&diverged)
                            .await
                            .expect("diverged append");
                        log.wait_durable(Offset(end + 3)).await.expect("durable");
                        let _ = reply.send(log.log_end_offset().0);
                        fetchers =
                            Fetchers::new(sluice_engine::BrokerId(FOLLOWER_ID), config.clone());
                        fetchers.assign(vec![followed.clone()]);
                    }
                    Command::Follow(epoch, reply) => {
                        let f = Followed {
                            leader_epoch: sluice_engine::LeaderEpoch(epoch),
                            ..followed.clone()
                        };
                        fetchers.assign(vec![f]);
                        let _ = reply.send(());
                    }
                    Command::Finish(reply) => {
                        fetchers.stop().await;
                        let contents = (
                            read_all(&log).await,
                            epoch_answers(&log),
                            log.log_start_offset().0,
                        );
                        manager.close_all().await.expect("close follower logs");
                        let _ = reply.send(contents);
                        break;
                    }
                }
            }
        })
        .expect("follower executor")
}

/// The leader's partition as its files hold it, after the broker stopped.
fn leader_log(data_dir: std::path::PathBuf) -> Contents {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            let tp = TopicPartition::new(TOPIC, 0);
            let wanted = tp.clone();
            let manager = LogManager::open(
                &data_dir,
                ShardConfig::default(),
                move |t| *t == wanted,
                |_| LogConfig::default(),
            )
            .await
            .expect("leader's logs");
            let log = manager.get(&tp).expect("the leader's partition directory");
            let out = (
                read_all(&log).await,
                epoch_answers(&log),
                log.log_start_offset().0,
            );
            manager.close_all().await.expect("close");
            out
        })
        .expect("executor")
        .join()
        .expect("join")
}

fn ask<T>(tx: &mpsc::Sender<Command>, make: impl FnOnce(mpsc::Sender<T>) -> Command) -> T {
    let (reply, answer) = mpsc::channel();
    tx.send(make(reply)).expect("follower running");
    answer
        .recv_timeout(HANG_GUARD * 2)
        .expect("follower answers")
}

#[test]
fn a_follower_copies_the_leaders_log_keeps_up_and_cuts_a_diverged_suffix() {
    init_logs();
    let broker_dir = common::tempdir("follower");
    let follower_dir = common::tempdir("follower");
    let mut b = Broker::start(broker_dir.path());
    create_topic(&b);
    produce(&b, "first", 3_000);
    let leader = leader_of(&b);
    let port: u16 = b
        .addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("broker port");

    let (tx, rx) = mpsc::channel();
    let executor = follower(
        follower_dir.path().to_path_buf(),
        port,
        leader,
        LogConfig::default(),
        rx,
    );

    // Catch up with what was produced before following began.
    let (end, hw, lags, _) = ask(&tx, |r| Command::WaitFor(3_000, r)).expect("caught up");
    assert_eq!((end, hw), (3_000, 3_000));
    assert_eq!(lags, vec![0]);

    // Keep following while the producer goes on.
    produce(&b, "second", 2_000);
    let (end, hw, _, _) = ask(&tx, |r| Command::WaitFor(5_000, r)).expect("followed");
    assert_eq!((end, hw), (5_000, 5_000));

    // A suffix of an epoch the leader never had (as left by a deposed leader) is cut
    // before fetching resumes; the leader's records after it arrive in its place.
    let diverged_end = ask(&tx, |r| Command::Diverge(leader.1 + 5, r));
    assert_eq!(diverged_end, 5_003);
    produce(&b, "third", 1_000);
    let (end, hw, _, _) = ask(&tx, |r| Command::WaitFor(6_000, r)).expect("followed again");
    assert_eq!((end, hw), (6_000, 6_000));

    let (copy, copy_epochs, copy_start) = ask(&tx, Command::Finish);
    executor.join().expect("follower executor ends");
    assert_eq!(b.stop().code(), Some(0));
    let (original, original_epochs, original_start) = leader_log(broker_dir.path().to_path_buf());
    assert_eq!((copy_start, original_start), (0, 0));

    let layout_copy = layout(&copy);
    assert_eq!(layout_copy.first().map(|l| l.0), Some(0));
    assert_eq!(layout_copy.last().map(|l| l.1), Some(5_999));
    assert!(
        layout_copy.iter().all(|l| l.2 == leader.1),
        "every batch carries the leader's epoch {}: {:?}",
        leader.1,
        layout_copy
            .iter()
            .map(|l| l.2)
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert_eq!(
        layout_copy,
        layout(&original),
        "same batches at the same offsets"
    );
    assert!(
        copy == original,
        "the follower's log is byte-identical to the leader's"
    );
    assert_eq!(copy_epochs, original_epochs);
}

/// A follower whose log ends below the leader's log start (DeleteRecords moved it, inside
/// a batch) restarts its log there and copies the rest; it rides out a restart of the
/// leader (reconnecting to the same address) and keeps following.
#[test]
fn a_follower_below_the_leaders_start_restarts_there_and_survives_a_leader_restart() {
    init_logs();
    let broker_dir = common::tempdir("follower");
    let follower_dir = common::tempdir("follower");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut b = Broker::start_at(broker_dir.path(), &listen, "0-1", &[]);
    create_topic(&b);
    produce(&b, "first", 2_000);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .create()
        .expect("admin");
    let mut before = TopicPartitionList::new();
    before
        .add_partition_offset(TOPIC, 0, rdkafka::Offset::Offset(1_203))
        .unwrap();
    let deleted = futures_executor::block_on(admin.delete_records(&before, &AdminOptions::new()))
        .expect("delete_records");
    let low = deleted.elements()[0].offset();
    assert_eq!(
        low,
        rdkafka::Offset::Offset(1_203),
        "{:?}",
        deleted.elements()[0].error()
    );
    drop(admin);

    let leader = leader_of(&b);
    let (tx, rx) = mpsc::channel();
    // Under flush.policy=fsync the follower asks for more only once what it has is
    // synced, so its high watermark never passes its synced end.
    let fsync = LogConfig {
        flush: sluice_engine::FlushPolicy::Fsync,
        ..LogConfig::default()
    };
    let executor = follower(follower_dir.path().to_path_buf(), port, leader, fsync, rx);
    let (end, hw, _, synced) = ask(&tx, |r| Command::WaitFor(2_000, r)).expect("caught up");
    assert_eq!((end, hw, synced), (2_000, 2_000, 2_000));

    // The leader goes away and comes back on the same address.
    assert_eq!(b.stop().code(), Some(0));
    let mut b = Broker::start_at(broker_dir.path(), &listen, "0-1", &[]);
    let leader_after = leader_of(&b);
    assert_eq!(leader_after.0, leader.0);
    ask(&tx, |r| Command::Follow(leader_after.1, r));
    produce(&b, "second", 1_000);
    let (end, hw, _, synced) =
        ask(&tx, |r| Command::WaitFor(3_000, r)).expect("followed after restart");
    assert_eq!((end, hw, synced), (3_000, 3_000, 3_000));

    let (copy, copy_epochs, copy_start) = ask(&tx, Command::Finish);
    executor.join().expect("follower executor ends");
    assert_eq!(b.stop().code(), Some(0));
    let (original, original_epochs, original_start) = leader_log(broker_dir.path().to_path_buf());
    assert_eq!(
        (copy_start, original_start),
        (1_203, 1_203),
        "the follower's log start follows the leader's"
    );
    let layout_copy = layout(&copy);
    let first = layout_copy.first().copied().expect("batches");
    assert!(
        first.0 <= 1_203 && first.1 >= 1_203,
        "the copy starts with the batch holding the leader's log start: {first:?}"
    );
    assert_eq!(layout_copy.last().map(|l| l.1), Some(2_999));
    assert_eq!(
        layout_copy,
        layout(&original),
        "same batches at the same offsets"
    );
    assert!(
        copy == original,
        "the follower's log is byte-identical to the leader's"
    );
    assert_eq!(copy_epochs, original_epochs);
}
