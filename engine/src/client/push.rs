//! The client's side of a server-pushed consumer (subscription, stream or queue
//! consumer): where the reader thread puts its messages, how the application waits for
//! them (blocking, or on an eventfd from its own event loop), and what re-creates the
//! consumer after a reconnect.
//!
//! Owns: one bounded buffer per stream or queue consumer (`BUFFER_MAX`), the reason the
//! server gave if it ended the consumer, the request that made it, and `Readiness`: the
//! count of buffered messages and the doorbell whose eventfd an event loop watches.
//! Never: drops a pushed stream or queue message; past the bound the reader waits, so
//! the server's output bound and TCP push back. (Subject messages are at most once: the
//! subscription's sink in `client/mod.rs` drops past its bound, and counts.)

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{lock, ClientError, Inner};
use crate::doorbell::{Doorbell, EventFd};
use crate::protocol::ErrorCode;

/// Messages one consumer buffers in the client. The server pushes at most the
/// consumer's credit (`max_ack_pending`, `prefetch`) unacknowledged.
pub(super) const BUFFER_MAX: usize = 1024;

/// What the application end of a consumer watches, shared with the reader's end.
///
/// The eventfd follows the doorbell protocol (`crate::doorbell`): `arm` before waiting
/// on it; the reader rings after each message it buffers and when the consumer ends.
#[derive(Debug)]
pub(super) struct Readiness {
    buffered: AtomicUsize,
    ended: AtomicBool,
    bell: Doorbell<EventFd>,
}

impl Readiness {
    /// A new consumer's: nothing buffered, a fresh eventfd.
    pub(super) fn new() -> Result<Arc<Self>, ClientError> {
        let fd = EventFd::new().map_err(|e| ClientError::Resource(format!("eventfd: {e}")))?;
        Ok(Arc::new(Self {
            buffered: AtomicUsize::new(0),
            ended: AtomicBool::new(false),
            bell: Doorbell::new(fd),
        }))
    }

    /// Reader: buffers one message with `send` (false: it could not) and rings. The
    /// count goes up before the message is in the channel, so the application's
    /// `taken` can never bring it below zero; `arm` may then see a message a moment
    /// before it can be taken (a caller drains and arms again, as the protocol says).
    pub(super) fn deliver(&self, send: impl FnOnce() -> bool) -> bool {
        self.buffered.fetch_add(1, Ordering::SeqCst);
        if send() {
            self.bell.ring();
            true
        } else {
            self.buffered.fetch_sub(1, Ordering::SeqCst);
            false
        }
    }

    /// Application: one message was taken.
    pub(super) fn taken(&self) {
        self.buffered.fetch_sub(1, Ordering::SeqCst);
    }

    /// Messages buffered now.
    pub(super) fn buffered(&self) -> usize {
        self.buffered.load(Ordering::SeqCst)
    }

    /// Reader: no message will come any more (the consumer or the client ended).
    pub(super) fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        self.bell.ring();
    }

    /// The eventfd that becomes readable when messages arrive (after `arm`).
    pub(super) fn fd(&self) -> RawFd {
        self.bell.notifier().as_raw_fd()
    }

    /// Announces the caller is about to wait on `fd()`; true if messages (or the end)
    /// are already there: take them instead of waiting.
    pub(super) fn arm(&self) -> bool {
        self.bell.arm();
        let ready = self.buffered() > 0 || self.ended.load(Ordering::SeqCst);
        if ready {
            self.bell.disarm();
        }
        ready
    }

    /// Clears the eventfd after it was readable.
    pub(super) fn clear_notification(&self) -> Result<(), ClientError> {
        self.bell
            .notifier()
            .read_count()
            .map(drop)
            .map_err(|e| ClientError::Resource(format!("eventfd: {e}")))
    }
}

/// The reader thread's end: where a consumer's messages go.
pub(super) struct Sink<R, T> {
    /// What to send again after a reconnect.
    pub(super) request: R,
    /// `None` only while dropping.
    tx: Option<SyncSender<T>>,
    closed: Arc<Mutex<Option<String>>>,
    ready: Arc<Readiness>,
}

