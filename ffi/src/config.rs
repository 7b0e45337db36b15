//! `ringbroker_config`: the key/value settings every definition is made from (a
//! broker, a connection, a stream, a consumer, an exchange, a queue, a consume), and
//! the parsing of those keys into the engine's typed configs.
//!
//! Owns: the key names (docs/c-api.md lists them), their units (`_ms`, `_bytes` in the
//! name) and defaults (the engine's). Never: lets an unknown key or a malformed value
//! through: each names itself in the `INVALID_ARGUMENT` message.
//!
//! A config is not tied to a kind: set keys, then hand it to the call that reads it.
//! Values are strings; later settings of a key replace earlier ones.

use std::collections::BTreeMap;
use std::ffi::c_char;
use std::path::PathBuf;
use std::time::Duration;

use engine::broker::BrokerConfig;
use engine::client::{ClientConfig, Reconnect};
use engine::queue::{
    ConsumeOptions, ExchangeConfig, ExchangeKind, Overflow, QueueArgs, QueueConfig,
};
use engine::storage::{Durability, Retention};
use engine::stream::{AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig};

use crate::arguments::{out_param, reference, string};
use crate::status::{guard, guard_value, Failure, StatusCode};

/// The most keys one config may hold.
pub const RINGBROKER_CONFIG_KEYS_MAX: usize = 256;
/// The longest value, in bytes.
pub const RINGBROKER_CONFIG_VALUE_BYTES_MAX: usize = 64 << 10;

/// Key/value settings (`ringbroker_config` in C). Made by `ringbroker_config_new`,
/// freed by `ringbroker_config_free`.
#[derive(Debug, Default, Clone)]
pub struct Config {
    values: BTreeMap<String, String>,
}

/// Reads a config's keys for one kind of definition, refusing the ones it does not
/// know once it is done.
struct Keys<'a> {
    kind: &'static str,
    values: &'a BTreeMap<String, String>,
    read: Vec<&'static str>,
}

impl<'a> Keys<'a> {
    fn new(kind: &'static str, config: Option<&'a Config>) -> Self {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        Self {
            kind,
            values: config.map_or(&EMPTY, |c| &c.values),
            read: Vec::new(),
        }
    }

    fn raw(&mut self, key: &'static str) -> Option<&'a str> {
        self.read.push(key);
        self.values.get(key).map(String::as_str)
    }

    fn bad(&self, key: &str, value: &str, expected: &str) -> Failure {
        Failure::invalid(format!(
            "{} config: {key} = {value:?}: expected {expected}",
            self.kind
        ))
    }

    fn string(&mut self, key: &'static str) -> Option<String> {
        self.raw(key).map(str::to_owned)
    }

    fn required(&mut self, key: &'static str) -> Result<String, Failure> {
        self.string(key)
            .ok_or_else(|| Failure::invalid(format!("{} config: {key} is required", self.kind)))
    }

    fn number<T: std::str::FromStr>(&mut self, key: &'static str) -> Result<Option<T>, Failure> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.bad(key, v, "a non-negative integer in range")),
        }
    }

    fn millis(&mut self, key: &'static str) -> Result<Option<Duration>, Failure> {
        Ok(self.number::<u64>(key)?.map(Duration::from_millis))
    }

    fn flag(&mut self, key: &'static str) -> Result<Option<bool>, Failure> {
        match self.raw(key) {
            None => Ok(None),
            Some("true" | "1" | "yes") => Ok(Some(true)),
            Some("false" | "0" | "no") => Ok(Some(false)),
            Some(v) => Err(self.bad(key, v, "true or false")),
        }
    }

    fn list(&mut self, key: &'static str) -> Option<Vec<String>> {
        self.raw(key).map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
    }

    /// Every key was one this kind reads.
    fn finish(self) -> Result<(), Failure> {
        match self
            .values
            .keys()
            .find(|k| !self.read.contains(&k.as_str()))
        {
            Some(unknown) => Err(Failure::invalid(format!(
                "{} config: unknown key {unknown:?} (known: {})",
                self.kind,
                self.read.join(", ")
            ))),
            None => Ok(()),
        }
    }
}

/// The longest `idle_spin_us` accepted (one second), as ringbrokerd's.
const IDLE_SPIN_US_MAX: u64 = 1_000_000;

