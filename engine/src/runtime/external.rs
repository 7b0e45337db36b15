//! Work from threads that are not shards: the application's, a binding's event loop.
//!
//! Owns: `RuntimeHandle` (submit a task to a shard, blocking calls, shutdown requests,
//! statistics) and `Submitter` (many asynchronous submissions whose completions arrive
//! in a bounded queue, announced on an eventfd an event loop can watch).
//!
//! Never: blocks a shard. Submissions go through each shard's bounded MPSC queue
//! (`crossbeam_queue::ArrayQueue`); a full queue is an error to the caller, not a wait.
//! A `Submitter` never has more tasks in flight than its completion queue holds, so a
//! shard pushing a completion never finds it full.

use std::any::Any;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use super::context::ShardCtx;
use super::error::{panic_message, CallError, SubmitError, TaskError};
use super::shard::current_shard;
use super::shared::{RuntimeShared, Task};
use super::stats::ShardStats;
use crate::doorbell::{Doorbell, EventFd};

/// A cloneable, thread-safe handle to a running runtime.
#[derive(Clone)]
pub struct RuntimeHandle {
    shared: Arc<RuntimeShared>,
}

impl std::fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeHandle")
            .field("shards", &self.shard_count())
            .finish()
    }
}

impl RuntimeHandle {
    pub(crate) fn from_shared(shared: Arc<RuntimeShared>) -> Self {
        Self { shared }
    }

    pub(crate) fn shared_arc(&self) -> &Arc<RuntimeShared> {
        &self.shared
    }

    /// How many shards the runtime has.
    pub fn shard_count(&self) -> usize {
        self.shared.shard_count()
    }

    /// The runtime's one value of type `T`, made by `init` on first use: state a model
    /// shares between its shards and the threads that use it (each shard's own state
    /// stays in `ShardCtx::local_handle`). Takes a lock: look it up once, keep the `Arc`.
    pub fn singleton<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Arc<T> {
        let mut singletons = self
            .shared
            .singletons
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(found) = singletons
            .iter()
            .find_map(|value| Arc::clone(value).downcast::<T>().ok())
        {
            return found;
        }
        let made = Arc::new(init());
        singletons.push(made.clone());
        made
    }

    /// Whether shutdown has been requested.
    pub fn is_closing(&self) -> bool {
        self.shared.closing.load(Ordering::SeqCst)
    }

    /// Runs `task` on `shard`, fire-and-forget. The task is accepted (it will run, or be
    /// counted as dropped by a forced shutdown) exactly when this returns `Ok`.
    pub fn spawn<F>(&self, shard: usize, task: F) -> Result<(), SubmitError>
    where
        F: FnOnce(&mut ShardCtx) + Send + 'static,
    {
        self.enqueue(shard, move || Box::new(task))
    }

    /// Like `spawn`, but while the shard's queue is full it retries (every 100 µs) for
    /// up to `patience` before giving up with `Full`: for tasks that must not be
    /// dropped just because they come faster than one shard takes them (acks).
    pub fn spawn_patiently<F>(
        &self,
        shard: usize,
        patience: Duration,
        task: F,
    ) -> Result<(), SubmitError>
    where
        F: FnOnce(&mut ShardCtx) + Clone + Send + 'static,
    {
        let give_up = std::time::Instant::now() + patience;
        loop {
            match self.spawn(shard, task.clone()) {
                Err(SubmitError::Full { .. }) if std::time::Instant::now() < give_up => {
                    std::thread::sleep(Duration::from_micros(100));
                }
                result => return result,
            }
        }
    }

    /// Runs `f` on `shard` and waits for its result. Not from a shard thread (it would
    /// stall that shard): use `ShardCtx::call` there.
    pub fn call<R, F>(&self, shard: usize, f: F) -> Result<R, CallError>
    where
        R: Send + 'static,
        F: FnOnce(&mut ShardCtx) -> R + Send + 'static,
    {
        self.call_inner(shard, f, None)
    }

    /// As `call`, giving up after `timeout` (the task may still run later).
    pub fn call_timeout<R, F>(&self, shard: usize, timeout: Duration, f: F) -> Result<R, CallError>
    where
        R: Send + 'static,
        F: FnOnce(&mut ShardCtx) -> R + Send + 'static,
    {
        self.call_inner(shard, f, Some(timeout))
    }

