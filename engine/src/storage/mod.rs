//! Durable storage: the record batch format, partition logs of segments, group commit,
//! recovery. (Issue #4, being built in steps; see docs/storage.md.)
//!
//! Owns: everything on disk. Never: imports network or model code; never acknowledges
//! a record as durable before the sync that covers it has completed.

pub mod codec;
pub mod dir;
pub mod error;
pub mod index;
pub mod log;
pub mod meta;
mod segment;
pub mod shard_log;
pub mod sim;

pub use dir::{FileId, FsDir, StorageDir};
pub use error::StorageError;
pub use log::{
    AppendError, AppendOutcome, AppendTicket, BlockingDriver, Durability, IoRequest, LogConfig,
    PartitionLog, RecoveryReport, Retention, RetentionReport, SEGMENT_BYTES_LIMIT,
};
pub use segment::{parse_segment_name, segment_name};
pub use shard_log::{AppendCallback, ShardLog};
