//! Status codes, the thread's last error message, and the guard every entry point runs
//! its body in.
//!
//! Owns: `Status` (the C enum `ringbroker_status`, numbered as the wire's error codes
//! so a code means the same in C, in Rust and on the wire), the conversion of every
//! engine error to it, and the promise that no panic crosses the boundary. Never:
//! decides what an operation does.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use engine::api;
use engine::protocol::ErrorCode;

/// What a call did (`ringbroker_status` in C, an `int32_t`): `RINGBROKER_OK` (0) is
/// success; every other value names a failure, whose message
/// `ringbroker_last_error_message` gives. Codes 1 to 21 are the native protocol's error
/// codes (docs/protocol.md) and never change meaning; 100 and up are the C API's own.
pub type StatusCode = i32;

/// Success.
pub const RINGBROKER_OK: StatusCode = 0;
/// Bytes from the server could not be decoded.
pub const RINGBROKER_MALFORMED: StatusCode = 1;
/// A frame exceeded the maximum frame size (a publish too large for the server).
pub const RINGBROKER_FRAME_TOO_LARGE: StatusCode = 2;
/// The server does not know an operation.
pub const RINGBROKER_UNKNOWN_OP: StatusCode = 3;
/// An operation not valid in the connection's state.
pub const RINGBROKER_OUT_OF_STATE: StatusCode = 4;
/// Client and server share no protocol version.
pub const RINGBROKER_VERSION_UNSUPPORTED: StatusCode = 5;
/// The auth token is missing or wrong.
pub const RINGBROKER_AUTH_FAILED: StatusCode = 6;
/// The stream, consumer, exchange, queue or subscription does not exist, or a consumer
/// ended (the message says why).
pub const RINGBROKER_NOT_FOUND: StatusCode = 7;
/// It exists with a different definition.
pub const RINGBROKER_ALREADY_EXISTS: StatusCode = 8;
/// A NULL or invalid argument, an unknown or malformed config key, an invalid name or
/// definition (the message says which).
pub const RINGBROKER_INVALID_ARGUMENT: StatusCode = 9;
/// A request matched no subscriber.
pub const RINGBROKER_NO_RESPONDERS: StatusCode = 10;
/// Nothing came within the timeout.
pub const RINGBROKER_TIMEOUT: StatusCode = 11;
/// The engine is saturated; retry later.
pub const RINGBROKER_BACKPRESSURE: StatusCode = 12;
/// The broker is stopping, or the handle was closed.
pub const RINGBROKER_SHUTTING_DOWN: StatusCode = 13;
/// The engine refused the operation (a full queue that rejects publishes, a record over
/// the stream's size limit, a delete of something in use).
pub const RINGBROKER_REFUSED: StatusCode = 14;
/// An exclusive queue belongs to another connection.
pub const RINGBROKER_LOCKED: StatusCode = 15;
/// A mandatory publish reached no queue.
pub const RINGBROKER_UNROUTABLE: StatusCode = 16;
/// The server closed the connection: this client did not read.
pub const RINGBROKER_SLOW_CONSUMER: StatusCode = 17;
/// The server closed the idle connection.
pub const RINGBROKER_IDLE_TIMEOUT: StatusCode = 18;
/// A bug (a panic caught at the boundary) or an I/O failure.
pub const RINGBROKER_INTERNAL: StatusCode = 19;
/// An id already in use on the connection.
pub const RINGBROKER_ID_IN_USE: StatusCode = 20;
/// The connection to the daemon dropped or could not be made.
pub const RINGBROKER_DISCONNECTED: StatusCode = 21;
/// A `try_` call found nothing ready; wait on the object's file descriptor.
pub const RINGBROKER_WOULD_BLOCK: StatusCode = 100;
/// The call does not apply to this kind of object (an ack on a subject subscription, a
/// stream call on a queue consumer).
pub const RINGBROKER_WRONG_KIND: StatusCode = 101;

