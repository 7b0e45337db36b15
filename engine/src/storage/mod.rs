//! Durable storage: the record batch format, partition logs of segments with their
//! index files, group commit over the shard's io_uring, recovery, retention, and the
//! metadata store. See docs/storage.md.
//!
//! Owns: everything on disk. Never: imports network or model code; never acknowledges
//! a record as durable before the sync that covers it has completed.

pub mod codec;
pub mod dir;
pub mod error;
pub mod index;
pub mod log;
pub mod meta;
pub mod meta_value;
mod segment;
// The runtime is not built under loom (its models cover the ring and doorbell only).
#[cfg(not(loom))]
pub mod shard_log;
pub mod sim;

pub use dir::{FileId, FsDir, StorageDir};
pub use error::StorageError;
pub use log::{
    AppendError, AppendOutcome, AppendTicket, BlockingDriver, Durability, IoRequest, LogConfig,
    PartitionLog, RecoveryReport, Retention, RetentionReport, SEGMENT_BYTES_LIMIT,
};
pub use segment::{parse_segment_name, segment_name};
#[cfg(not(loom))]
pub use shard_log::{AppendCallback, ShardLog};
