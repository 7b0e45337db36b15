//! The daemon's configuration: flags, the TOML config file, the environment, and the
//! validated `Config` they resolve to.
//!
//! Owns: the flag definitions (and so `--help`), the config file schema, precedence
//! (a flag, or the environment variable standing in for it, beats the file; the file
//! beats the defaults) and validation, with one typed error per way it can be wrong.
//! Never: starts anything, logs (logging is not set up until a config exists), or reads
//! the environment outside `ProcessEnv::from_process`.
//!
//! Addresses default to loopback, so a non-loopback address is only ever one given
//! explicitly; whether it is exposed without a token is for `main` to warn about.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use ringbroker::protocol::session::HELLO_FIELD_BYTES_MAX;
use ringbroker::protocol::{FRAME_MAX_DEFAULT, FRAME_MAX_LIMIT};
use ringbroker::runtime::SHARDS_MAX;
use serde::Deserialize;

use crate::data_dir::{default_data_dir, DataDirEnv};

/// The native protocol's default address.
pub const LISTEN_DEFAULT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    7070,
));
/// The admin endpoint's default address.
pub const ADMIN_DEFAULT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    7071,
));
/// The log filter when neither `--log-level`, the file nor `RUST_LOG` gives one.
pub const LOG_FILTER_DEFAULT: &str = "info";
/// The smallest `max_frame` the network server accepts (`net::ServerConfig` checks
/// this bound with a literal; the engine exports no constant for it).
pub const MAX_FRAME_MIN: u32 = 1024;
/// The largest config file read, so a wrong path (a device, a huge log) fails fast.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

const EXIT_CODES: &str = "\
Load generator: `ringbrokerd bench <scenario> [options]` (see `ringbrokerd bench --help`).

Exit status: 0 after a clean shutdown (first SIGTERM or SIGINT); 1 if the broker or the
admin endpoint failed to start or the shutdown failed; 2 for a bad flag or config file;
128 + the signal number (130 for SIGINT, 143 for SIGTERM) when a second signal arrives
during the graceful shutdown and the daemon exits at once.";

/// The command line.
#[derive(Debug, Default, Parser)]
#[command(
    name = "ringbrokerd",
    version,
    about = "The ringbroker daemon: runs a broker on a data directory, with an admin HTTP endpoint.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// Directory for streams and durable queues, created if missing (default:
    /// $RINGBROKER_DATA_DIR, else $XDG_DATA_HOME/ringbroker, else
    /// ~/.local/share/ringbroker, else ./ringbroker-data).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of shards (threads, each with its own io_uring), 1 to 256 (default: one
    /// per available core).
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// Pin each shard's thread to its own core (default true). `false` lets the kernel
    /// move them: better when clients share a machine with few cores.
    #[arg(long, value_name = "BOOL")]
    pub pin_to_cores: Option<bool>,
    /// How long an idle shard spins before it sleeps, in microseconds, 0 to 1000000
    /// (default 0: it sleeps at once). Spinning trades CPU, and the throughput of
    /// whatever shares the cores, for latency (docs/benchmarks.md: 200 cut request-reply
    /// p50 from 91 to 11 µs and pub/sub throughput by a quarter).
    #[arg(long, value_name = "MICROS")]
    pub idle_spin_us: Option<u64>,
    /// IP:PORT the native protocol is to listen on (default 127.0.0.1:7070); a
    /// non-loopback address should come with --auth-token.
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,
    /// IP:PORT of the admin HTTP endpoint (/healthz, /metrics, /v1/...), or `off` to
    /// disable it (default 127.0.0.1:7071; port 0 picks a free port and the bound
    /// address is printed).
    #[arg(long, value_name = "IP:PORT|off")]
    pub admin: Option<AdminAddr>,
    /// Largest native-protocol frame accepted, in bytes, header included: 1024 to
    /// 268435456 (default 16777216, i.e. 16 MiB).
    #[arg(long, value_name = "BYTES")]
    pub max_frame: Option<u64>,
    /// Token every client must present when it connects; unset means no
    /// authentication.
    #[arg(
        long,
        env = "RINGBROKER_AUTH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub auth_token: Option<String>,
    /// IP:PORT to serve the NATS client protocol on (off unless given; e.g.
    /// 127.0.0.1:4222, port 0 picks a free port and the bound address is printed).
    /// NATS clients authenticate with --auth-token (CONNECT auth_token) or
    /// --nats-user/--nats-password when either is set.
    #[arg(long, value_name = "IP:PORT")]
    pub nats: Option<SocketAddr>,
    /// Largest NATS payload (headers included) accepted and announced in INFO, in
    /// bytes: 1024 to 67108864 (default 1048576).
    #[arg(long, value_name = "BYTES")]
    pub nats_max_payload: Option<u64>,
    /// User NATS clients may authenticate as (with --nats-password).
    #[arg(long, value_name = "USER", requires = "nats_password")]
    pub nats_user: Option<String>,
    /// Password of --nats-user.
    #[arg(
        long,
        env = "RINGBROKER_NATS_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub nats_password: Option<String>,
    /// TOML file with the same settings as the flags (keys data_dir, shards,
    /// pin_to_cores, idle_spin_us, listen, admin, max_frame, auth_token, nats, nats_max_payload, nats_user, nats_password,
    /// log_level); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives such
    /// as `info,ringbroker=debug` (default: $RUST_LOG, else info).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