/// `ringbroker_open`'s keys: `data_dir` (required), `shards`, `pin_to_cores`,
/// `idle_spin_us` (0 to 1000000).
pub fn broker(config: Option<&Config>) -> Result<BrokerConfig, Failure> {
    let mut keys = Keys::new("broker", config);
    let mut broker = BrokerConfig::new(PathBuf::from(keys.required("data_dir")?));
    if let Some(shards) = keys.number("shards")? {
        broker.runtime.shards = Some(shards);
    }
    if let Some(pin) = keys.flag("pin_to_cores")? {
        broker.runtime.pin_to_cores = pin;
    }
    if let Some(us) = keys.number::<u64>("idle_spin_us")? {
        if us > IDLE_SPIN_US_MAX {
            return Err(Failure::invalid(format!(
                "broker config: idle_spin_us must be 0 to {IDLE_SPIN_US_MAX}, got {us}"
            )));
        }
        broker.runtime.idle_spin = Duration::from_micros(us);
    }
    keys.finish()?;
    Ok(broker)
}

/// `ringbroker_connect`'s keys: `auth_token`, `client_name`, `connect_timeout_ms`,
/// `request_timeout_ms`, `reconnect` (true: retry with backoff, the default).
pub fn client(url: &str, config: Option<&Config>) -> Result<ClientConfig, Failure> {
    let mut keys = Keys::new("connection", config);
    let mut client = ClientConfig::new(url);
    client.auth_token = keys.string("auth_token");
    if let Some(name) = keys.string("client_name") {
        client.client_name = name;
    }
    if let Some(t) = keys.millis("connect_timeout_ms")? {
        client.connect_timeout = t;
    }
    if let Some(t) = keys.millis("request_timeout_ms")? {
        client.request_timeout = t;
    }
    match keys.flag("reconnect")? {
        Some(false) => client.reconnect = None,
        Some(true) => client.reconnect = Some(Reconnect::default()),
        None => {}
    }
    keys.finish()?;
    Ok(client)
}

/// A stream's keys: `name`, `subjects` (comma-separated patterns), `partitions`,
/// `durability` (`always`, `none`, or `batch:<max_delay_ms>:<max_bytes>`),
/// `max_records`, `max_bytes`, `max_age_ms`, `max_record_bytes`, `dedup_window_ms`,
/// `dead_letter`, `segment_bytes_max`.
pub fn stream(config: Option<&Config>) -> Result<StreamConfig, Failure> {
    let mut keys = Keys::new("stream", config);
    let name = keys.required("name")?;
    let mut stream = StreamConfig::new(&name, &[]);
    stream.subjects = keys.list("subjects").unwrap_or_default();
    if let Some(n) = keys.number("partitions")? {
        stream.partitions = n;
    }
    if let Some(text) = keys.raw("durability") {
        stream.durability = durability(text).ok_or_else(|| {
            keys.bad(
                "durability",
                text,
                "always, none or batch:<max_delay_ms>:<max_bytes>",
            )
        })?;
    }
    stream.retention = Retention {
        max_records: keys.number("max_records")?,
        max_bytes: keys.number("max_bytes")?,
        max_age: keys.millis("max_age_ms")?,
    };
    if let Some(n) = keys.number("max_record_bytes")? {
        stream.max_record_bytes = n;
    }
    if let Some(t) = keys.millis("dedup_window_ms")? {
        stream.dedup_window = t;
    }
    stream.dead_letter = keys.string("dead_letter");
    if let Some(n) = keys.number("segment_bytes_max")? {
        stream.segment_bytes_max = n;
    }
    keys.finish()?;
    Ok(stream)
}

fn durability(text: &str) -> Option<Durability> {
    match text {
        "always" => Some(Durability::Always),
        "none" => Some(Durability::None),
        _ => {
            let mut parts = text.strip_prefix("batch:")?.split(':');
            let delay = parts.next()?.parse().ok()?;
            let bytes = parts.next()?.parse().ok()?;
            parts.next().is_none().then_some(Durability::Batch {
                max_delay: Duration::from_millis(delay),
                max_bytes: bytes,
            })
        }
    }
}

