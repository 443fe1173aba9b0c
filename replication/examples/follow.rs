//! Follows one partition of a running broker into a fresh local log, the way a follower
//! shard does, and reports how fast it caught up (a measurement aid, not a broker):
//!
//! `cargo run --release -p sluice-replication --example follow -- HOST:PORT TOPIC PARTITION DIR [LEADER_EPOCH]`
//!
//! DIR must not hold the partition yet (it is created there, under a direct-I/O capable
//! filesystem). The run ends once the local log holds everything up to the leader's high
//! watermark and nothing new arrived for a second.

use std::time::{Duration, Instant};

use sluice_engine::watch::OffsetWatch;
use sluice_engine::{LogConfig, LogManager, ShardConfig, TopicPartition};
use sluice_replication::{FetcherConfig, Fetchers, Followed, LeaderAddr};

fn usage() -> ! {
    eprintln!("usage: follow HOST:PORT TOPIC PARTITION DIR [LEADER_EPOCH]");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        usage();
    }
    let Some((host, port)) = args[0].rsplit_once(':') else {
        usage()
    };
    let port: u16 = port.parse().unwrap_or_else(|_| usage());
    let partition: i32 = args[2].parse().unwrap_or_else(|_| usage());
    let epoch: i32 = args
        .get(4)
        .map_or(0, |e| e.parse().unwrap_or_else(|_| usage()));
    let (host, topic, dir) = (host.to_string(), args[1].clone(), args[3].clone());
    let outcome = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            let tp = TopicPartition::new(topic, partition);
            let manager = LogManager::open(
                dir.as_ref(),
                ShardConfig::default(),
                |_| false,
                |_| LogConfig::default(),
            )
            .await
            .map_err(|e| format!("opening {dir}: {e}"))?;
            let log = manager
                .create(tp.clone(), LogConfig::default())
                .await
                .map_err(|e| format!("creating {tp} in {dir}: {e}"))?;
            let hw = OffsetWatch::new(0);
            let fetchers = Fetchers::new(sluice_engine::BrokerId(1_000), FetcherConfig::default());
            let started = Instant::now();
            fetchers.assign(vec![Followed {
                tp: tp.clone(),
                log: log.clone(),
                leader: LeaderAddr {
                    id: sluice_engine::BrokerId(-1),
                    host,
                    port,
                },
                leader_epoch: sluice_engine::LeaderEpoch(epoch),
                hw: hw.clone(),
            }]);
            // Done once caught up (lag 0, high watermark at the end) and quiet for a second.
            let (mut last_end, mut quiet_since, mut caught_up_at) = (-1, Instant::now(), None);
            loop {
                glommio::timer::sleep(Duration::from_millis(10)).await;
                let end = log.log_end_offset().0;
                let lag = fetchers.lag().first().map_or(-1, |l| l.1);
                if end != last_end {
                    (last_end, quiet_since) = (end, Instant::now());
                }
                if lag == 0 && end > 0 && hw.get() == end {
                    caught_up_at.get_or_insert_with(Instant::now);
                } else {
                    caught_up_at = None;
                }
                if caught_up_at.is_some() && quiet_since.elapsed() > Duration::from_secs(1) {
                    break;
                }
            }
            let elapsed = caught_up_at.unwrap_or_else(Instant::now) - started;
            fetchers.stop().await;
            let (records, bytes) = (log.log_end_offset().0, log.size_bytes());
            manager.close_all().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((records, bytes, elapsed))
        })
        .expect("executor")
        .join()
        .expect("executor ends");
    match outcome {
        Ok((records, bytes, elapsed)) => {
            let secs = elapsed.as_secs_f64().max(1e-9);
            println!(
                "followed {records} records, {bytes} bytes in {:.3} s: {:.1} MB/s, {:.0} records/s",
                secs,
                bytes as f64 / secs / 1e6,
                records as f64 / secs
            );
        }
        Err(e) => {
            eprintln!("follow: {e}");
            std::process::exit(1);
        }
    }
}
