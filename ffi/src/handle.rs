//! `ringbroker_t`: a broker handle, embedded (`ringbroker_open`) or connected to a
//! daemon (`ringbroker_connect`), and the completions of its asynchronous publishes.
//!
//! Owns: the engine or client behind the handle, and the completion queue with its
//! eventfd. Never: behaves differently by mode past `open`/`connect`/`close`: every
//! other call goes through `BrokerApi`, the same for both.

use std::collections::VecDeque;
use std::ffi::{c_char, c_int, CString};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use engine::api::BrokerApi;
use engine::broker::Broker;
use engine::client::Client;
use engine::doorbell::EventFd;

use crate::arguments::{out_param, reference, string};
use crate::config::{self, Config};
use crate::message::Msg;
use crate::status::{guard, guard_value, Failure, Status, StatusCode};

/// The handle argument of an entry point: `InvalidArgument` if NULL.
pub(crate) fn arg<'a>(ptr: *const Handle) -> Result<&'a Handle, Failure> {
    // SAFETY: every entry point's caller promises `ptr` is NULL or a live handle.
    unsafe { reference(ptr, "handle") }
}

/// What a handle runs on.
enum Engine {
    Embedded(Broker),
    Remote(Client),
}

/// A broker handle (`ringbroker_t` in C). Thread-safe: any number of threads may use
/// one handle at once, except `ringbroker_close`, which must come last.
pub struct Handle {
    engine: Engine,
    pub(crate) completions: Arc<Completions>,
}

impl Handle {
    /// The one API both modes implement.
    pub fn api(&self) -> &dyn BrokerApi {
        match &self.engine {
            Engine::Embedded(broker) => broker,
            Engine::Remote(client) => client,
        }
    }

    fn new(engine: Engine) -> Result<Self, Failure> {
        Ok(Self {
            engine,
            completions: Arc::new(Completions::new()?),
        })
    }
}

/// The outcome of one item of an asynchronous publish, or of an asynchronous request
/// (`ringbroker_completion`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    /// The token the publish was given.
    pub token: u64,
    /// Which item of that publish (0-based).
    pub index: u32,
    /// How it went.
    pub status: StatusCode,
    /// Stream publishes: the partition stored in.
    pub partition: u32,
    /// Stream publishes: the offset stored at.
    pub offset: u64,
    /// Stream publishes: it was a duplicate (already stored; not stored again).
    pub duplicate: bool,
    /// Exchange publishes: how many queues it reached.
    pub queues: u32,
    /// When `status` is not OK: why (NUL-terminated), valid until the next
    /// `ringbroker_completions_poll` on the handle; NULL otherwise.
    pub message: *const c_char,
    /// Requests (`ringbroker_request_async`) with `status` OK: the reply, now the
    /// caller's: free it with `ringbroker_msg_free`. NULL otherwise.
    pub reply: *mut Msg,
}

impl Completion {
    /// A successful completion of item `index` of `token`, with nothing filled in.
    pub(crate) fn ok(token: u64, index: u32) -> Self {
        Self {
            token,
            index,
            status: crate::status::RINGBROKER_OK,
            partition: 0,
            offset: 0,
            duplicate: false,
            queues: 0,
            message: std::ptr::null(),
            reply: std::ptr::null_mut(),
        }
    }
}

/// One completion as kept before it is polled (its message and reply owned).
pub(crate) struct Done {
    pub(crate) completion: Completion,
    pub(crate) message: Option<CString>,
    pub(crate) reply: Option<Msg>,
}

// SAFETY: a queued `Completion`'s `message` and `reply` are always NULL (the text and
// the reply live in `Done` and are pointed to only when polled), so no pointer
// crosses threads.
unsafe impl Send for Done {}

/// The completions of a handle's asynchronous publishes, and an eventfd readable
/// exactly while some are waiting to be polled.
pub(crate) struct Completions {
    state: Mutex<CompletionState>,
    fd: EventFd,
}