/// A stream consumer's keys: `durable` (a name; absent for an ephemeral consumer),
/// `deliver` (`all`, `new`, `offset:<n>`, `time:<unix_ms>`), `filter`, `ack`
/// (`explicit` or `none`), `ack_wait_ms`, `max_deliver`, `max_ack_pending`,
/// `heartbeat_timeout_ms`.
pub fn consumer(config: Option<&Config>) -> Result<ConsumerConfig, Failure> {
    let mut keys = Keys::new("consumer", config);
    let mut consumer = ConsumerConfig {
        durable: keys.string("durable"),
        filter: keys.string("filter"),
        max_deliver: keys.number("max_deliver")?,
        ..ConsumerConfig::default()
    };
    if let Some(text) = keys.raw("deliver") {
        consumer.deliver = deliver(text)
            .ok_or_else(|| keys.bad("deliver", text, "all, new, offset:<n> or time:<unix_ms>"))?;
    }
    match keys.raw("ack") {
        None => {}
        Some("explicit") => consumer.ack = AckPolicy::Explicit,
        Some("none") => consumer.ack = AckPolicy::None,
        Some(v) => return Err(keys.bad("ack", v, "explicit or none")),
    }
    if let Some(t) = keys.millis("ack_wait_ms")? {
        consumer.ack_wait = t;
    }
    if let Some(n) = keys.number("max_ack_pending")? {
        consumer.max_ack_pending = n;
    }
    if let Some(t) = keys.millis("heartbeat_timeout_ms")? {
        consumer.heartbeat_timeout = t;
    }
    keys.finish()?;
    Ok(consumer)
}

fn deliver(text: &str) -> Option<DeliverPolicy> {
    match text {
        "all" => Some(DeliverPolicy::All),
        "new" => Some(DeliverPolicy::New),
        _ => {
            if let Some(n) = text.strip_prefix("offset:") {
                return n.parse().ok().map(DeliverPolicy::Offset);
            }
            text.strip_prefix("time:")?
                .parse()
                .ok()
                .map(DeliverPolicy::Time)
        }
    }
}

/// An exchange's keys: `name`, `kind` (`direct`, `fanout`, `topic`, `headers`),
/// `durable` (default true).
pub fn exchange(config: Option<&Config>) -> Result<ExchangeConfig, Failure> {
    let mut keys = Keys::new("exchange", config);
    let name = keys.required("name")?;
    let kind = match keys.raw("kind") {
        Some("direct") => ExchangeKind::Direct,
        Some("fanout") => ExchangeKind::Fanout,
        Some("topic") => ExchangeKind::Topic,
        Some("headers") => ExchangeKind::Headers,
        Some(v) => return Err(keys.bad("kind", v, "direct, fanout, topic or headers")),
        None => return Err(Failure::invalid("exchange config: kind is required")),
    };
    let mut exchange = ExchangeConfig::new(&name, kind);
    if let Some(durable) = keys.flag("durable")? {
        exchange.durable = durable;
    }
    keys.finish()?;
    Ok(exchange)
}

/// A queue's keys: `name`, `durable` (default true), `exclusive`, `auto_delete`,
/// `message_ttl_ms`, `expires_ms`, `max_length`, `max_length_bytes`, `overflow`
/// (`drop-head` or `reject-publish`), `dead_letter_exchange`,
/// `dead_letter_routing_key`, `max_priority`.
pub fn queue(config: Option<&Config>) -> Result<QueueConfig, Failure> {
    let mut keys = Keys::new("queue", config);
    let mut queue = QueueConfig::new(&keys.required("name")?);
    if let Some(v) = keys.flag("durable")? {
        queue.durable = v;
    }
    if let Some(v) = keys.flag("exclusive")? {
        queue.exclusive = v;
    }
    if let Some(v) = keys.flag("auto_delete")? {
        queue.auto_delete = v;
    }
    let overflow = match keys.raw("overflow") {
        None | Some("drop-head") => Overflow::DropHead,
        Some("reject-publish") => Overflow::RejectPublish,
        Some(v) => return Err(keys.bad("overflow", v, "drop-head or reject-publish")),
    };
    queue.args = QueueArgs {
        message_ttl: keys.millis("message_ttl_ms")?,
        expires: keys.millis("expires_ms")?,
        max_length: keys.number("max_length")?,
        max_length_bytes: keys.number("max_length_bytes")?,
        overflow,
        dead_letter_exchange: keys.string("dead_letter_exchange"),
        dead_letter_routing_key: keys.string("dead_letter_routing_key"),
        max_priority: keys.number("max_priority")?,
    };
    keys.finish()?;
    Ok(queue)
}