/// Where the admin endpoint listens, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum AdminAddr {
    /// Disabled.
    Off,
    /// Listening here.
    At(SocketAddr),
}

impl FromStr for AdminAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        s.parse()
            .map(Self::At)
            .map_err(|_| "expected IP:PORT or `off`".to_owned())
    }
}

impl TryFrom<String> for AdminAddr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// The config file: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// As `--data-dir`; a relative path is taken from the config file's directory.
    pub data_dir: Option<PathBuf>,
    /// As `--shards`.
    pub shards: Option<usize>,
    /// As `--pin-to-cores`.
    pub pin_to_cores: Option<bool>,
    /// As `--idle-spin-us`.
    pub idle_spin_us: Option<u64>,
    /// As `--listen`.
    pub listen: Option<SocketAddr>,
    /// As `--admin`.
    pub admin: Option<AdminAddr>,
    /// As `--max-frame`.
    pub max_frame: Option<u64>,
    /// As `--auth-token`.
    pub auth_token: Option<String>,
    /// As `--nats`.
    pub nats: Option<SocketAddr>,
    /// As `--nats-max-payload`.
    pub nats_max_payload: Option<u64>,
    /// As `--nats-user`.
    pub nats_user: Option<String>,
    /// As `--nats-password`.
    pub nats_password: Option<String>,
    /// As `--log-level`.
    pub log_level: Option<String>,
}

/// The client token, kept out of `Debug` output and logs.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(String);

impl AuthToken {
    /// The token itself, for the server that checks it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthToken(<{} bytes, redacted>)", self.0.len())
    }
}

/// The process environment configuration depends on.
#[derive(Debug, Clone, Default)]
pub struct ProcessEnv {
    /// What the default data directory depends on.
    pub data_dir: DataDirEnv,
    /// `$RUST_LOG`.
    pub rust_log: Option<String>,
}

impl ProcessEnv {
    /// Reads this process's environment.
    pub fn from_process() -> Self {
        Self {
            data_dir: DataDirEnv::from_process(),
            rust_log: std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()),
        }
    }
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the broker stores its data.
    pub data_dir: PathBuf,
    /// Shards; `None` is one per available core.
    pub shards: Option<usize>,
    /// Whether each shard's thread is pinned to a core.
    pub pin_to_cores: bool,
    /// How long an idle shard spins before it sleeps.
    pub idle_spin: Duration,
    /// The native protocol's address (for the network listener).
    pub listen: SocketAddr,
    /// The admin endpoint's address; `None` when disabled.
    pub admin: Option<SocketAddr>,
    /// The largest native-protocol frame, in bytes.
    pub max_frame: u32,
    /// The token clients must present, if any.
    pub auth_token: Option<AuthToken>,
    /// The NATS front end, if enabled.
    pub nats: Option<NatsSettings>,
    /// The tracing filter (checked to parse).
    pub log_filter: String,
}

