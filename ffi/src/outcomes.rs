//! Per-item outcomes of a batch publish as C sees them: written into the caller's
//! array by the blocking publishes, or queued on the handle as completions by the
//! asynchronous ones (asynchronous requests use `failed` too). Streams and exchanges share this; each says only how one
//! successful item fills its C struct.
//!
//! Owns: the status of a failed item, the first failure of a batch, and the building
//! of completions. Never: publishes, or reorders a batch's outcomes (item `i` of the
//! answer is item `i` of the request).

use std::ffi::CString;

use crate::handle::{Completion, Done};
use crate::status::{Failure, Status, StatusCode};

/// The status a failed item reports.
pub(crate) fn status_of(error: &engine::api::Error) -> StatusCode {
    Status::from_code(error.code).code()
}

/// Writes `to_c(outcome)` for every outcome into `out` (skipped when `out` is NULL)
/// and returns the first failure, if any. An answer with another number of outcomes
/// than the `count` items asked is the engine's bug: `INTERNAL`, nothing written.
///
/// # Safety
/// `out` is NULL or has room for `count` values.
pub(crate) unsafe fn write_each<T, R>(
    outcomes: &[engine::api::Result<T>],
    out: *mut R,
    count: usize,
    to_c: impl Fn(&engine::api::Result<T>) -> R,
) -> Result<(), Failure> {
    if outcomes.len() != count {
        return Err(Failure::new(
            Status::Internal,
            format!("{} outcomes for {count} items", outcomes.len()),
        ));
    }
    let mut first_failure = None;
    for (i, outcome) in outcomes.iter().enumerate() {
        if !out.is_null() {
            // SAFETY: `i < outcomes.len() == count`, the room the caller promised.
            unsafe { out.add(i).write(to_c(outcome)) };
        }
        if let (None, Err(e)) = (&first_failure, outcome) {
            first_failure = Some(Failure::from(e.clone()));
        }
    }
    first_failure.map_or(Ok(()), Err)
}

/// One completion per item of an asynchronous publish of `count` items tagged
/// `token`: a whole-batch failure becomes that failure for every item; `fill` sets
/// what a successful item reports.
pub(crate) fn completions<T>(
    token: u64,
    outcomes: engine::api::Result<Vec<engine::api::Result<T>>>,
    count: usize,
    fill: impl Fn(&T, &mut Completion),
) -> Vec<Done> {
    let each: Vec<engine::api::Result<T>> = match outcomes {
        Ok(each) => each,
        Err(e) => (0..count).map(|_| Err(e.clone())).collect(),
    };
    each.iter()
        .enumerate()
        .map(|(i, outcome)| {
            let mut completion = Completion::ok(token, u32::try_from(i).unwrap_or(u32::MAX));
            match outcome {
                Ok(value) => {
                    fill(value, &mut completion);
                    Done {
                        completion,
                        message: None,
                        reply: None,
                    }
                }
                Err(e) => failed(completion, e),
            }
        })
        .collect()
}

/// `completion` turned into a failure with `error`'s status and message.
pub(crate) fn failed(mut completion: Completion, error: &engine::api::Error) -> Done {
    completion.status = status_of(error);
    Done {
        completion,
        message: Some(CString::new(error.message.replace('\0', " ")).unwrap_or_default()),
        reply: None,
    }
}