impl<R, T> Drop for Sink<R, T> {
    /// The consumer's messages all came: a waiting event loop wakes to see the end.
    /// The channel closes first, so whoever wakes finds it disconnected, not empty.
    fn drop(&mut self) {
        drop(self.tx.take());
        self.ready.end();
    }
}

/// The application's end: waits for a consumer's messages. One thread receives at a
/// time (the receiver is behind a lock); acks from other threads do not wait on it.
pub(super) struct Source<T> {
    rx: Mutex<Receiver<T>>,
    closed: Arc<Mutex<Option<String>>>,
    pub(super) ready: Arc<Readiness>,
}

/// Consumers of one kind by the client's id.
pub(super) type Sinks<R, T> = Mutex<HashMap<u64, Sink<R, T>>>;

/// Registers consumer `id` (before its request is sent: pushes may come before the
/// reply) and returns its source.
pub(super) fn open<R, T>(
    sinks: &Sinks<R, T>,
    id: u64,
    request: R,
) -> Result<Source<T>, ClientError> {
    let (tx, rx) = mpsc::sync_channel(BUFFER_MAX);
    let closed = Arc::new(Mutex::new(None));
    let ready = Readiness::new()?;
    let sink = Sink {
        request,
        tx: Some(tx),
        closed: closed.clone(),
        ready: ready.clone(),
    };
    lock(sinks).insert(id, sink);
    Ok(Source {
        rx: Mutex::new(rx),
        closed,
        ready,
    })
}

/// Hands a pushed message to consumer `id` (dropped if it is gone). Blocks while the
/// consumer's buffer is full.
pub(super) fn route<R, T>(sinks: &Sinks<R, T>, id: u64, message: T) {
    let target = lock(sinks)
        .get(&id)
        .and_then(|s| Some((s.tx.clone()?, s.ready.clone())));
    if let Some((tx, ready)) = target {
        ready.deliver(|| tx.send(message).is_ok());
    }
}

/// The server ended consumer `id`; false if it is not one of `sinks`.
pub(super) fn close<R, T>(sinks: &Sinks<R, T>, id: u64, why: String) -> bool {
    match lock(sinks).remove(&id) {
        Some(sink) => {
            *lock(&sink.closed) = Some(why);
            true
        }
        None => false,
    }
}

/// The requests that re-create every consumer after a reconnect.
pub(super) fn requests<R: Clone, T>(sinks: &Sinks<R, T>) -> Vec<R> {
    lock(sinks).values().map(|s| s.request.clone()).collect()
}

impl<T> Source<T> {
    /// The next message, waiting up to `timeout`: `NotFound` with the server's reason
    /// once it ended the consumer, `Disconnected` once the client is gone.
    pub(super) fn next(&self, timeout: Duration, inner: &Inner) -> Result<T, ClientError> {
        let received = lock(&self.rx).recv_timeout(timeout);
        match received {
            Ok(message) => Ok(self.taken(message)),
            Err(RecvTimeoutError::Timeout) => match self.ended() {
                Some(error) => Err(error),
                None => Err(ClientError::Timeout(timeout)),
            },
            Err(RecvTimeoutError::Disconnected) => {
                Err(self.ended().unwrap_or_else(|| inner.lost_error()))
            }
        }
    }

    /// The next message if one is buffered; `Err` once the consumer ended and every
    /// message it got was taken.
    pub(super) fn try_next(&self, inner: &Inner) -> Result<Option<T>, ClientError> {
        let received = lock(&self.rx).try_recv();
        match received {
            Ok(message) => Ok(Some(self.taken(message))),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => {
                Err(self.ended().unwrap_or_else(|| inner.lost_error()))
            }
        }
    }

    fn taken(&self, message: T) -> T {
        self.ready.taken();
        message
    }

    /// The server's reason, if it ended the consumer.
    fn ended(&self) -> Option<ClientError> {
        lock(&self.closed).clone().map(|why| ClientError::Server {
            code: ErrorCode::NotFound,
            message: why,
        })
    }
}
