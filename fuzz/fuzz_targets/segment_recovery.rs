//! Segment recovery over arbitrary file bytes: the input is written as the only segment
//! of a partition (no index, no checkpoint), and the real recovery opens it through the
//! log manager, on one glommio executor kept for the whole run. Recovery must never panic
//! and must keep no more than the leading run of whole, CRC-valid, contiguous batches.
#![no_main]

use std::path::PathBuf;

use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use libfuzzer_sys::fuzz_target;
use sluice_engine::batch::{self, BatchIter};
use sluice_engine::{LogConfig, LogManager, Offset, ShardConfig, TopicPartition};

thread_local! {
    static EXECUTOR: LocalExecutor = LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .expect("executor starts");
    static DIR: PathBuf = {
        let base = std::env::var_os("SLUICE_FUZZ_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        base.join(format!("sluice-fuzz-recovery-{}", std::process::id()))
    };
}

/// End offset of the leading run of whole, CRC-valid batches, each starting where the
/// previous one ended, from offset 0: more than this is never recovered.
fn end_bound(data: &[u8]) -> i64 {
    let mut end = 0i64;
    for (_, header, bytes) in BatchIter::new(data) {
        if header.base_offset().0 != end || batch::verify_crc(&header, bytes).is_err() {
            break;
        }
        end = header.next_offset().0;
    }
    end
}

fn shard_config() -> ShardConfig {
    ShardConfig {
        tail_cache_bytes_max: 64 * 1024,
        write_buffer_bytes_max: 64 * 1024,
        shard_write_buffer_bytes_max: 1 << 20,
        write_chunk_bytes: 8192,
        checkpoint_interval_ms: 60_000,
        write_depth_max: 3,
        compaction_map_bytes_max: 1 << 20,
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = DIR.with(PathBuf::clone);
    let _ = std::fs::remove_dir_all(&dir);
    let part = dir.join("t-0");
    std::fs::create_dir_all(&part).expect("scratch directory");
    std::fs::write(part.join("00000000000000000000.log"), data).expect("segment written");
    let bound = end_bound(data);
    EXECUTOR.with(|ex| {
        ex.run(async {
            let config = LogConfig {
                segment_bytes_max: 1 << 20,
                index_interval_bytes: 512,
                ..LogConfig::default()
            };
            let manager =
                LogManager::open(&dir, shard_config(), |_| true, move |_| config.clone()).await;
            let Ok(manager) = manager else { return };
            if let Some(log) = manager.get(&TopicPartition::new("t", 0)) {
                let end = log.log_end_offset();
                assert!(end <= Offset(bound), "recovered to {end:?}, past {bound}");
            }
            let _ = manager.close_all().await;
        })
    });
});
