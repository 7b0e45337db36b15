//! Arguments from C: pointers checked for NULL, strings for UTF-8, lengths bounded,
//! before anything is read through them.
//!
//! Owns: the one place raw pointers from callers become references. Never: keeps a
//! reference past the call (every borrowed slice and string lives only as long as the
//! entry point that took it).

use std::ffi::{c_char, CStr};

use crate::status::Failure;

/// The most bytes one argument (a payload, a key, a header value) may have: larger
/// lengths are taken for a caller's bug, not a message.
pub const RINGBROKER_ARGUMENT_BYTES_MAX: usize = 1 << 30;
/// The most items one batch argument (records, messages, headers) may have.
pub const RINGBROKER_BATCH_MAX: usize = 1 << 20;

/// `ptr` as a reference, or `InvalidArgument` naming `what` if it is NULL.
///
/// # Safety
/// A non-NULL `ptr` must point to a live, properly aligned `T` for the call.
pub unsafe fn reference<'a, T>(ptr: *const T, what: &str) -> Result<&'a T, Failure> {
    // SAFETY: the caller promises a non-NULL `ptr` is valid; NULL is checked here.
    unsafe { ptr.as_ref() }.ok_or_else(|| Failure::invalid(format!("{what} is NULL")))
}

/// `ptr` as a mutable reference (an out-parameter), or `InvalidArgument` if NULL.
///
/// # Safety
/// A non-NULL `ptr` must point to writable memory for a `T`, not aliased for the call.
pub unsafe fn out_param<'a, T>(ptr: *mut T, what: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: as above, for a writable pointer.
    unsafe { ptr.as_mut() }.ok_or_else(|| Failure::invalid(format!("{what} is NULL")))
}

/// A NUL-terminated UTF-8 string, or `InvalidArgument` naming `what`.
///
/// # Safety
/// A non-NULL `ptr` must point to a NUL-terminated string live for the call.
pub unsafe fn string<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated, as the caller promises.
    let text = unsafe { CStr::from_ptr(ptr) };
    text.to_str()
        .map_err(|_| Failure::invalid(format!("{what} is not UTF-8")))
}

/// An optional string: NULL is `None`.
///
/// # Safety
/// As `string`.
pub unsafe fn optional_string<'a>(
    ptr: *const c_char,
    what: &str,
) -> Result<Option<&'a str>, Failure> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded from the caller.
    unsafe { string(ptr, what) }.map(Some)
}

/// `len` bytes at `ptr` (NULL allowed when `len` is 0), bounded by
/// `RINGBROKER_ARGUMENT_BYTES_MAX`.
///
/// # Safety
/// A non-NULL `ptr` must point to `len` readable bytes live for the call.
pub unsafe fn bytes<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::invalid(format!(
            "{what} is NULL with length {len}"
        )));
    }
    if len > RINGBROKER_ARGUMENT_BYTES_MAX {
        return Err(Failure::invalid(format!(
            "{what} is {len} bytes; at most {RINGBROKER_ARGUMENT_BYTES_MAX}"
        )));
    }
    // SAFETY: non-NULL, `len` readable bytes as the caller promises, and `len` is far
    // below isize::MAX.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// `len` items at `ptr` (NULL allowed when `len` is 0), bounded by `RINGBROKER_BATCH_MAX`.
///
/// # Safety
/// A non-NULL `ptr` must point to `len` initialized `T`s live for the call.
pub unsafe fn items<'a, T>(ptr: *const T, len: usize, what: &str) -> Result<&'a [T], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL with {len} items")));
    }
    if len > RINGBROKER_BATCH_MAX {
        return Err(Failure::invalid(format!(
            "{what} has {len} items; at most {RINGBROKER_BATCH_MAX}"
        )));
    }
    // SAFETY: non-NULL, `len` initialized items as the caller promises; the bound keeps
    // the size far below isize::MAX for any T used here.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A timeout in milliseconds; negative means "as long as it takes" (capped at a
/// year, as the engine caps waits).
pub fn timeout(ms: i64) -> std::time::Duration {
    const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
    match u64::try_from(ms) {
        Ok(ms) => std::time::Duration::from_millis(ms.min(YEAR_MS)),
        Err(_) => std::time::Duration::from_millis(YEAR_MS),
    }
}
