//! Live partition moves and the placement report, as the admin endpoint asks for them.
//!
//! Owns: the bridge from the admin thread (blocking) to shard 0's mover task, the move
//! protocol, and the placement report (`GET /placement`).
//!
//! The bridge is a bounded std channel plus a doorbell, a Unix socket pair: the admin
//! thread queues a move and writes a byte; the mover awaits the byte on its own reactor
//! (io_uring), so it sleeps until there is work, and no glommio waker is woken from
//! another thread (see `shard.rs`).
//!
//! A move, one at a time per broker: the table marks the partition moving (routing on
//! every shard waits), the source shard takes its FIFO append turn (so appends before it
//! finish), closes the log (written, synced, checkpointed, producer state with it), the
//! table flips and the mover waits until the flip is in the placement file, the target
//! opens the log, the mark goes and the waiting requests go to the target. Requests
//! already on their way to the source wait there for the move to land and are answered
//! NOT_LEADER_OR_FOLLOWER, which clients retry on the same connection after a metadata
//! refresh. If the flip cannot be written or the target cannot open the log, the table
//! flips back (written too) and the source opens it again.
//!
//! Coordinator partitions (`__consumer_offsets`) do not move live: the coordinator's
//! state for them lives on their shard (restart with a pin to move them).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_lite::AsyncReadExt;

use serde::Serialize;

use crate::broker::shard::{Shard, ShardOp, ShardReply};
use crate::groups::OFFSETS_TOPIC;
use crate::placement::PlacementTable;
use crate::store::{PartitionId, TopicPartition};

/// Moves waiting for the mover at once; more are refused as busy.
const MOVES_QUEUED_MAX: usize = 8;
/// How long the admin thread waits for a move's answer.
const MOVE_ANSWER_WAIT: Duration = Duration::from_secs(120);
/// Doorbell bytes the mover reads at once (each queued move rings once).
const DOORBELL_READ_BYTES: usize = MOVES_QUEUED_MAX;

/// Why a move was refused or failed; each maps to an HTTP status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoveError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
    #[error("the broker is not running or is stopping")]
    NotRunning,
    #[error("{MOVES_QUEUED_MAX} moves are already waiting; try again")]
    Busy,
}

struct MoveRequest {
    topic: String,
    partition: i32,
    cpu: usize,
    reply: mpsc::Sender<Result<String, MoveError>>,
}

struct Control {
    /// Weak: the table's last owners are the shards, so it is dropped (and its last
    /// change written) when they stop.
    table: Weak<PlacementTable>,
    moves: mpsc::SyncSender<MoveRequest>,
    /// The admin side of the doorbell; non-blocking (a full socket already wakes the mover).
    bell: UnixStream,
}

/// The running broker's placement, for the admin thread (one broker per process).
static CONTROL: Mutex<Option<Control>> = Mutex::new(None);

/// Makes `table` and the mover reachable from the admin endpoint; returns the receiving
/// end for shard 0's mover task. Without a doorbell (no socket pair could be made) the
/// admin endpoint answers that no broker runs.
pub(crate) fn register(table: Arc<PlacementTable>) -> MoveQueue {
    let (tx, rx) = mpsc::sync_channel(MOVES_QUEUED_MAX);
    let pair = UnixStream::pair().and_then(|(bell, door)| {
        bell.set_nonblocking(true)?;
        Ok((bell, door))
    });
    let (bell, door) = match pair {
        Ok(p) => (Some(p.0), Some(p.1)),
        Err(e) => {
            tracing::error!(error = %e, "no doorbell for the partition mover; live moves are off");
            (None, None)
        }
    };
    if let Ok(mut c) = CONTROL.lock() {
        *c = bell.map(|bell| Control {
            table: Arc::downgrade(&table),
            moves: tx,
            bell,
        });
    }
    MoveQueue { rx, door }
}

/// The mover's end of the queue and of the doorbell.
pub(crate) struct MoveQueue {
    rx: mpsc::Receiver<MoveRequest>,
    door: Option<UnixStream>,
}

impl std::fmt::Debug for MoveQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MoveQueue")
    }
}

/// Asks the broker to move `topic`/`partition` to the shard on `cpu` and waits for the
/// answer (blocking; the admin thread's).
pub fn request_move(topic: &str, partition: i32, cpu: usize) -> Result<String, MoveError> {
    let (tx, rx) = mpsc::channel();
    {
        let mut guard = CONTROL.lock().map_err(|_| MoveError::NotRunning)?;
        let control = guard.as_mut().ok_or(MoveError::NotRunning)?;
        let request = MoveRequest {
            topic: topic.to_string(),
            partition,
            cpu,
            reply: tx,
        };
        control.moves.try_send(request).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => MoveError::Busy,
            mpsc::TrySendError::Disconnected(_) => MoveError::NotRunning,
        })?;
        // After the send, so the mover that wakes finds the move. WouldBlock: bytes the
        // mover has not read yet wake it anyway.
        match control.bell.write(&[1]) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(MoveError::NotRunning),
        }
    }
    rx.recv_timeout(MOVE_ANSWER_WAIT)
        .unwrap_or_else(|_| Err(MoveError::Failed("no answer from the broker".into())))
}