/// The NATS front end's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// Where it listens.
    pub listen: SocketAddr,
    /// The largest payload, headers included.
    pub max_payload: u32,
    /// User and password NATS clients may present (besides the auth token).
    pub user_password: Option<(String, AuthToken)>,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path:?}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The config file is larger than `CONFIG_FILE_BYTES_MAX`.
    #[error("config file {path:?} is larger than {max} bytes")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// `CONFIG_FILE_BYTES_MAX`.
        max: u64,
    },
    /// The config file is not valid TOML, has an unknown key, or a value of the wrong
    /// type (the message gives the line and the key).
    #[error("config file {path:?}: {source}")]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        source: toml::de::Error,
    },
    /// The data directory is an empty path.
    #[error("data_dir is empty")]
    EmptyDataDir,
    /// The shard count is out of range.
    #[error("shards must be 1 to {max}, got {value}")]
    Shards {
        /// What was given.
        value: usize,
        /// `SHARDS_MAX`.
        max: usize,
    },
    /// The idle spin is out of range.
    #[error("idle_spin_us must be 0 to {max}, got {value}")]
    IdleSpin {
        /// What was given.
        value: u64,
        /// `IDLE_SPIN_US_MAX`.
        max: u64,
    },
    /// The frame size is out of range.
    #[error("max_frame must be {min} to {max} bytes, got {value}")]
    MaxFrame {
        /// What was given.
        value: u64,
        /// `MAX_FRAME_MIN`.
        min: u32,
        /// `FRAME_MAX_LIMIT`.
        max: u32,
    },
    /// The auth token is empty.
    #[error("auth_token is empty (leave it unset for no authentication)")]
    EmptyAuthToken,
    /// The auth token is longer than a `HELLO` field may be.
    #[error("auth_token is {len} bytes, more than the {max} a HELLO carries")]
    AuthTokenTooLong {
        /// Its length.
        len: usize,
        /// `HELLO_FIELD_BYTES_MAX`.
        max: usize,
    },
    /// The NATS payload limit is out of range.
    #[error("nats_max_payload must be {min} to {max} bytes, got {value}")]
    NatsMaxPayload {
        /// What was given.
        value: u64,
        /// 1024.
        min: u32,
        /// `MAX_PAYLOAD_LIMIT`.
        max: u32,
    },
    /// Only one of the NATS user and password is set, or one is empty.
    #[error("nats_user and nats_password go together, and neither may be empty")]
    NatsUserPassword,
    /// Two of the native protocol, the admin endpoint and NATS were given the same
    /// address.
    #[error("two of listen, admin and nats are both {addr}")]
    AddressClash {
        /// The address.
        addr: SocketAddr,
    },
    /// The log filter does not parse.
    #[error("log filter {filter:?} (from {origin}): {source}")]
    LogFilter {
        /// The filter.
        filter: String,
        /// Where it came from: `--log-level`, the config file or `RUST_LOG`.
        origin: &'static str,
        /// What the parser said.
        source: tracing_subscriber::filter::ParseError,
    },
}

impl Config {
    /// Reads the config file `cli` names (if any) and this process's environment, and
    /// resolves them with `cli` into a validated `Config`.
    pub fn load(cli: Cli) -> Result<Self, ConfigError> {
        let (file, file_dir) = match &cli.config {
            Some(path) => (read_file(path)?, path.parent().map(Path::to_path_buf)),
            None => (FileConfig::default(), None),
        };
        Self::resolve(cli, file, file_dir.as_deref(), &ProcessEnv::from_process())
    }

