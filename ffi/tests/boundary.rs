//! The rules at the boundary, from Rust: a panic inside an entry point's body comes
//! out as `RINGBROKER_INTERNAL` with the panic's message, statuses keep the wire's
//! numbers, and the status names cover every status.

use std::ffi::CStr;

use engine::protocol::ErrorCode;
use ringbroker::status::{
    guard, ringbroker_last_error_message, ringbroker_status_name, Failure, Status,
    RINGBROKER_INTERNAL, RINGBROKER_INVALID_ARGUMENT, RINGBROKER_OK,
};

fn last_error() -> String {
    // SAFETY: the library returns a NUL-terminated string valid until the next failure
    // on this thread; it is copied at once.
    unsafe { CStr::from_ptr(ringbroker_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_panic_in_an_entry_point_returns_internal_with_its_message() {
    let status = guard(|| panic!("forced for the test"));
    assert_eq!(status, RINGBROKER_INTERNAL);
    assert!(
        last_error().contains("forced for the test"),
        "{}",
        last_error()
    );
    let formatted = guard(|| panic!("{} {}", "with", 42));
    assert_eq!(formatted, RINGBROKER_INTERNAL);
    assert!(last_error().contains("with 42"), "{}", last_error());
    // The boundary still works after a panic.
    assert_eq!(guard(|| Ok(())), RINGBROKER_OK);
}

#[test]
fn a_failure_sets_the_threads_message_and_success_leaves_it() {
    let status = guard(|| Err(Failure::invalid("the widget is NULL")));
    assert_eq!(status, RINGBROKER_INVALID_ARGUMENT);
    assert_eq!(last_error(), "the widget is NULL");
    assert_eq!(guard(|| Ok(())), RINGBROKER_OK);
    assert_eq!(last_error(), "the widget is NULL");
    let other = std::thread::spawn(last_error).join().expect("thread");
    assert_eq!(other, "", "messages are per thread");
}

#[test]
fn statuses_keep_the_wire_numbers_and_have_names() {
    for code in ErrorCode::ALL {
        let status = Status::from_code(*code);
        assert_eq!(status.code(), *code as i32, "{code}");
    }
    for status in Status::ALL {
        // SAFETY: status names are static NUL-terminated strings.
        let name = unsafe { CStr::from_ptr(ringbroker_status_name(status.code())) };
        assert_ne!(name.to_str().expect("ascii"), "UNKNOWN", "{status:?}");
        assert_eq!(Status::from_i32(status.code()), Some(status));
    }
    // SAFETY: as above.
    let unknown = unsafe { CStr::from_ptr(ringbroker_status_name(7777)) };
    assert_eq!(unknown.to_str().expect("ascii"), "UNKNOWN");
}