/// The statuses as a Rust enum (the C API uses the `RINGBROKER_*` numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// Bytes from the server could not be decoded.
    Malformed = 1,
    /// A frame exceeded the maximum frame size (a publish too large for the server).
    FrameTooLarge = 2,
    /// The server does not know an operation.
    UnknownOp = 3,
    /// An operation not valid in the connection's state.
    OutOfState = 4,
    /// Client and server share no protocol version.
    VersionUnsupported = 5,
    /// The auth token is missing or wrong.
    AuthFailed = 6,
    /// The stream, consumer, exchange, queue or subscription does not exist, or a
    /// consumer ended (the message says why).
    NotFound = 7,
    /// It exists with a different definition.
    AlreadyExists = 8,
    /// A NULL or invalid argument, an unknown or malformed config key, an invalid
    /// name or definition (the message says which).
    InvalidArgument = 9,
    /// A request matched no subscriber.
    NoResponders = 10,
    /// Nothing came within the timeout.
    Timeout = 11,
    /// The engine is saturated; retry later.
    Backpressure = 12,
    /// The broker is stopping, or the handle was closed.
    ShuttingDown = 13,
    /// The engine refused the operation (a full queue that rejects publishes, a
    /// record over the stream's size limit, a delete of something in use).
    Refused = 14,
    /// An exclusive queue belongs to another connection.
    Locked = 15,
    /// A mandatory publish reached no queue.
    Unroutable = 16,
    /// The server closed the connection: this client did not read.
    SlowConsumer = 17,
    /// The server closed the idle connection.
    IdleTimeout = 18,
    /// A bug (a panic caught at the boundary) or an I/O failure.
    Internal = 19,
    /// An id already in use on the connection.
    IdInUse = 20,
    /// The connection to the daemon dropped or could not be made.
    Disconnected = 21,
    /// A `try_` call found nothing ready; wait on the object's file descriptor.
    WouldBlock = 100,
    /// The call does not apply to this kind of object (an ack on a subject
    /// subscription, a stream call on a queue consumer).
    WrongKind = 101,
}

impl Status {
    /// Every status, in numeric order.
    pub const ALL: [Status; 24] = [
        Self::Ok,
        Self::Malformed,
        Self::FrameTooLarge,
        Self::UnknownOp,
        Self::OutOfState,
        Self::VersionUnsupported,
        Self::AuthFailed,
        Self::NotFound,
        Self::AlreadyExists,
        Self::InvalidArgument,
        Self::NoResponders,
        Self::Timeout,
        Self::Backpressure,
        Self::ShuttingDown,
        Self::Refused,
        Self::Locked,
        Self::Unroutable,
        Self::SlowConsumer,
        Self::IdleTimeout,
        Self::Internal,
        Self::IdInUse,
        Self::Disconnected,
        Self::WouldBlock,
        Self::WrongKind,
    ];

    /// The number C sees.
    pub fn code(self) -> StatusCode {
        self as StatusCode
    }

    /// The status numbered `value`, if there is one.
    pub fn from_i32(value: StatusCode) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == value)
    }

    /// The status for a wire error code (same number).
    pub fn from_code(code: ErrorCode) -> Self {
        match code {
            ErrorCode::Malformed => Self::Malformed,
            ErrorCode::FrameTooLarge => Self::FrameTooLarge,
            ErrorCode::UnknownOp => Self::UnknownOp,
            ErrorCode::OutOfState => Self::OutOfState,
            ErrorCode::VersionUnsupported => Self::VersionUnsupported,
            ErrorCode::AuthFailed => Self::AuthFailed,
            ErrorCode::NotFound => Self::NotFound,
            ErrorCode::AlreadyExists => Self::AlreadyExists,
            ErrorCode::Invalid => Self::InvalidArgument,
            ErrorCode::NoResponders => Self::NoResponders,
            ErrorCode::Timeout => Self::Timeout,
            ErrorCode::Backpressure => Self::Backpressure,
            ErrorCode::ShuttingDown => Self::ShuttingDown,
            ErrorCode::Refused => Self::Refused,
            ErrorCode::Locked => Self::Locked,
            ErrorCode::Unroutable => Self::Unroutable,
            ErrorCode::SlowConsumer => Self::SlowConsumer,
            ErrorCode::IdleTimeout => Self::IdleTimeout,
            ErrorCode::Internal => Self::Internal,
            ErrorCode::IdInUse => Self::IdInUse,
            ErrorCode::Disconnected => Self::Disconnected,
        }
    }
}

