//! The client's side of a server-pushed consumer (stream or queue): where the reader
//! thread puts its messages, how the application waits for them, and what re-creates
//! the consumer after a reconnect.
//!
//! Owns: one bounded buffer per consumer (`BUFFER_MAX`, allocated whole when the
//! consumer is made), the reason the server gave if it ended the consumer, and the
//! request that made it. Never: drops a pushed message; past the bound the reader
//! waits, so the server's output bound and TCP push back.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{lock, ClientError, Inner};
use crate::protocol::ErrorCode;

/// Messages one consumer buffers in the client. The server pushes at most the
/// consumer's credit (`max_ack_pending`, `prefetch`) unacknowledged.
pub(super) const BUFFER_MAX: usize = 1024;

/// The reader thread's end: where a consumer's messages go.
pub(super) struct Sink<R, T> {
    /// What to send again after a reconnect.
    pub(super) request: R,
    tx: SyncSender<T>,
    closed: Arc<Mutex<Option<String>>>,
}

/// The application's end: waits for a consumer's messages.
pub(super) struct Source<T> {
    rx: Receiver<T>,
    closed: Arc<Mutex<Option<String>>>,
}

/// Consumers of one kind by the client's id.
pub(super) type Sinks<R, T> = Mutex<HashMap<u64, Sink<R, T>>>;

/// Registers consumer `id` (before its request is sent: pushes may come before the
/// reply) and returns its source.
pub(super) fn open<R, T>(sinks: &Sinks<R, T>, id: u64, request: R) -> Source<T> {
    let (tx, rx) = mpsc::sync_channel(BUFFER_MAX);
    let closed = Arc::new(Mutex::new(None));
    let sink = Sink {
        request,
        tx,
        closed: closed.clone(),
    };
    lock(sinks).insert(id, sink);
    Source { rx, closed }
}

/// Hands a pushed message to consumer `id` (dropped if it is gone). Blocks while the
/// consumer's buffer is full.
pub(super) fn route<R, T>(sinks: &Sinks<R, T>, id: u64, message: T) {
    let tx = lock(sinks).get(&id).map(|s| s.tx.clone());
    if let Some(tx) = tx {
        let _ = tx.send(message);
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
        match self.rx.recv_timeout(timeout) {
            Ok(message) => Ok(message),
            Err(RecvTimeoutError::Timeout) => match lock(&self.closed).clone() {
                Some(why) => Err(ClientError::Server {
                    code: ErrorCode::NotFound,
                    message: why,
                }),
                None => Err(ClientError::Timeout(timeout)),
            },
            Err(RecvTimeoutError::Disconnected) => Err(inner.lost_error()),
        }
    }
}
