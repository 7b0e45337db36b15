//! The control lane: a few threads that run the broker calls which wait (declaring,
//! deleting, describing, attaching consumers) on behalf of connections, so no shard
//! ever blocks on them.
//!
//! Owns: the worker threads and the queue of jobs. A request job answers through its
//! `Deferred` (the answer travels to the connection's shard). Requests are bounded
//! (`REQUESTS_MAX` waiting; more get `Backpressure`); release jobs (dropping a
//! connection's consumers and exclusive queues, which must wait for their shard) are
//! always taken: there is one per object a session held, so they are bounded by the
//! sessions.
//!
//! Never: runs on a shard, or outlives the server (its stop joins the workers after the
//! queue drains).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::Failure;
use crate::protocol::ErrorCode;

/// Control requests that may wait for a worker before new ones are refused.
pub(crate) const REQUESTS_MAX: usize = 4096;
/// Worker threads.
const WORKERS: usize = 2;

type Job = Box<dyn FnOnce() + Send>;

/// The lane. Shared by the server's shards.
pub(crate) struct ControlLane {
    tx: Mutex<Option<Sender<Job>>>,
    waiting: Arc<AtomicUsize>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl ControlLane {
    /// Starts the workers.
    pub(crate) fn start() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let waiting = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::with_capacity(WORKERS);
        for i in 0..WORKERS {
            let rx = rx.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("ringbroker-control-{i}"))
                    .spawn(move || work(&rx))?,
            );
        }
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            waiting,
            workers: Mutex::new(workers),
        })
    }

    /// Reserves room for a request job: `Backpressure` when `REQUESTS_MAX` are
    /// waiting, `ShuttingDown` once the lane stopped. Reserve before building the job,
    /// so a refusal never drops a job (and the reply it carries).
    pub(crate) fn permit(&self) -> Result<Permit<'_>, Failure> {
        if self.lock_tx().is_none() {
            return Err(Failure::new(ErrorCode::ShuttingDown, "server stopping"));
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= REQUESTS_MAX {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Failure::new(
                ErrorCode::Backpressure,
                "too many control requests waiting",
            ));
        }
        Ok(Permit { lane: self })
    }

    /// Queues a release job (never refused while the lane runs). After `stop`, the job
    /// runs on the calling thread.
    pub(crate) fn release(&self, job: impl FnOnce() + Send + 'static) {
        let job: Job = Box::new(job);
        let refused = match self.lock_tx().as_ref() {
            Some(tx) => tx.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(job) = refused {
            job();
        }
    }

    fn lock_tx(&self) -> std::sync::MutexGuard<'_, Option<Sender<Job>>> {
        self.tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lets the workers finish what is queued, then joins them.
    pub(crate) fn stop(&self) {
        self.lock_tx().take();
        let workers = std::mem::take(
            &mut *self
                .workers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for worker in workers {
            let _ = worker.join();
        }
    }
}

/// Room for one request job on the lane.
pub(crate) struct Permit<'a> {
    lane: &'a ControlLane,
}

impl Permit<'_> {
    /// Queues `job`. If the lane stopped since the permit was given, the job is dropped
    /// unrun (a `Deferred` it holds then answers `Internal`).
    pub(crate) fn submit(self, job: impl FnOnce() + Send + 'static) {
        let waiting = self.lane.waiting.clone();
        let job: Job = Box::new(move || {
            waiting.fetch_sub(1, Ordering::AcqRel);
            job();
        });
        let sent = self.lane.lock_tx().as_ref().map(|tx| tx.send(job));
        if !matches!(sent, Some(Ok(()))) {
            self.lane.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            rx.recv()
        };
        match job {
            Ok(job) => {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    tracing::error!("a control job panicked");
                }
            }
            Err(_) => return,
        }
    }
}