/// A failed call: its status and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What kind of failure.
    pub status: Status,
    /// What happened, for people.
    pub message: String,
}

impl Failure {
    /// A failure with `status` and `message`.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// An invalid argument: `what` names it and says what is wrong.
    pub fn invalid(what: impl Into<String>) -> Self {
        Self::new(Status::InvalidArgument, what)
    }
}

impl From<api::Error> for Failure {
    fn from(error: api::Error) -> Self {
        Self::new(Status::from_code(error.code), error.message)
    }
}

/// The body of an entry point.
pub type Outcome = Result<(), Failure>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error (interior NULs become spaces).
fn set_last_error(message: &str) {
    let clean: Vec<u8> = message
        .bytes()
        .map(|b| if b == 0 { b' ' } else { b })
        .collect();
    let text = CString::new(clean).unwrap_or_default();
    // During the thread's teardown (a call from a thread-local destructor) the store
    // may be gone: the message is lost, the status still says what happened.
    let _ = LAST_ERROR.try_with(|last| *last.borrow_mut() = text);
}

/// Runs an entry point's body: its failure becomes a status and this thread's last
/// error message; a panic becomes `RINGBROKER_INTERNAL` with the panic's message.
pub fn guard(body: impl FnOnce() -> Outcome) -> StatusCode {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => RINGBROKER_OK,
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.status.code()
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with no message".to_owned());
            set_last_error(&format!("internal error (panic): {what}"));
            RINGBROKER_INTERNAL
        }
    }
}

/// Runs `body` for a call that cannot report a status (a free, a getter): a panic is
/// caught and recorded as the last error, and `fallback` returned.
pub fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(_) => {
            set_last_error("internal error (panic) in a call without a status");
            fallback
        }
    }
}

/// The message of the last failed call on this thread ("" if none failed yet). The
/// pointer stays valid until the next failing call on this thread; copy it to keep it.
/// Any thread may call this.
#[no_mangle]
pub extern "C" fn ringbroker_last_error_message() -> *const c_char {
    LAST_ERROR
        .try_with(|last| last.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// The name of `status` as the header spells it without the prefix (`"NOT_FOUND"`), or
/// `"UNKNOWN"`. The string is static. Any thread may call this.
#[no_mangle]
pub extern "C" fn ringbroker_status_name(status: StatusCode) -> *const c_char {
    let name: &'static [u8] = match Status::from_i32(status) {
        None => b"UNKNOWN\0",
        Some(status) => match status {
            Status::Ok => b"OK\0",
            Status::Malformed => b"MALFORMED\0",
            Status::FrameTooLarge => b"FRAME_TOO_LARGE\0",
            Status::UnknownOp => b"UNKNOWN_OP\0",
            Status::OutOfState => b"OUT_OF_STATE\0",
            Status::VersionUnsupported => b"VERSION_UNSUPPORTED\0",
            Status::AuthFailed => b"AUTH_FAILED\0",
            Status::NotFound => b"NOT_FOUND\0",
            Status::AlreadyExists => b"ALREADY_EXISTS\0",
            Status::InvalidArgument => b"INVALID_ARGUMENT\0",
            Status::NoResponders => b"NO_RESPONDERS\0",
            Status::Timeout => b"TIMEOUT\0",
            Status::Backpressure => b"BACKPRESSURE\0",
            Status::ShuttingDown => b"SHUTTING_DOWN\0",
            Status::Refused => b"REFUSED\0",
            Status::Locked => b"LOCKED\0",
            Status::Unroutable => b"UNROUTABLE\0",
            Status::SlowConsumer => b"SLOW_CONSUMER\0",
            Status::IdleTimeout => b"IDLE_TIMEOUT\0",
            Status::Internal => b"INTERNAL\0",
            Status::IdInUse => b"ID_IN_USE\0",
            Status::Disconnected => b"DISCONNECTED\0",
            Status::WouldBlock => b"WOULD_BLOCK\0",
            Status::WrongKind => b"WRONG_KIND\0",
        },
    };
    name.as_ptr().cast()
}
