//! Storage errors: every I/O failure carries the operation and the path, and the
//! conditions an operator acts on (disk full, permission, missing directory, corruption)
//! are variants of their own.
//!
//! Owns: `StorageError` and the mapping from `io::Error`. Never: logs or panics.

use std::io;
use std::path::PathBuf;

use super::codec::CodecError;

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The filesystem is full (ENOSPC, EDQUOT). Appends succeed again once space is freed.
    #[error("no space left on device: {op} {path}")]
    NoSpace {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
    },
    /// Permission denied (EACCES, EPERM, EROFS).
    #[error("permission denied: {op} {path}: {source}")]
    PermissionDenied {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file or directory does not exist (ENOENT).
    #[error("not found: {op} {path}")]
    NotFound {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
    },
    /// Any other I/O error (EIO, ...).
    #[error("I/O error: {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Data on disk is corrupt somewhere recovery may not cut (not the tail).
    #[error("corrupt log data in {path} at byte {position}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the bad batch.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The records could not be encoded (empty, too many, too large).
    #[error("cannot encode batch: {0}")]
    Encode(#[from] CodecError),
    /// The log is closed.
    #[error("log is closed")]
    Closed,
}

impl StorageError {
    /// Classifies an OS error from `op` on `path`.
    pub fn from_io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => StorageError::NoSpace { op, path },
            Some(libc::EACCES | libc::EPERM | libc::EROFS) => {
                StorageError::PermissionDenied { op, path, source }
            }
            Some(libc::ENOENT) => StorageError::NotFound { op, path },
            _ => StorageError::Io { op, path, source },
        }
    }

    /// Whether retrying later may succeed without operator action on the data (disk
    /// full, transient I/O error) as opposed to corruption or a closed log.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::NoSpace { .. } | StorageError::Io { .. })
    }
}
