//! Runtime configuration: every bound the shards size themselves by at start.
//!
//! Owns: defaults and validation. Never: reads files or the environment (the daemon
//! does that and fills this struct).

use std::time::Duration;

use super::error::RuntimeError;

/// The most shards one runtime runs. Bounds the N×(N-1) ring matrix.
pub const SHARDS_MAX: usize = 256;

/// How a runtime is shaped. Build with `RuntimeConfig::default()` and override fields.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Number of shards; `None` means one per available core.
    pub shards: Option<usize>,
    /// Pin shard `i` to core `i mod cores` with `core_affinity`. Default `true`.
    pub pin_to_cores: bool,
    /// Capacity of each shard-to-shard SPSC ring, in tasks (rounded up to a power of
    /// two). Default 4096.
    pub ring_capacity: usize,
    /// Capacity of each shard's queue for submissions from non-shard threads. Default 4096.
    pub external_queue_capacity: usize,
    /// The most tasks a shard takes from one source (a ring, the external queue, its
    /// local queue, timers, completions) per loop turn, so one busy source cannot starve
    /// the others. Default 256.
    pub batch_max: usize,
    /// The most tasks a shard holds for one target whose ring is full, before `send`
    /// refuses with `SendError::Full`. Default 65536.
    pub outbound_backlog_max: usize,
    /// Submission-queue entries of each shard's io_uring (the completion queue is twice
    /// this). Default 256.
    pub uring_entries: u32,
    /// The most I/O operations one shard keeps in flight, standing ones included (a
    /// network server holds a multishot recv per connection). Completions beyond the
    /// completion queue's size are held by the kernel (`IORING_FEAT_NODROP`, required)
    /// until the shard reaps room. Default 65536.
    pub io_ops_max: usize,
    /// The most timers one shard holds. Default 65536.
    pub timers_max: usize,
    /// How long an idle shard spins (re-checking its rings) before it parks in
    /// `io_uring_enter`. Zero parks at once: the right default on a shared machine.
    pub idle_spin: Duration,
    /// How long shutdown waits for in-flight work to drain before it stops the shards
    /// anyway and reports what it dropped. Default 30 s.
    pub shutdown_drain_max: Duration,
    /// Thread name prefix; shard `i` is named `{thread_name}-{i}`.
    pub thread_name: String,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            shards: None,
            pin_to_cores: true,
            ring_capacity: 4096,
            external_queue_capacity: 4096,
            batch_max: 256,
            outbound_backlog_max: 65536,
            uring_entries: 256,
            io_ops_max: 65536,
            timers_max: 65536,
            idle_spin: Duration::ZERO,
            shutdown_drain_max: Duration::from_secs(30),
            thread_name: "ringbroker-shard".to_owned(),
        }
    }
}

impl RuntimeConfig {
    /// The shard count this config resolves to on this machine.
    pub fn shard_count(&self) -> usize {
        self.shards.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }

    /// The most I/O operations a shard keeps in flight (`io_ops_max`).
    pub fn ops_inflight_max(&self) -> usize {
        self.io_ops_max
    }

    /// Checks every bound; the error names the field and the accepted range.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let check = |field: &'static str, value: usize, min: usize, max: usize| {
            if value < min || value > max {
                return Err(RuntimeError::InvalidConfig {
                    field,
                    value: value as u64,
                    min: min as u64,
                    max: max as u64,
                });
            }
            Ok(())
        };
        check("shards", self.shard_count(), 1, SHARDS_MAX)?;
        check(
            "ring_capacity",
            self.ring_capacity,
            2,
            crate::ring::RING_CAPACITY_MAX,
        )?;
        check(
            "external_queue_capacity",
            self.external_queue_capacity,
            1,
            1 << 24,
        )?;
        check("batch_max", self.batch_max, 1, 1 << 16)?;
        check(
            "outbound_backlog_max",
            self.outbound_backlog_max,
            0,
            1 << 24,
        )?;
        check("uring_entries", self.uring_entries as usize, 8, 32768)?;
        check("io_ops_max", self.io_ops_max, 16, 1 << 22)?;
        check("timers_max", self.timers_max, 1, 1 << 24)?;
        Ok(())
    }
}