    fn call_inner<R, F>(
        &self,
        shard: usize,
        f: F,
        timeout: Option<Duration>,
    ) -> Result<R, CallError>
    where
        R: Send + 'static,
        F: FnOnce(&mut ShardCtx) -> R + Send + 'static,
    {
        if let Some((_, current)) = current_shard() {
            return Err(CallError::OnShardThread { shard: current });
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.spawn(shard, move |ctx: &mut ShardCtx| {
            // The receiver may have timed out and gone; nothing to do then.
            let _ = tx.send(ctx.run_caught(f));
        })?;
        let received = match timeout {
            None => rx.recv().map_err(|_| CallError::Task(TaskError::Cancelled)),
            Some(t) => rx.recv_timeout(t).map_err(|e| match e {
                std::sync::mpsc::RecvTimeoutError::Timeout => CallError::Timeout,
                std::sync::mpsc::RecvTimeoutError::Disconnected => {
                    CallError::Task(TaskError::Cancelled)
                }
            }),
        };
        Ok(received??)
    }

    /// A submitter with room for `capacity` tasks in flight (submitted, completion not
    /// yet taken).
    pub fn submitter<T: Send + 'static>(&self, capacity: usize) -> std::io::Result<Submitter<T>> {
        let capacity = capacity.max(1);
        Ok(Submitter {
            runtime: self.clone(),
            queue: Arc::new(CompletionQueue {
                done: ArrayQueue::new(capacity),
                bell: Doorbell::new(EventFd::new()?),
            }),
            in_flight: 0,
            capacity,
            next_ticket: 0,
        })
    }

    /// Starts a graceful shutdown and returns at once: new external submissions are
    /// refused; every shard keeps running until all accepted work (including work that
    /// work creates) has run, then stops. Safe from any thread, shards included.
    pub fn request_shutdown(&self) {
        if !self.shared.closing.swap(true, Ordering::SeqCst) {
            self.shared.shards[0].doorbell.ring();
        }
    }

