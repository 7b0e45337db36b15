//! The thread-per-core shard runtime.
//!
//! Owns: starting shards (one thread each, pinned to a core, each with its own
//! io_uring), the N×(N-1) matrix of SPSC rings between them, each shard's external
//! submission queue, and shutdown.
//!
//! Never: shares mutable state between shards, takes a lock on the data path, or runs an
//! async runtime. Every piece of engine state belongs to one shard and is touched only
//! by tasks running there (`ShardCtx::with_local`).
//!
//! ```no_run
//! use ringbroker::runtime::{Runtime, RuntimeConfig};
//! let rt = Runtime::start(RuntimeConfig::default())?;
//! let answer = rt.handle().call(0, |ctx| ctx.shard_id() + 41)?;
//! assert_eq!(answer, 41);
//! rt.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod context;
mod error;
mod external;
mod placement;
mod shard;
mod shared;
mod shutdown;
mod stats;
mod timer;
mod uring;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use crossbeam_queue::ArrayQueue;

pub use config::{RuntimeConfig, SHARDS_MAX};
pub(crate) use context::OpId;
pub use context::ShardCtx;
pub(crate) use error::model_error_from_runtime;
pub use error::{CallError, OpError, RuntimeError, SendError, SubmitError, TaskError, TimerError};
pub use external::{Completion, RuntimeHandle, Submitter, Ticket};
pub use placement::{shard_for, shard_for_key};
pub use stats::{fsync_latency_bucket, ShardStats, FSYNC_LATENCY_BUCKETS};
pub use timer::unix_ms;

use crate::doorbell::{Doorbell, EventFd};
use crate::ring::{channel, Consumer, Producer};
use shard::{Shard, ShardExit};
use shared::{RuntimeShared, ShardShared, Task};

static NEXT_RUNTIME_ID: AtomicU64 = AtomicU64::new(1);

/// What shutdown found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// The drain deadline passed before all accepted work ran.
    pub forced: bool,
    /// Accepted tasks that never ran (zero unless `forced`).
    pub tasks_dropped: usize,
    /// Timers pending at stop (timers never count as accepted work).
    pub timers_dropped: usize,
    /// I/O operations the kernel never completed; their buffers were leaked on purpose.
    pub ops_leaked: usize,
    /// Tasks that panicked over the runtime's life.
    pub tasks_panicked: u64,
}

/// A running set of shards. Dropping it shuts it down (gracefully).
pub struct Runtime {
    handle: RuntimeHandle,
    threads: Vec<JoinHandle<ShardExit>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("shards", &self.threads.len())
            .finish()
    }
}

type RingMatrix = (Vec<Vec<Option<Producer<Task>>>>, Vec<Vec<Consumer<Task>>>);