/// Shard 0's mover: one move at a time until the broker stops; asleep on the doorbell
/// while none is queued.
pub(crate) async fn run_mover(shard: Rc<Shard>, queue: MoveQueue) {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let MoveQueue { rx, door } = queue;
    let Some(door) = door else {
        return;
    };
    // SAFETY: the descriptor is one end of a socket pair this queue owned, given up here.
    let mut door = unsafe { glommio::net::UnixStream::from_raw_fd(door.into_raw_fd()) };
    let mut rung = [0u8; DOORBELL_READ_BYTES];
    loop {
        let req = match rx.try_recv() {
            Ok(req) => req,
            Err(mpsc::TryRecvError::Disconnected) => return,
            Err(mpsc::TryRecvError::Empty) => {
                // Both futures borrow only their own state; the one that loses is dropped.
                let rang = async { Some(door.read(&mut rung).await) };
                let stopped = async {
                    shard.stopping.wait().await;
                    None
                };
                match futures_lite::future::or(rang, stopped).await {
                    Some(Ok(n)) if n > 0 => continue,
                    // Stopping, or the admin side is gone (EOF, error): no more moves.
                    _ => return,
                }
            }
        };
        let result = move_partition(&shard, &req.topic, req.partition, req.cpu).await;
        match &result {
            Ok(m) => {
                tracing::info!(topic = %req.topic, partition = req.partition, cpu = req.cpu, "{m}")
            }
            Err(e) => {
                tracing::warn!(topic = %req.topic, partition = req.partition, cpu = req.cpu, error = %e, "partition move refused or failed")
            }
        }
        let _ = req.reply.send(result);
    }
}

async fn move_partition(
    shard: &Rc<Shard>,
    topic: &str,
    partition: i32,
    cpu: usize,
) -> Result<String, MoveError> {
    let table = shard.placement.clone();
    let count = shard
        .catalog
        .partition_count(topic)
        .ok_or_else(|| MoveError::NotFound(format!("unknown topic {topic}")))?;
    if partition < 0 || partition >= count {
        return Err(MoveError::NotFound(format!(
            "{topic} has partitions 0-{}, not {partition}",
            count - 1
        )));
    }
    let target = table.shard_of_cpu(cpu).ok_or_else(|| {
        MoveError::Refused(format!(
            "CPU {cpu} runs no shard (shards run on CPUs {:?})",
            table.cpus()
        ))
    })?;
    if topic == OFFSETS_TOPIC {
        return Err(MoveError::Refused(format!(
            "{OFFSETS_TOPIC} partitions hold group coordinator state and do not move live; pin them in [placement] and restart"
        )));
    }
    if let Some(pin) = table.pin_of(topic, partition) {
        return Err(MoveError::Refused(format!(
            "{topic}/{partition} is pinned to CPU {} by placement.pins; change the pin and restart",
            pin.cpu
        )));
    }
    let tp = TopicPartition {
        topic: topic.to_string(),
        partition: PartitionId(partition),
    };
    let name = format!("{topic}/{partition}");
    let source = shard.owner_of(&tp);
    if source == target {
        return Ok(format!("{name} is already on CPU {cpu} (shard {target})"));
    }
    table.set_moving(topic, partition, true);
    let result = flip(shard, &table, &tp, source, target).await;
    table.set_moving(topic, partition, false);
    // Requests waiting for the partition on any shard look at the table again.
    let ended = (0..shard.count).map(|s| (s, ShardOp::MoveEnded)).collect();
    shard.call_all(ended).await;
    result.map(|()| {
        format!(
            "moved {name} from CPU {} (shard {source}) to CPU {cpu} (shard {target})",
            table.cpus().get(source).copied().unwrap_or(source)
        )
    })
}