    /// A snapshot of every shard's counters (published once per loop turn).
    pub fn stats(&self) -> Vec<ShardStats> {
        self.shared
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| s.stats.snapshot(i))
            .collect()
    }

    /// Queues the task `make` builds on `shard`; `make` runs only once the submission
    /// is accepted, so a refused submission builds (and drops) nothing.
    pub(crate) fn enqueue(
        &self,
        shard: usize,
        make: impl FnOnce() -> Task,
    ) -> Result<(), SubmitError> {
        let shards = self.shard_count();
        let Some(target) = self.shared.shards.get(shard) else {
            return Err(SubmitError::NoSuchShard { shard, shards });
        };
        let capacity = target.external.capacity();
        if target.external_reserved.fetch_add(1, Ordering::AcqRel) >= capacity {
            target.external_reserved.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::Full { shard });
        }
        // Count before checking `closing` (both SeqCst): see `shutdown` for the argument.
        target.drain.ext_accepted.fetch_add(1, Ordering::SeqCst);
        if self.shared.closing.load(Ordering::SeqCst) {
            target.drain.ext_rejected.fetch_add(1, Ordering::SeqCst);
            target.external_reserved.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::ShuttingDown);
        }
        // Cannot fail: we hold one of `capacity` reservations, and the shard releases a
        // reservation only after popping, so the queue has a free slot for us.
        let pushed = target.external.push(make());
        assert!(pushed.is_ok(), "external queue full despite a reservation");
        if target.doorbell.ring() {
            target
                .stats
                .external_wakeups
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Identifies one submission of a `Submitter`, in submission order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

/// The outcome of one submission.
#[derive(Debug)]
pub struct Completion<T> {
    /// The ticket `submit` returned.
    pub ticket: Ticket,
    /// The task's return value, or why there is none.
    pub result: Result<T, TaskError>,
}

struct CompletionQueue<T> {
    done: ArrayQueue<Completion<T>>,
    bell: Doorbell<EventFd>,
}

/// Pushes a task's completion exactly once: with its result, or `Cancelled` if the task
/// is dropped unrun (forced shutdown).
struct CompletionSender<T> {
    queue: Arc<CompletionQueue<T>>,
    ticket: Ticket,
    sent: bool,
}

impl<T> CompletionSender<T> {
    fn send(mut self, result: Result<T, TaskError>) {
        self.push(result);
    }

    fn push(&mut self, result: Result<T, TaskError>) {
        self.sent = true;
        let completion = Completion {
            ticket: self.ticket,
            result,
        };
        // Cannot fail: the submitter keeps at most `capacity` tasks in flight.
        let pushed = self.queue.done.push(completion);
        assert!(
            pushed.is_ok(),
            "completion queue full despite the in-flight bound"
        );
        self.queue.bell.ring();
    }
}

impl<T> Drop for CompletionSender<T> {
    fn drop(&mut self) {
        if !self.sent {
            self.push(Err(TaskError::Cancelled));
        }
    }
}

/// Submits tasks from one non-shard thread and collects their completions.
///
/// Event-loop integration: watch `fd()` for readability. When it is readable, call
/// `clear_notification()`, then `try_complete()` until `None`, then `arm()`; if `arm()`
/// returns `true`, completions arrived meanwhile: drain again before waiting.
/// `Send` (move it to the thread that owns it), not `Sync`, not `Clone`.
pub struct Submitter<T> {
    runtime: RuntimeHandle,
    queue: Arc<CompletionQueue<T>>,
    in_flight: usize,
    capacity: usize,
    next_ticket: u64,
}

impl<T: Send + 'static> Submitter<T> {
    /// Submits `f` to run on `shard`; its result arrives as a `Completion` with the
    /// returned ticket.
    pub fn submit<F>(&mut self, shard: usize, f: F) -> Result<Ticket, SubmitError>
    where
        F: FnOnce(&mut ShardCtx) -> T + Send + 'static,
    {
        if self.in_flight >= self.capacity {
            return Err(SubmitError::TooManyInFlight {
                in_flight: self.in_flight,
            });
        }
        let ticket = Ticket(self.next_ticket);
        let queue = self.queue.clone();
        self.runtime.enqueue(shard, move || {
            let sender = CompletionSender {
                queue,
                ticket,
                sent: false,
            };
            Box::new(move |ctx: &mut ShardCtx| {
                let result =
                    catch_unwind(AssertUnwindSafe(|| f(ctx))).map_err(|p| TaskError::Panicked {
                        shard: ctx.shard_id(),
                        message: panic_message(&*p),
                    });
                sender.send(result);
            })
        })?;
        self.next_ticket += 1;
        self.in_flight += 1;
        Ok(ticket)
    }

    /// Takes one completion if there is one. Never blocks.
    pub fn try_complete(&mut self) -> Option<Completion<T>> {
        let completion = self.queue.done.pop()?;
        self.in_flight -= 1;
        Some(completion)
    }

    /// Waits up to `timeout` (`None`: without limit) for a completion.
    pub fn complete_timeout(
        &mut self,
        timeout: Option<Duration>,
    ) -> std::io::Result<Option<Completion<T>>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(c) = self.try_complete() {
                return Ok(Some(c));
            }
            if self.in_flight == 0 {
                return Ok(None);
            }
            if self.arm() {
                continue;
            }
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if remaining == Some(Duration::ZERO) {
                self.queue.bell.disarm();
                return Ok(None);
            }
            self.queue.bell.notifier().wait_readable(remaining)?;
            self.clear_notification()?;
            self.queue.bell.disarm();
        }
    }

    /// Submissions whose completions have not been taken yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The eventfd that becomes readable when a completion arrives while armed.
    pub fn fd(&self) -> RawFd {
        self.queue.bell.notifier().as_raw_fd()
    }

    /// Asks to be notified on `fd()` for the next completion. Returns `true` if
    /// completions are already waiting (then take them instead of waiting).
    pub fn arm(&self) -> bool {
        self.queue.bell.arm();
        if self.queue.done.is_empty() {
            return false;
        }
        self.queue.bell.disarm();
        true
    }

    /// Resets `fd()` to not-readable (reads the eventfd counter).
    pub fn clear_notification(&self) -> std::io::Result<()> {
        self.queue.bell.notifier().read_count().map(|_| ())
    }
}
