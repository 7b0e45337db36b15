//! The broker a run drives: an embedded one on a fresh data directory (removed
//! afterwards), or a remote `ringbrokerd` reached over the native protocol with one
//! connection per thread.
//!
//! Owns: opening and closing that broker, and the data directory it created. Never:
//! removes a directory it did not create, or reconnects a dropped connection (a drop
//! fails the run rather than hiding lost messages).

use std::path::PathBuf;
use std::sync::Arc;

use ringbroker::api::BrokerApi;
use ringbroker::broker::{Broker, BrokerConfig};
use ringbroker::client::{Client, ClientConfig};

use super::options::Plan;
use super::BenchError;

/// Where the load goes.
pub enum Target {
    /// An embedded broker on a data directory this run created.
    Embedded {
        /// The broker, shared by every thread.
        broker: Arc<Broker>,
        /// Its data directory (removed on close).
        dir: PathBuf,
    },
    /// A remote daemon.
    Remote {
        /// Its URL.
        url: String,
        /// Its token.
        auth_token: Option<String>,
    },
}

impl Target {
    /// Opens the embedded broker, or checks the remote one answers.
    pub fn open(plan: &Plan) -> Result<Self, BenchError> {
        if let Some(url) = &plan.url {
            let target = Self::Remote {
                url: url.clone(),
                auth_token: plan.auth_token.clone(),
            };
            drop(target.connect()?);
            return Ok(target);
        }
        let dir = match &plan.data_dir {
            Some(dir) => dir.clone(),
            None => std::env::temp_dir().join(format!("ringbrokerd-bench-{}", std::process::id())),
        };
        if dir.exists() {
            return Err(BenchError::DataDirExists(dir));
        }
        let mut config = BrokerConfig::new(&dir);
        config.runtime.shards = plan.shards;
        match Broker::open(config) {
            Ok(broker) => Ok(Self::Embedded {
                broker: Arc::new(broker),
                dir,
            }),
            Err(error) => {
                // Created by the failed open, if at all; ours either way.
                let _ = std::fs::remove_dir_all(&dir);
                Err(BenchError::Broker(error.to_string()))
            }
        }
    }

    /// "embedded" or "remote".
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Embedded { .. } => "embedded",
            Self::Remote { .. } => "remote",
        }
    }

    /// A handle for one thread: the shared broker, or a new connection.
    pub fn connect(&self) -> Result<Arc<dyn BrokerApi>, BenchError> {
        match self {
            Self::Embedded { broker, .. } => Ok(broker.clone()),
            Self::Remote { url, auth_token } => {
                let mut config = ClientConfig::new(url.clone());
                config.auth_token = auth_token.clone();
                config.client_name = "ringbrokerd-bench".into();
                config.reconnect = None;
                let client = Client::connect(config)
                    .map_err(|e| BenchError::Connect(url.clone(), e.to_string()))?;
                Ok(Arc::new(client))
            }
        }
    }

    /// Stops the embedded broker (appends synced) and removes its directory.
    pub fn close(self) -> Result<(), BenchError> {
        let Self::Embedded { broker, dir } = self else {
            return Ok(());
        };
        let stopped = match Arc::try_unwrap(broker) {
            Ok(broker) => broker
                .shutdown()
                .map(drop)
                .map_err(|e| BenchError::Broker(e.to_string())),
            Err(_) => Err(BenchError::Broker(
                "a handle to the embedded broker outlived the run".into(),
            )),
        };
        let removed = std::fs::remove_dir_all(&dir).map_err(|e| BenchError::Io(dir.clone(), e));
        stopped.and(removed)
    }
}