/// A queue consume's keys: `prefetch` (default 100), `no_ack` (default false).
pub fn consume(config: Option<&Config>) -> Result<ConsumeOptions, Failure> {
    let mut keys = Keys::new("consume", config);
    let mut options = ConsumeOptions::default();
    if let Some(n) = keys.number("prefetch")? {
        options.prefetch = n;
    }
    if let Some(v) = keys.flag("no_ack")? {
        options.no_ack = v;
    }
    keys.finish()?;
    Ok(options)
}

/// Makes an empty config in `*out`. Free it with `ringbroker_config_free`.
/// Returns `RINGBROKER_INVALID_ARGUMENT` if `out` is NULL. Any thread may call this.
///
/// # Safety
/// `out` must be NULL or point to writable memory for a pointer.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_config_new(out: *mut *mut Config) -> StatusCode {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let out = unsafe { crate::arguments::out_param(out, "out") }?;
        *out = Box::into_raw(Box::default());
        Ok(())
    })
}

/// Sets `key` to `value` (both NUL-terminated UTF-8, copied; the config keeps no
/// pointer). Keys are checked when the config is used, not here. Returns
/// `RINGBROKER_INVALID_ARGUMENT` for a NULL or non-UTF-8 argument, a value over 64 KiB
/// or more than 256 keys. One thread at a time per config.
///
/// # Safety
/// `config` must be NULL or a live config; `key` and `value` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_config_set(
    config: *mut Config,
    key: *const c_char,
    value: *const c_char,
) -> StatusCode {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let config = unsafe { out_param(config, "config") }?;
        // SAFETY: forwarded from the caller.
        let key = unsafe { string(key, "key") }?;
        // SAFETY: forwarded from the caller.
        let value = unsafe { string(value, "value") }?;
        if value.len() > RINGBROKER_CONFIG_VALUE_BYTES_MAX {
            return Err(Failure::invalid(format!(
                "value of {key} is {} bytes; at most {RINGBROKER_CONFIG_VALUE_BYTES_MAX}",
                value.len()
            )));
        }
        if config.values.len() >= RINGBROKER_CONFIG_KEYS_MAX && !config.values.contains_key(key) {
            return Err(Failure::invalid(format!(
                "a config holds at most {RINGBROKER_CONFIG_KEYS_MAX} keys"
            )));
        }
        config.values.insert(key.to_owned(), value.to_owned());
        Ok(())
    })
}

/// Frees a config. NULL is a no-op; freeing twice is undefined. Configs are copied
/// where used, so freeing one never affects what was made from it.
///
/// # Safety
/// `config` must be NULL or a config from `ringbroker_config_new` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_config_free(config: *mut Config) {
    guard_value((), || {
        if !config.is_null() {
            // SAFETY: made by Box::into_raw in ringbroker_config_new, freed once.
            drop(unsafe { Box::from_raw(config) });
        }
    });
}

/// An optional config argument: NULL reads as no keys set.
///
/// # Safety
/// `config` must be NULL or a live config.
pub unsafe fn optional<'a>(config: *const Config) -> Option<&'a Config> {
    // SAFETY: forwarded from the caller.
    unsafe { config.as_ref() }
}

/// A required config argument.
///
/// # Safety
/// `config` must be NULL or a live config.
pub unsafe fn required<'a>(config: *const Config) -> Result<&'a Config, Failure> {
    // SAFETY: forwarded from the caller.
    unsafe { reference(config, "config") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        Config {
            values: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn idle_spin_us_is_read_and_bounded() {
        let parsed = broker(Some(&config(&[("data_dir", "/tmp/x")]))).expect("defaults");
        assert_eq!(
            parsed.runtime.idle_spin,
            Duration::ZERO,
            "idle shards sleep at once"
        );
        let parsed = broker(Some(&config(&[
            ("data_dir", "/tmp/x"),
            ("idle_spin_us", "250"),
        ])))
        .expect("set");
        assert_eq!(parsed.runtime.idle_spin, Duration::from_micros(250));
        for bad in ["1000001", "-1", "soon"] {
            let err = broker(Some(&config(&[
                ("data_dir", "/tmp/x"),
                ("idle_spin_us", bad),
            ])))
            .expect_err(bad);
            assert!(
                err.message.contains("idle_spin_us"),
                "{bad}: {}",
                err.message
            );
        }
    }
}