impl Runtime {
    /// Starts the shards and returns once every one of them is running (or the first
    /// error, after stopping those that had started).
    pub fn start(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        config.validate()?;
        let n = config.shard_count();
        let shared = Arc::new(build_shared(&config, n)?);
        let (producers, consumers) = build_rings(&config, n)?;
        let cores = if config.pin_to_cores {
            core_affinity::get_core_ids().filter(|ids| !ids.is_empty())
        } else {
            None
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut runtime = Runtime {
            handle: RuntimeHandle::from_shared(shared.clone()),
            threads: Vec::with_capacity(n),
        };
        for (id, (outbound, inbound)) in producers.into_iter().zip(consumers).enumerate() {
            let core = cores.as_ref().map(|ids| ids[id % ids.len()]);
            let start = ShardStart {
                id,
                core,
                outbound,
                inbound,
                shared: shared.clone(),
                config: config.clone(),
                ready: ready_tx.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{id}", config.thread_name))
                .spawn(move || start.run());
            match spawned {
                Ok(handle) => runtime.threads.push(handle),
                Err(source) => {
                    runtime.abort_start();
                    return Err(RuntimeError::ShardStart {
                        shard: id,
                        what: "spawn thread",
                        source,
                    });
                }
            }
        }
        drop(ready_tx);
        runtime.await_ready(&ready_rx)?;
        Ok(runtime)
    }

    fn await_ready(
        &mut self,
        ready: &mpsc::Receiver<Result<(), RuntimeError>>,
    ) -> Result<(), RuntimeError> {
        for _ in 0..self.threads.len() {
            let outcome = ready.recv().unwrap_or_else(|_| {
                Err(RuntimeError::ShardPanicked {
                    shard: usize::MAX,
                    message: "shard thread exited during start".to_owned(),
                })
            });
            if let Err(err) = outcome {
                self.abort_start();
                return Err(err);
            }
        }
        Ok(())
    }

    /// Stops shards that started, without draining (nothing was accepted yet).
    fn abort_start(&mut self) {
        let shared = &self.handle.shared_ref();
        shared.closing.store(true, Ordering::SeqCst);
        shared.stop.store(true, Ordering::SeqCst);
        for shard in &shared.shards {
            shard.doorbell.ring();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// A handle for submitting work and requesting shutdown from any thread.
    pub fn handle(&self) -> RuntimeHandle {
        self.handle.clone()
    }

    /// How many shards are running.
    pub fn shard_count(&self) -> usize {
        self.handle.shard_count()
    }

    /// Requests a graceful shutdown and waits for every shard to drain and stop.
    pub fn shutdown(mut self) -> Result<ShutdownReport, RuntimeError> {
        self.stop_and_join(true)
    }

    /// Waits for a shutdown requested elsewhere (`request_shutdown` from a task, a
    /// signal handler's thread, ...), then joins the shards.
    pub fn wait(mut self) -> Result<ShutdownReport, RuntimeError> {
        self.stop_and_join(false)
    }

    fn stop_and_join(&mut self, request: bool) -> Result<ShutdownReport, RuntimeError> {
        if request {
            self.handle.request_shutdown();
        }
        if let Some((rt, shard)) = shard::current_shard() {
            if rt == self.handle.shared_ref().id {
                return Err(RuntimeError::ShutdownFromShard { shard });
            }
        }
        let mut report = ShutdownReport::default();
        let mut first_err = None;
        let mut leftovers = Vec::new();
        for (shard, thread) in self.threads.drain(..).enumerate() {
            match thread.join() {
                Ok(exit) => {
                    report.tasks_dropped += exit.tasks_dropped;
                    report.timers_dropped += exit.timers_dropped;
                    report.ops_leaked += exit.ops_leaked;
                    leftovers.extend(exit.inbound);
                }
                Err(payload) => {
                    let message = error::panic_message(&*payload);
                    first_err.get_or_insert(RuntimeError::ShardPanicked { shard, message });
                }
            }
        }
        // Every shard has left its loop: what is still in a ring or external queue was
        // pushed after its consumer stopped (forced stop only). Count and drop it.
        for mut ring in leftovers {
            report.tasks_dropped += ring.pop_batch(usize::MAX, drop);
        }
        for shard in &self.handle.shared_ref().shards {
            report.tasks_dropped += shard::drain_external(shard);
        }
        report.forced = self.handle.shared_ref().forced.load(Ordering::SeqCst);
        report.tasks_panicked = self.handle.stats().iter().map(|s| s.tasks_panicked).sum();
        match first_err {
            Some(err) => Err(err),
            None => Ok(report),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        if let Err(err) = self.stop_and_join(true) {
            tracing::error!(%err, "runtime shutdown on drop failed");
        }
    }
}

impl RuntimeHandle {
    fn shared_ref(&self) -> &RuntimeShared {
        self.shared_arc()
    }
}

fn build_shared(config: &RuntimeConfig, n: usize) -> Result<RuntimeShared, RuntimeError> {
    let mut shards = Vec::with_capacity(n);
    for shard in 0..n {
        let eventfd = EventFd::new().map_err(|source| RuntimeError::ShardStart {
            shard,
            what: "eventfd",
            source,
        })?;
        shards.push(ShardShared {
            external: ArrayQueue::new(config.external_queue_capacity),
            external_reserved: AtomicUsize::new(0),
            doorbell: Doorbell::new(eventfd),
            drain: Default::default(),
            stats: Default::default(),
        });
    }
    Ok(RuntimeShared {
        shards,
        closing: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        forced: AtomicBool::new(false),
        id: NEXT_RUNTIME_ID.fetch_add(1, Ordering::Relaxed),
        singletons: Default::default(),
    })
}

/// One ring per ordered pair of distinct shards: `producers[from][to]`, and
/// `consumers[to]` holding one consumer per other shard.
fn build_rings(config: &RuntimeConfig, n: usize) -> Result<RingMatrix, RuntimeError> {
    let mut producers: Vec<Vec<Option<Producer<Task>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut consumers: Vec<Vec<Consumer<Task>>> = (0..n).map(|_| Vec::with_capacity(n)).collect();
    for (from, row) in producers.iter_mut().enumerate() {
        for (to, slot) in row.iter_mut().enumerate() {
            if from == to {
                continue;
            }
            let (p, c) =
                channel(config.ring_capacity).map_err(|_| RuntimeError::InvalidConfig {
                    field: "ring_capacity",
                    value: config.ring_capacity as u64,
                    min: 2,
                    max: crate::ring::RING_CAPACITY_MAX as u64,
                })?;
            *slot = Some(p);
            consumers[to].push(c);
        }
    }
    Ok((producers, consumers))
}

/// Everything a shard thread needs to set itself up.
struct ShardStart {
    id: usize,
    core: Option<core_affinity::CoreId>,
    outbound: Vec<Option<Producer<Task>>>,
    inbound: Vec<Consumer<Task>>,
    shared: Arc<RuntimeShared>,
    config: RuntimeConfig,
    ready: mpsc::Sender<Result<(), RuntimeError>>,
}

impl ShardStart {
    fn run(self) -> ShardExit {
        let ShardStart {
            id,
            core,
            outbound,
            inbound,
            shared,
            config,
            ready,
        } = self;
        if let Some(core) = core {
            if !core_affinity::set_for_current(core) {
                let source = std::io::Error::last_os_error();
                let _ = ready.send(Err(RuntimeError::ShardStart {
                    shard: id,
                    what: "pin to core",
                    source,
                }));
                return ShardExit::default();
            }
        }
        let uring = match uring::Uring::new(id, config.uring_entries, config.ops_inflight_max()) {
            Ok(uring) => uring,
            Err(err) => {
                let _ = ready.send(Err(err));
                return ShardExit::default();
            }
        };
        let ctx = ShardCtx::new(id, shared, outbound, uring, &config);
        let shard = Shard::new(ctx, inbound, config.idle_spin, config.shutdown_drain_max);
        let _ = ready.send(Ok(()));
        drop(ready);
        shard.run()
    }
}