struct CompletionState {
    queue: VecDeque<Done>,
    /// The messages of the last poll's completions (their pointers went to C).
    polled: Vec<CString>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Completions {
    fn new() -> Result<Self, Failure> {
        let fd =
            EventFd::new().map_err(|e| Failure::new(Status::Internal, format!("eventfd: {e}")))?;
        Ok(Self {
            state: Mutex::new(CompletionState {
                queue: VecDeque::new(),
                polled: Vec::new(),
            }),
            fd,
        })
    }

    /// Queues completions; the eventfd turns readable if the queue was empty.
    pub(crate) fn push(&self, done: impl IntoIterator<Item = Done>) {
        let mut state = lock(&self.state);
        let was_empty = state.queue.is_empty();
        state.queue.extend(done);
        if was_empty && !state.queue.is_empty() {
            if let Err(error) = self.fd.write_one() {
                // A full eventfd counter is impossible here (one write per empty to
                // non-empty turn, cleared on drain).
                eprintln!("ringbroker: completion eventfd: {error}");
            }
        }
    }

    /// Takes up to `max` completions, oldest first; their messages are kept until the
    /// next poll.
    fn poll(&self, max: usize) -> Vec<Completion> {
        let mut state = lock(&self.state);
        let n = max.min(state.queue.len());
        let mut messages = Vec::new();
        let taken: Vec<Completion> = state
            .queue
            .drain(..n)
            .map(|mut done| {
                if let Some(text) = done.message.take() {
                    done.completion.message = text.as_ptr();
                    messages.push(text);
                }
                if let Some(reply) = done.reply.take() {
                    done.completion.reply = reply.into_raw();
                }
                done.completion
            })
            .collect();
        state.polled = messages;
        if state.queue.is_empty() {
            let _ = self.fd.read_count();
        }
        taken
    }
}

/// Starts an embedded broker on `config`'s `data_dir` (created if missing; locked, so
/// one broker per directory) and puts its handle in `*out`. Keys: `data_dir`
/// (required), `shards` (default: one per core), `pin_to_cores` (default true),
/// `idle_spin_us` (how long an idle shard spins before it sleeps, 0 to 1000000;
/// default 0: spinning trades CPU, and the throughput of what shares the cores, for
/// latency).
/// Returns `RINGBROKER_INVALID_ARGUMENT` for a NULL argument or a bad key,
/// `RINGBROKER_LOCKED` if another broker has the directory, `RINGBROKER_INTERNAL` if
/// the directory or the shards could not be set up. Close with `ringbroker_close`.
/// Any thread may call this.
///
/// # Safety
/// `config` must be NULL or a live config; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_open(
    config: *const Config,
    out: *mut *mut Handle,
) -> StatusCode {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let slot = unsafe { out_param(out, "out") }?;
        // SAFETY: forwarded from the caller.
        let broker_config = config::broker(Some(unsafe { config::required(config) }?))?;
        let broker = Broker::open(broker_config).map_err(|e| {
            let status = match e {
                engine::broker::BrokerError::Locked { .. } => Status::Locked,
                _ => Status::Internal,
            };
            Failure::new(status, e.to_string())
        })?;
        *slot = Box::into_raw(Box::new(Handle::new(Engine::Embedded(broker))?));
        Ok(())
    })
}

/// Connects to a `ringbrokerd` at `url` (`ringbroker://host[:port]`, port 7070 by
/// default) and puts the handle in `*out`. `config` may be NULL; keys: `auth_token`,
/// `client_name`, `connect_timeout_ms`, `request_timeout_ms`, `reconnect` (default
/// true: a dropped connection is re-made, subscriptions and consumers re-created).
/// Returns `RINGBROKER_INVALID_ARGUMENT` (NULL, bad url or key), `RINGBROKER_DISCONNECTED`
/// (could not connect), `RINGBROKER_AUTH_FAILED`, `RINGBROKER_VERSION_UNSUPPORTED`.
/// Close with `ringbroker_close`. Any thread may call this.
///
/// # Safety
/// `url` must be NULL or NUL-terminated; `config` NULL or live; `out` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_connect(
    url: *const c_char,
    config: *const Config,
    out: *mut *mut Handle,
) -> StatusCode {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let slot = unsafe { out_param(out, "out") }?;
        // SAFETY: forwarded from the caller.
        let url = unsafe { string(url, "url") }?;
        // SAFETY: forwarded from the caller.
        let client_config = config::client(url, unsafe { config::optional(config) })?;
        let client = Client::connect(client_config).map_err(engine::api::Error::from)?;
        *slot = Box::into_raw(Box::new(Handle::new(Engine::Remote(client))?));
        Ok(())
    })
}

