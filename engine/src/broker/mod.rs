//! The embedded broker: one shard runtime and the three models (subjects, streams,
//! exchanges and queues) over one data directory.
//!
//! Owns: the runtime's life, the data directory's layout (`streams/`, `queues/`) and
//! its lock (one broker per directory: a second process opening it gets `Locked`,
//! never a shared log), and the order things start and stop in.
//!
//! Never: serves the network (`net` does that over a `Broker`) or holds state of its
//! own on the data path: every call goes straight to a model.
//!
//! ```no_run
//! use ringbroker::broker::{Broker, BrokerConfig};
//! let broker = Broker::open(BrokerConfig::new("/tmp/ringbroker-demo"))?;
//! broker.pubsub().publish("greetings.world", &b"hello"[..])?;
//! broker.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::pubsub::PubSub;
use crate::queue::{Connection, QueueError, Queues};
use crate::runtime::{Runtime, RuntimeConfig, RuntimeError, RuntimeHandle, ShutdownReport};
use crate::stream::{StreamError, Streams};

/// The name of the lock file at the root of a data directory.
pub const LOCK_FILE: &str = "LOCK";

/// How an embedded broker is shaped.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where streams and durable queues live (created if missing).
    pub data_dir: PathBuf,
    /// The shard runtime (shard count, ring sizes, ...).
    pub runtime: RuntimeConfig,
}

impl BrokerConfig {
    /// Defaults (one shard per core) over `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            runtime: RuntimeConfig::default(),
        }
    }
}

/// Why a broker could not open or stop.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The data directory could not be created or locked.
    #[error("data directory {path:?}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Another broker (this process or another) has the data directory open.
    #[error("data directory {path:?} is in use by another broker")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The shard runtime failed to start or stop.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The streams could not be recovered.
    #[error("streams: {0}")]
    Streams(#[from] StreamError),
    /// The exchanges and queues could not be recovered.
    #[error("queues: {0}")]
    Queues(#[from] QueueError),
}

/// An embedded broker. Cheap to share by reference; the model handles it gives out are
/// cheap to clone and usable from any thread that is not a shard. `connection` is what
/// the broker's own exclusive queues belong to (`BrokerApi` declares and consumes
/// queues as it); it goes at shutdown, before the runtime stops.
pub struct Broker {
    /// First field: dropped first (deleting its exclusive queues needs the runtime).
    connection: Option<Connection>,
    runtime: Option<Runtime>,
    handle: RuntimeHandle,
    pubsub: PubSub,
    streams: Streams,
    queues: Queues,
    data_dir: PathBuf,
    /// Held (with its `flock`) for the broker's life.
    _lock: File,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("data_dir", &self.data_dir)
            .field("shards", &self.handle.shard_count())
            .finish()
    }
}

impl Broker {
    /// Locks `config.data_dir`, starts the shards and recovers every stream, exchange
    /// and queue stored there.
    pub fn open(config: BrokerConfig) -> Result<Self, BrokerError> {
        let lock = lock_data_dir(&config.data_dir)?;
        let runtime = Runtime::start(config.runtime)?;
        let handle = runtime.handle();
        let streams = Streams::open(handle.clone(), config.data_dir.join("streams"))?;
        let queues = Queues::open(handle.clone(), config.data_dir.join("queues"))?;
        Ok(Self {
            connection: Some(queues.connection()),
            pubsub: PubSub::new(handle.clone()),
            runtime: Some(runtime),
            handle,
            streams,
            queues,
            data_dir: config.data_dir,
            _lock: lock,
        })
    }

    /// Subjects: publish/subscribe, queue groups, request-reply.
    pub fn pubsub(&self) -> &PubSub {
        &self.pubsub
    }

    /// Streams and their consumers.
    pub fn streams(&self) -> &Streams {
        &self.streams
    }

    /// Exchanges, queues and bindings.
    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    /// The broker's own queue connection (what its exclusive queues belong to).
    pub fn connection(&self) -> &Connection {
        match &self.connection {
            Some(connection) => connection,
            None => unreachable!("the connection lives until shutdown, which consumes the broker"),
        }
    }

    /// The shard runtime, for code that runs on shards (the network server).
    pub fn runtime(&self) -> &RuntimeHandle {
        &self.handle
    }

    /// Where the broker stores its data.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops gracefully: work accepted so far runs (appends finish and sync under
    /// their policy), then the shards stop. The data directory is unlocked on return.
    pub fn shutdown(mut self) -> Result<ShutdownReport, BrokerError> {
        // Its exclusive queues are deleted while the shards still run.
        drop(self.connection.take());
        match self.runtime.take() {
            Some(runtime) => Ok(runtime.shutdown()?),
            None => Ok(ShutdownReport::default()),
        }
    }
}

/// Creates `dir` if missing and takes an exclusive `flock` on its lock file. The lock
/// goes with the file descriptor, so a crashed broker never leaves the directory locked.
fn lock_data_dir(dir: &Path) -> Result<File, BrokerError> {
    let io_err = |source| BrokerError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io_err)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(io_err)?;
    // SAFETY: `file` is an open descriptor for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(file);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Err(BrokerError::Locked {
            path: dir.to_path_buf(),
        });
    }
    Err(io_err(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_of_one_data_dir_is_locked_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = BrokerConfig::new(dir.path());
        config.runtime.shards = Some(1);
        config.runtime.pin_to_cores = false;
        let first = Broker::open(config.clone()).expect("first open");
        let second = Broker::open(config.clone());
        assert!(
            matches!(second, Err(BrokerError::Locked { .. })),
            "{second:?}"
        );
        first.shutdown().expect("shutdown");
        let again = Broker::open(config).expect("open after the first closed");
        again.shutdown().expect("shutdown");
    }
}
