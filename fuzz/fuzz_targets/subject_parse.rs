//! Fuzz target: arbitrary bytes as a publish subject (`pubsub::Subject::new`, the check
//! every subject from a client passes) and as a pattern in both wildcard syntaxes
//! (`routing::Pattern::parse`).
//!
//! What it asserts:
//! - nothing panics, whatever the bytes;
//! - an accepted subject is valid UTF-8 within the length and token bounds, and as a
//!   pattern (it has no wildcards) it matches itself, in the matcher and in the naive
//!   reference alike;
//! - an accepted pattern has at most `SUBJECT_TOKENS_MAX` tokens.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringbroker::pubsub::Subject;
use ringbroker::routing::{
    naive_match, Matcher, Pattern, Syntax, SUBJECT_BYTES_MAX, SUBJECT_TOKENS_MAX,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(subject) = Subject::new(Bytes::copy_from_slice(data)) {
        let text = subject.as_str();
        assert!(text.len() <= SUBJECT_BYTES_MAX);
        assert!(text.split('.').count() <= SUBJECT_TOKENS_MAX);
        let pattern = Pattern::parse(text, Syntax::Subjects).expect("a subject is a pattern");
        assert!(!pattern.has_wildcards());
        assert!(naive_match(&pattern, text));
        let mut matcher = Matcher::new();
        matcher.insert(&pattern, 1u8);
        assert_eq!(&matcher.matches(text)[..], &[1u8]);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        for syntax in [Syntax::Subjects, Syntax::Topic] {
            if let Ok(pattern) = Pattern::parse(text, syntax) {
                assert!(pattern.tokens().len() <= SUBJECT_TOKENS_MAX);
            }
        }
    }
});
