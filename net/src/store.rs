//! The storage seam: everything `net` takes from `sluice-engine`, in one place.

pub use sluice_engine::batch::{records as batch_records, BatchBuilder, BatchIter, Record};
pub use sluice_engine::txn::{AbortedTxn, Marker, MarkerKind, ABORTED_TXNS_MAX};
pub use sluice_engine::{
    AppendError, BatchSlice, FlushPolicy, LeaderEpoch, LogConfig, LogError, LogManager, Offset,
    PartitionId, PartitionLog, ReadError, ReadLimits, ShardConfig, TopicPartition,
};