/// Close on `source`, flip the table and write it, open on `target`; back to `source` if
/// the write or the opening fails.
async fn flip(
    shard: &Rc<Shard>,
    table: &PlacementTable,
    tp: &TopicPartition,
    source: usize,
    target: usize,
) -> Result<(), MoveError> {
    let op = ShardOp::MoveOut { tp: tp.clone() };
    check(shard.call(source, op).await)?;
    table.assign(&tp.topic, tp.partition.0, target);
    let moved = match table.persisted().await {
        Ok(()) => check(shard.call(target, ShardOp::MoveIn { tp: tp.clone() }).await),
        Err(e) => Err(MoveError::Failed(e.to_string())),
    };
    if let Err(e) = moved {
        table.assign(&tp.topic, tp.partition.0, source);
        // The file held `source` unless the flip's write landed; either way `source` is
        // written before the log opens there again.
        if let Err(e) = table.persisted().await {
            tracing::error!(%tp, error = %e, "placement file not written after a failed move; placement kept in memory");
        }
        let back = ShardOp::MoveIn { tp: tp.clone() };
        let reopened = check(shard.call(source, back).await);
        return Err(MoveError::Failed(match reopened {
            Ok(()) => format!("{e}; {tp} stays on shard {source}"),
            Err(e2) => format!("{e}; reopening on shard {source} failed too: {e2}"),
        }));
    }
    Ok(())
}

fn check(reply: ShardReply) -> Result<(), MoveError> {
    match reply {
        ShardReply::Done => Ok(()),
        ShardReply::Failed(e) => Err(MoveError::Failed(e)),
        ShardReply::Unreachable => Err(MoveError::NotRunning),
        other => Err(MoveError::Failed(format!("unexpected answer {other:?}"))),
    }
}

/// Traffic of a partition, or summed over a shard's, in the placement report.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq, Eq)]
pub struct TrafficReport {
    pub bytes_in_total: u64,
    pub bytes_out_total: u64,
    pub bytes_in_per_s: u64,
    pub bytes_out_per_s: u64,
    pub produce_requests_per_s: u64,
    pub fetch_requests_per_s: u64,
}

impl TrafficReport {
    fn of(t: &crate::admin::metrics::TrafficStat) -> TrafficReport {
        TrafficReport {
            bytes_in_total: t.bytes_in_total,
            bytes_out_total: t.bytes_out_total,
            bytes_in_per_s: t.bytes_in_per_s,
            bytes_out_per_s: t.bytes_out_per_s,
            produce_requests_per_s: t.produce_requests_per_s,
            fetch_requests_per_s: t.fetch_requests_per_s,
        }
    }

    fn add(&mut self, o: &TrafficReport) {
        self.bytes_in_total += o.bytes_in_total;
        self.bytes_out_total += o.bytes_out_total;
        self.bytes_in_per_s += o.bytes_in_per_s;
        self.bytes_out_per_s += o.bytes_out_per_s;
        self.produce_requests_per_s += o.produce_requests_per_s;
        self.fetch_requests_per_s += o.fetch_requests_per_s;
    }
}

/// One shard in the placement report.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ShardReport {
    pub shard: usize,
    pub cpu: usize,
    pub partitions: usize,
    /// Its partitions' traffic, summed (the JSON has the fields inline).
    #[serde(flatten)]
    pub traffic: TrafficReport,
}

/// One partition in the placement report.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    pub topic: String,
    pub partition: i32,
    pub shard: usize,
    pub cpu: usize,
    pub moving: bool,
    /// The JSON has the fields inline.
    #[serde(flatten)]
    pub traffic: TrafficReport,
}

/// `GET /placement`: the partition → core map with traffic per partition and per core.
#[derive(Debug, Clone, Serialize)]
pub struct PlacementReport {
    pub policy: String,
    pub shards: Vec<ShardReport>,
    pub partitions: Vec<PartitionReport>,
}

/// The running broker's placement report, or `None` when no broker runs.
pub fn report() -> Option<PlacementReport> {
    let table = CONTROL.lock().ok()?.as_ref()?.table.upgrade()?;
    let snap = table.snapshot().1;
    let stats = crate::admin::metrics::partition_traffic();
    let mut shards: Vec<ShardReport> = table
        .cpus()
        .iter()
        .enumerate()
        .map(|(shard, cpu)| ShardReport {
            shard,
            cpu: *cpu,
            ..Default::default()
        })
        .collect();
    let mut partitions = Vec::new();
    for (topic, partition, shard) in snap.entries() {
        let traffic = stats
            .get(&(topic.clone(), partition))
            .map(TrafficReport::of)
            .unwrap_or_default();
        if let Some(s) = shards.get_mut(shard) {
            s.partitions += 1;
            s.traffic.add(&traffic);
        }
        partitions.push(PartitionReport {
            moving: snap.is_moving(&topic, partition),
            cpu: table.cpus().get(shard).copied().unwrap_or(shard),
            topic,
            partition,
            shard,
            traffic,
        });
    }
    Some(PlacementReport {
        policy: format!("{:?}", table.policy()).to_lowercase(),
        shards,
        partitions,
    })
}