/// Closes a handle: an embedded broker syncs and stops its shards, a connection
/// closes. Asynchronous publishes not yet answered are answered before an embedded
/// broker stops; a connection answers them `RINGBROKER_DISCONNECTED`. Consumers made
/// from the handle stay valid objects to free, but their calls fail. NULL is a no-op
/// (returns OK); closing twice, or while another thread uses the handle, is
/// undefined. Returns `RINGBROKER_INTERNAL` if an embedded broker could not stop
/// cleanly (the handle is freed all the same).
///
/// # Safety
/// `handle` must be NULL or a live handle no other thread is using.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_close(handle: *mut Handle) -> StatusCode {
    guard(|| {
        if handle.is_null() {
            return Ok(());
        }
        // SAFETY: made by Box::into_raw in open/connect, closed once.
        let handle = unsafe { Box::from_raw(handle) };
        match handle.engine {
            Engine::Embedded(broker) => {
                broker
                    .shutdown()
                    .map_err(|e| Failure::new(Status::Internal, e.to_string()))?;
            }
            Engine::Remote(client) => client.close(),
        }
        Ok(())
    })
}

/// Whether `handle` is embedded (1), connected to a daemon (0), or NULL (-1).
///
/// # Safety
/// `handle` must be NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_is_embedded(handle: *const Handle) -> c_int {
    guard_value(-1, || {
        // SAFETY: forwarded from the caller.
        match unsafe { handle.as_ref() } {
            None => -1,
            Some(h) => c_int::from(matches!(h.engine, Engine::Embedded(_))),
        }
    })
}

/// The file descriptor (an eventfd) that is readable while completions of this
/// handle's asynchronous publishes wait to be polled. Put it in your event loop; it
/// belongs to the handle (do not close or read it). Returns
/// `RINGBROKER_INVALID_ARGUMENT` for a NULL argument.
///
/// # Safety
/// `handle` must be NULL or live; `fd` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_completions_fd(
    handle: *const Handle,
    fd: *mut c_int,
) -> StatusCode {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let handle = unsafe { reference(handle, "handle") }?;
        // SAFETY: forwarded from the caller.
        *unsafe { out_param(fd, "fd") }? = handle.completions.fd.as_raw_fd();
        Ok(())
    })
}

/// Moves up to `capacity` completions of asynchronous publishes and requests into
/// `out` (in the order the engine answered) and sets `*count` to how many; never
/// blocks. The `message` pointers stay valid until the next poll on this handle: poll
/// from one thread. Each non-NULL `reply` is the caller's to free with
/// `ringbroker_msg_free` (replies never polled are freed by `ringbroker_close`).
/// The fd turns readable when the queue goes from empty to not empty and is cleared
/// when a poll empties it: an edge-triggered loop polls until `*count < capacity`. Returns `RINGBROKER_INVALID_ARGUMENT` for a NULL argument.
///
/// # Safety
/// `handle` must be NULL or live; `out` NULL or room for `capacity` completions;
/// `count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringbroker_completions_poll(
    handle: *const Handle,
    out: *mut Completion,
    capacity: usize,
    count: *mut usize,
) -> StatusCode {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let handle = unsafe { reference(handle, "handle") }?;
        // SAFETY: forwarded from the caller.
        let count = unsafe { out_param(count, "count") }?;
        if capacity > 0 && out.is_null() {
            return Err(Failure::invalid("out is NULL with a capacity"));
        }
        let taken = handle.completions.poll(capacity);
        for (i, completion) in taken.iter().enumerate() {
            // SAFETY: `i < capacity`, and the caller promises room for `capacity`
            // completions at `out` (non-NULL, checked above).
            unsafe { out.add(i).write(*completion) };
        }
        *count = taken.len();
        Ok(())
    })
}

/// The library's version, "MAJOR.MINOR.PATCH" (static string). Any thread.
#[no_mangle]
pub extern "C" fn ringbroker_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI version this library implements (`RINGBROKER_ABI_VERSION` of the header it
/// was built with). A program checks it equals the header's at start-up.
#[no_mangle]
pub extern "C" fn ringbroker_abi_version() -> u32 {
    crate::RINGBROKER_ABI_VERSION
}
