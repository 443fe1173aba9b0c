//! A full disk: the log goes offline with a storage error (logged), appends are refused
//! with `AppendError::Io`, waiters get `LogError::Offline`, and nothing acknowledged
//! before is lost. Uses a small loop-mounted ext4 image, so it needs root (as CI has);
//! elsewhere it says so and checks nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sluice_engine::{AppendError, LeaderEpoch, LogConfig, LogError, Offset};

struct Mounted {
    image: PathBuf,
    dir: PathBuf,
}

impl Mounted {
    fn new(root: &Path, size_mib: u32) -> Option<Mounted> {
        let image = root.join("disk.img");
        let dir = root.join("mnt");
        std::fs::create_dir_all(&dir).ok()?;
        let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
        let made = ok(Command::new("truncate")
            .arg("-s")
            .arg(format!("{size_mib}M"))
            .arg(&image))
            && ok(Command::new("mkfs.ext4").arg("-q").arg("-F").arg(&image))
            && ok(Command::new("mount")
                .arg("-o")
                .arg("loop")
                .arg(&image)
                .arg(&dir));
        made.then_some(Mounted { image, dir })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !unmounted {
            // Still busy (a file the log held closes later): detach it now, so no test
            // run leaves a mount behind; the kernel frees it once it is idle.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = std::fs::remove_file(&self.image);
    }
}

#[test]
fn a_full_disk_takes_the_log_offline_without_losing_acknowledged_data() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("full-disk test needs root to loop-mount a small filesystem; not run");
        return;
    }
    let root = test_dir();
    let mounted = Mounted::new(root.path(), 24).expect("loop-mount a 24 MiB ext4 image");
    let data = mounted.dir.clone();
    let config = LogConfig {
        preallocate: false,
        segment_bytes_max: 1 << 20,
        ..small_config()
    };
    let cfg = config.clone();
    let acked = run(move || async move {
        let (_m, log) = open_log(&data, cfg, small_shard()).await;
        let batch = tagged_batch(1, 4, 1000, 0);
        let mut acked = Offset(0);
        let mut error = None;
        for i in 0..100_000 {
            match log.append(&batch, LeaderEpoch(0)).await {
                // Acknowledge in groups, as a busy producer would be.
                Ok(_) if i % 32 != 31 => {}
                Ok(info) => match log.wait_written(info.last_offset.plus(1)).await {
                    Ok(()) => acked = info.last_offset.plus(1),
                    Err(e) => {
                        assert!(matches!(e, LogError::Offline(_)), "{e}");
                        error = Some(e);
                        break;
                    }
                },
                Err(e) => {
                    assert!(matches!(e, AppendError::Io(_)), "{e}");
                    break;
                }
            }
        }
        assert!(
            error.is_some() || log.failure().is_some(),
            "the disk filled up"
        );
        assert!(
            log.failure().unwrap().contains("No space left"),
            "{:?}",
            log.failure()
        );
        assert!(matches!(
            log.append(&batch, LeaderEpoch(0)).await,
            Err(AppendError::Io(_))
        ));
        assert!(acked > Offset(1000), "wrote {acked} before filling up");
        acked
    });
    // After the failure, everything acknowledged is there.
    let data = mounted.dir.clone();
    run(move || async move {
        let (_m, log) = open_log(&data, config, small_shard()).await;
        assert!(log.log_end_offset() >= acked);
        let all = read_all(&log, Offset(0), 1 << 20).await;
        let ranges = batch_ranges(&all);
        assert!(ranges.last().unwrap().1 + 1 >= acked.0);
    });
    drop(mounted);
}