    /// Merges flags over `file` over defaults and validates the result. `file_dir` is
    /// the config file's directory, for its relative `data_dir`.
    pub fn resolve(
        cli: Cli,
        file: FileConfig,
        file_dir: Option<&Path>,
        env: &ProcessEnv,
    ) -> Result<Self, ConfigError> {
        let file_data_dir = file.data_dir.map(|d| match file_dir {
            Some(base) if d.is_relative() => base.join(d),
            _ => d,
        });
        let data_dir = cli
            .data_dir
            .or(file_data_dir)
            .unwrap_or_else(|| default_data_dir(&env.data_dir));
        let admin = cli
            .admin
            .or(file.admin)
            .unwrap_or(AdminAddr::At(ADMIN_DEFAULT));
        let config = Self {
            data_dir,
            shards: cli.shards.or(file.shards),
            pin_to_cores: cli.pin_to_cores.or(file.pin_to_cores).unwrap_or(true),
            idle_spin: check_idle_spin(cli.idle_spin_us.or(file.idle_spin_us))?,
            listen: cli.listen.or(file.listen).unwrap_or(LISTEN_DEFAULT),
            admin: match admin {
                AdminAddr::Off => None,
                AdminAddr::At(addr) => Some(addr),
            },
            max_frame: check_max_frame(cli.max_frame.or(file.max_frame))?,
            auth_token: check_auth_token(cli.auth_token.or(file.auth_token))?,
            nats: check_nats(
                cli.nats.or(file.nats),
                cli.nats_max_payload.or(file.nats_max_payload),
                cli.nats_user.or(file.nats_user),
                cli.nats_password.or(file.nats_password),
            )?,
            log_filter: check_log_filter(cli.log_level, file.log_level, &env.rust_log)?,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::EmptyDataDir);
        }
        if let Some(value) = self.shards {
            if !(1..=SHARDS_MAX).contains(&value) {
                return Err(ConfigError::Shards {
                    value,
                    max: SHARDS_MAX,
                });
            }
        }
        // Port 0 on both is fine: each gets its own free port.
        let nats = self.nats.as_ref().map(|n| n.listen);
        let addresses = [Some(self.listen), self.admin, nats];
        for (i, a) in addresses.iter().enumerate() {
            for b in &addresses[i + 1..] {
                if let (Some(a), Some(b)) = (a, b) {
                    if a == b && a.port() != 0 {
                        return Err(ConfigError::AddressClash { addr: *a });
                    }
                }
            }
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let read_err = |source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > CONFIG_FILE_BYTES_MAX {
        return Err(ConfigError::FileTooLarge {
            path: path.to_path_buf(),
            max: CONFIG_FILE_BYTES_MAX,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    toml::from_str(&text).map_err(|source| ConfigError::ParseFile {
        path: path.to_path_buf(),
        source,
    })
}

/// The longest idle spin accepted, in microseconds (one second).
pub const IDLE_SPIN_US_MAX: u64 = 1_000_000;

fn check_idle_spin(value: Option<u64>) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(Duration::ZERO),
        Some(us) if us <= IDLE_SPIN_US_MAX => Ok(Duration::from_micros(us)),
        Some(value) => Err(ConfigError::IdleSpin {
            value,
            max: IDLE_SPIN_US_MAX,
        }),
    }
}

fn check_max_frame(value: Option<u64>) -> Result<u32, ConfigError> {
    let Some(value) = value else {
        return Ok(FRAME_MAX_DEFAULT);
    };
    u32::try_from(value)
        .ok()
        .filter(|bytes| (MAX_FRAME_MIN..=FRAME_MAX_LIMIT).contains(bytes))
        .ok_or(ConfigError::MaxFrame {
            value,
            min: MAX_FRAME_MIN,
            max: FRAME_MAX_LIMIT,
        })
}

fn check_auth_token(token: Option<String>) -> Result<Option<AuthToken>, ConfigError> {
    let Some(token) = token else {
        return Ok(None);
    };
    if token.is_empty() {
        return Err(ConfigError::EmptyAuthToken);
    }
    if token.len() > HELLO_FIELD_BYTES_MAX {
        return Err(ConfigError::AuthTokenTooLong {
            len: token.len(),
            max: HELLO_FIELD_BYTES_MAX,
        });
    }
    Ok(Some(AuthToken(token)))
}

fn check_nats(
    listen: Option<SocketAddr>,
    max_payload: Option<u64>,
    user: Option<String>,
    password: Option<String>,
) -> Result<Option<NatsSettings>, ConfigError> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let limit = ringbroker::protocol::nats::MAX_PAYLOAD_LIMIT;
    let max_payload = match max_payload {
        None => ringbroker::protocol::nats::MAX_PAYLOAD_DEFAULT,
        Some(value) => u32::try_from(value)
            .ok()
            .filter(|bytes| (1024..=limit).contains(bytes))
            .ok_or(ConfigError::NatsMaxPayload {
                value,
                min: 1024,
                max: limit,
            })?,
    };
    let user_password = match (user, password) {
        (None, None) => None,
        (Some(user), Some(password)) if !user.is_empty() && !password.is_empty() => {
            Some((user, AuthToken(password)))
        }
        _ => return Err(ConfigError::NatsUserPassword),
    };
    Ok(Some(NatsSettings {
        listen,
        max_payload,
        user_password,
    }))
}

/// `--log-level`, else the file's `log_level`, else `RUST_LOG`, else `info`; checked to
/// parse as an `EnvFilter`.
fn check_log_filter(
    flag: Option<String>,
    file: Option<String>,
    rust_log: &Option<String>,
) -> Result<String, ConfigError> {
    let (filter, origin) = match (flag, file, rust_log) {
        (Some(f), _, _) => (f, "--log-level"),
        (None, Some(f), _) => (f, "the config file"),
        (None, None, Some(f)) => (f.clone(), "RUST_LOG"),
        (None, None, None) => (LOG_FILTER_DEFAULT.to_owned(), "the default"),
    };
    match tracing_subscriber::EnvFilter::try_new(&filter) {
        Ok(_) => Ok(filter),
        Err(source) => Err(ConfigError::LogFilter {
            filter,
            origin,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_file(text: &str) -> Result<FileConfig, toml::de::Error> {
        toml::from_str(text)
    }

    fn resolve(cli: Cli, file: FileConfig) -> Result<Config, ConfigError> {
        Config::resolve(
            cli,
            file,
            Some(Path::new("/etc/rb")),
            &ProcessEnv::default(),
        )
    }

    #[test]
    fn defaults_are_loopback_and_documented_values() {
        let config = resolve(Cli::default(), FileConfig::default()).expect("defaults");
        assert_eq!(config.listen, "127.0.0.1:7070".parse().expect("addr"));
        assert_eq!(config.admin, Some("127.0.0.1:7071".parse().expect("addr")));
        assert_eq!(config.max_frame, 16 << 20);
        assert_eq!(config.shards, None);
        assert!(
            config.pin_to_cores,
            "shards are pinned unless told otherwise"
        );
        assert_eq!(config.auth_token, None);
        assert_eq!(config.log_filter, "info");
        assert_eq!(config.data_dir, PathBuf::from("./ringbroker-data"));
        assert_eq!(
            config.idle_spin,
            Duration::ZERO,
            "idle shards sleep at once"
        );
    }

    #[test]
    fn idle_spin_is_read_from_flag_or_file_and_bounded() {
        let file = parse_file("idle_spin_us = 50").expect("file");
        assert_eq!(
            resolve(Cli::default(), file).expect("config").idle_spin,
            Duration::from_micros(50)
        );
        let cli = Cli {
            idle_spin_us: Some(IDLE_SPIN_US_MAX),
            ..Cli::default()
        };
        let file = parse_file("idle_spin_us = 50").expect("file");
        assert_eq!(
            resolve(cli, file).expect("config").idle_spin,
            Duration::from_secs(1),
            "the flag wins"
        );
        let cli = Cli {
            idle_spin_us: Some(IDLE_SPIN_US_MAX + 1),
            ..Cli::default()
        };
        let err = resolve(cli, FileConfig::default()).expect_err("over the bound");
        assert!(matches!(err, ConfigError::IdleSpin { .. }), "{err}");
        assert!(err.to_string().contains("idle_spin_us"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let file = parse_file(
            "shards = 4\nlisten = \"127.0.0.1:9000\"\nmax_frame = 4096\npin_to_cores = false",
        )
        .expect("file");
        let cli = Cli {
            shards: Some(2),
            ..Cli::default()
        };
        let config = resolve(cli, file).expect("config");
        assert_eq!(config.shards, Some(2));
        assert_eq!(config.listen, "127.0.0.1:9000".parse().expect("addr"));
        assert_eq!(config.max_frame, 4096);
        assert!(
            !config.pin_to_cores,
            "the file's pin_to_cores = false holds"
        );
        let cli = Cli {
            pin_to_cores: Some(true),
            ..Cli::default()
        };
        let file = parse_file("pin_to_cores = false").expect("file");
        assert!(
            resolve(cli, file).expect("config").pin_to_cores,
            "the flag wins"
        );
    }

    #[test]
    fn unknown_file_key_is_refused_by_name() {
        let error = parse_file("shardz = 2").expect_err("unknown key");
        assert!(
            error.to_string().contains("unknown field `shardz`"),
            "{error}"
        );
    }

    #[test]
    fn relative_file_data_dir_is_taken_from_the_file_directory() {
        let file = parse_file("data_dir = \"data\"").expect("file");
        let config = resolve(Cli::default(), file).expect("config");
        assert_eq!(config.data_dir, PathBuf::from("/etc/rb/data"));
    }

    #[test]
    fn admin_off_disables_the_endpoint() {
        let file = parse_file("admin = \"off\"").expect("file");
        assert_eq!(resolve(Cli::default(), file).expect("config").admin, None);
        assert!(parse_file("admin = \"nowhere\"").is_err());
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let cli = |f: fn(&mut Cli)| {
            let mut cli = Cli::default();
            f(&mut cli);
            resolve(cli, FileConfig::default())
        };
        let shards = cli(|c| c.shards = Some(0));
        assert!(matches!(shards, Err(ConfigError::Shards { value: 0, .. })));
        let frame = cli(|c| c.max_frame = Some(u64::from(FRAME_MAX_LIMIT) + 1));
        assert!(matches!(frame, Err(ConfigError::MaxFrame { .. })));
        let frame = cli(|c| c.max_frame = Some(u64::MAX));
        assert!(matches!(frame, Err(ConfigError::MaxFrame { .. })));
        let token = cli(|c| c.auth_token = Some(String::new()));
        assert!(matches!(token, Err(ConfigError::EmptyAuthToken)));
        let filter = cli(|c| c.log_level = Some("info,[".to_owned()));
        assert!(matches!(filter, Err(ConfigError::LogFilter { .. })));
    }

    #[test]
    fn max_frame_bounds_are_the_network_servers() {
        assert_eq!(check_max_frame(Some(1024)).expect("min"), 1024);
        assert_eq!(check_max_frame(Some(256 << 20)).expect("max"), 256 << 20);
        assert!(check_max_frame(Some(1023)).is_err());
        assert!(check_max_frame(Some((256 << 20) + 1)).is_err());
    }

    #[test]
    fn same_address_for_listen_and_admin_is_refused() {
        let addr: SocketAddr = "127.0.0.1:7000".parse().expect("addr");
        let cli = Cli {
            listen: Some(addr),
            admin: Some(AdminAddr::At(addr)),
            ..Cli::default()
        };
        let result = resolve(cli, FileConfig::default());
        assert!(matches!(result, Err(ConfigError::AddressClash { .. })));
    }

    #[test]
    fn nats_is_off_unless_given_and_checks_its_settings() {
        let config = resolve(Cli::default(), FileConfig::default()).expect("defaults");
        assert_eq!(config.nats, None);
        let file = parse_file("nats = \"127.0.0.1:4222\"\nnats_max_payload = 2048").expect("file");
        let nats = resolve(Cli::default(), file)
            .expect("config")
            .nats
            .expect("nats");
        assert_eq!(nats.listen, "127.0.0.1:4222".parse().expect("addr"));
        assert_eq!(nats.max_payload, 2048);
        let cli = |f: fn(&mut Cli)| {
            let mut cli = Cli {
                nats: Some("127.0.0.1:4222".parse().expect("addr")),
                ..Cli::default()
            };
            f(&mut cli);
            resolve(cli, FileConfig::default())
        };
        let big = cli(|c| c.nats_max_payload = Some(1 << 40));
        assert!(matches!(big, Err(ConfigError::NatsMaxPayload { .. })));
        let half = cli(|c| c.nats_user = Some("u".into()));
        assert!(matches!(half, Err(ConfigError::NatsUserPassword)));
        let clash = cli(|c| c.listen = Some("127.0.0.1:4222".parse().expect("addr")));
        assert!(matches!(clash, Err(ConfigError::AddressClash { .. })));
    }

    #[test]
    fn log_filter_prefers_flag_then_file_then_rust_log() {
        let rust_log = Some("warn".to_owned());
        let pick = |flag: Option<&str>, file: Option<&str>| {
            check_log_filter(flag.map(str::to_owned), file.map(str::to_owned), &rust_log)
                .expect("filter")
        };
        assert_eq!(pick(Some("debug"), Some("error")), "debug");
        assert_eq!(pick(None, Some("error")), "error");
        assert_eq!(pick(None, None), "warn");
    }

    #[test]
    fn auth_token_never_shows_in_debug_output() {
        let token = AuthToken("s3cret".to_owned());
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}
