//! `ringbrokerd`: the ringbroker daemon.
//!
//! Owns: the order the daemon starts and stops in. Block SIGTERM and SIGINT (before any
//! other thread exists), parse the flags, load the config, set up logging, open the
//! broker, start the native-protocol server and the admin endpoint, print where data
//! lives and where both listen on stdout, wait for a signal, then stop the server
//! (no new connections, in-flight requests answered), the admin endpoint and the
//! broker (appends flushed and synced). Never: keeps state of its own.
//!
//! `ringbrokerd bench ...` is the load generator instead (module `bench`).
//!
//! Exit status: 0 after a clean shutdown, 1 when something failed at run time, 2 for a
//! bad flag or config, 128 + the signal number on a second signal (see `signals`).

mod admin;
mod api;
mod bench;
mod config;
mod data_dir;
mod metrics;
mod signals;
mod snapshot;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;

use clap::Parser;
use ringbroker::broker::{Broker, BrokerConfig, BrokerError};
use ringbroker::net::{NatsConfig, NetError, Protocol, Server, ServerConfig};

use crate::admin::{AdminError, AdminServer};
use crate::config::{Cli, Config};
use crate::signals::{BlockedSignals, Signal};
use crate::snapshot::Sources;

/// Exit status when the daemon fails at run time.
const EXIT_FAILURE: u8 = 1;
/// Exit status for a bad flag or config (as clap uses for bad flags).
const EXIT_USAGE: u8 = 2;

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
enum RunError {
    /// The broker could not open, or its shutdown failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The admin endpoint could not start or stop.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The native-protocol server could not start.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The signal thread could not be started.
    #[error("cannot start the signal thread: {0}")]
    Signals(#[source] std::io::Error),
}

fn main() -> ExitCode {
    // The load generator is its own program: no daemon flags, no blocked signals (an
    // interrupted run simply ends).
    if std::env::args_os().nth(1).is_some_and(|a| a == "bench") {
        return bench::main(std::env::args_os().skip(1));
    }
    // First, while this is the only thread: every thread spawned later inherits it.
    let signals = match BlockedSignals::block() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("ringbrokerd: cannot block SIGTERM and SIGINT: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let config = match Config::load(Cli::parse()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("ringbrokerd: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(error) = init_logging(&config.log_filter) {
        eprintln!("ringbrokerd: cannot set up logging: {error}");
        return ExitCode::from(EXIT_FAILURE);
    }
    match run(&config, signals) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ringbrokerd: {error}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Logs go to stderr (stdout carries the startup lines), in colour on a terminal.
fn init_logging(filter: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter)?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
}

/// Runs the broker until the first shutdown signal, then stops it.
fn run(config: &Config, signals: BlockedSignals) -> Result<(), RunError> {
    let (signalled, shutdown) = mpsc::channel();
    signals.spawn_waiter(signalled).map_err(RunError::Signals)?;
    log_startup(config);
    let mut broker_config = BrokerConfig::new(&config.data_dir);
    broker_config.runtime.shards = config.shards;
    broker_config.runtime.pin_to_cores = config.pin_to_cores;
    broker_config.runtime.idle_spin = config.idle_spin;
    let broker = Broker::open(broker_config)?;
    // The broker shuts down whether or not serving went well.
    let served = serve(&broker, config, &shutdown);
    let report = broker.shutdown();
    served?;
    let report = report?;
    match report.forced {
        false => tracing::info!(?report, "stopped"),
        true => tracing::warn!(?report, "stopped, but the drain deadline passed first"),
    }
    Ok(())
}

/// How long a stopping daemon waits for connections to finish their requests.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts the native-protocol server and the admin endpoint, announces, waits for a
/// signal, then stops accepting, lets in-flight requests finish and stops both.
fn serve(
    broker: &Broker,
    config: &Config,
    shutdown: &mpsc::Receiver<Signal>,
) -> Result<(), RunError> {
    let server = Server::start(
        broker,
        ServerConfig {
            listen: config.listen,
            max_frame: config.max_frame,
            auth_token: config.auth_token.as_ref().map(|t| t.expose().to_owned()),
            outbound_bytes_max: OUTBOUND_BYTES_MAX,
            ..ServerConfig::default()
        },
    )?;
    let nats = match &config.nats {
        Some(nats) => Some(start_nats(broker, config, nats)?),
        None => None,
    };
    let mut sources = Sources::of(broker).with_net(server.stats_reader());
    if let Some(nats) = &nats {
        sources = sources.with_net(nats.stats_reader());
    }
    let admin = match config.admin {
        Some(addr) => Some(AdminServer::start(addr, sources)?),
        None => None,
    };
    announce(
        broker.data_dir(),
        server.local_addr(),
        nats.as_ref().map(Server::local_addr),
        admin.as_ref().map(AdminServer::local_addr),
    );
    if shutdown.recv().is_err() {
        tracing::error!("the signal thread ended; shutting down");
    }
    if let Some(nats) = nats {
        let report = nats.stop(STOP_GRACE);
        tracing::info!(?report, "NATS server stopped");
    }
    let report = server.stop(STOP_GRACE);
    tracing::info!(?report, "native protocol server stopped");
    if let Some(admin) = admin {
        admin.stop()?;
    }
    Ok(())
}

/// Unsent output a connection may hold, native or NATS (nats-server's default
/// `max_pending`). The engine's embedded default, 4 MiB, left a remote subscriber a
/// little slower than its publisher losing a third of its messages
/// (`ringbrokerd bench pubsub --url`, 256 B: 31% dropped at 4 MiB, none at 64 MiB):
/// the publisher's stall needs room for what is in transit between shards.
const OUTBOUND_BYTES_MAX: usize = 64 << 20;

/// Starts the NATS front end: a second server on the same broker, same token.
fn start_nats(
    broker: &Broker,
    config: &Config,
    nats: &crate::config::NatsSettings,
) -> Result<Server, RunError> {
    let protocol = Protocol::Nats(NatsConfig {
        max_payload: nats.max_payload,
        user_password: nats
            .user_password
            .as_ref()
            .map(|(user, password)| (user.clone(), password.expose().to_owned())),
        ..NatsConfig::default()
    });
    let server = Server::start(
        broker,
        ServerConfig {
            listen: nats.listen,
            auth_token: config.auth_token.as_ref().map(|t| t.expose().to_owned()),
            // nats-server's default max_pending: a subscriber may fall this far behind
            // before its messages are dropped.
            outbound_bytes_max: OUTBOUND_BYTES_MAX,
            protocol,
            ..ServerConfig::default()
        },
    )?;
    Ok(server)
}

/// The stdout lines: where data is stored, where clients connect, where the admin
/// endpoint listens.
fn announce(
    data_dir: &Path,
    listen: SocketAddr,
    nats: Option<SocketAddr>,
    admin: Option<SocketAddr>,
) {
    let data_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let admin = match admin {
        Some(addr) => format!("http://{addr}"),
        None => "off".to_owned(),
    };
    tracing::info!(data_dir = %data_dir.display(), %listen, %admin, "ready");
    let mut out = std::io::stdout().lock();
    let printed = writeln!(out, "data directory: {}", data_dir.display())
        .and_then(|()| writeln!(out, "listening on: ringbroker://{listen}"))
        .and_then(|()| match nats {
            Some(nats) => writeln!(out, "listening on: nats://{nats}"),
            None => Ok(()),
        })
        .and_then(|()| writeln!(out, "admin endpoint: {admin}"))
        .and_then(|()| out.flush());
    if let Err(error) = printed {
        tracing::warn!(%error, "cannot print the startup lines to stdout");
    }
}

fn log_startup(config: &Config) {
    tracing::info!(
        data_dir = %config.data_dir.display(),
        shards = ?config.shards,
        pin_to_cores = config.pin_to_cores,
        idle_spin_us = config.idle_spin.as_micros() as u64,
        listen = %config.listen,
        max_frame = config.max_frame,
        auth = config.auth_token.is_some(),
        "starting ringbrokerd {}",
        env!("CARGO_PKG_VERSION")
    );
    if !config.listen.ip().is_loopback() && config.auth_token.is_none() {
        tracing::warn!(
            listen = %config.listen,
            "listen address is not loopback and no auth token is set: anyone who can reach it could use the broker"
        );
    }
    if let Some(nats) = config
        .nats
        .as_ref()
        .filter(|n| !n.listen.ip().is_loopback())
    {
        if config.auth_token.is_none() && nats.user_password.is_none() {
            tracing::warn!(
                nats = %nats.listen,
                "NATS address is not loopback and no credentials are set: anyone who can reach it could use the broker"
            );
        }
    }
    if let Some(admin) = config.admin.filter(|a| !a.ip().is_loopback()) {
        tracing::warn!(%admin, "admin endpoint is not on loopback; it has no authentication");
    }
}
