//! Fuzz target: arbitrary bytes as a stored stream or consumer definition
//! (`StreamConfig::decode`, `ConsumerConfig::decode`), as read from the catalog.
//!
//! What it asserts:
//! - nothing panics and nothing is allocated past the input's own length;
//! - whatever decodes re-encodes to exactly the input bytes (the encoding has one form).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringbroker::stream::{ConsumerConfig, StreamConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = StreamConfig::decode(data) {
        assert_eq!(config.encode(), data);
    }
    if let Ok(config) = ConsumerConfig::decode(data) {
        assert_eq!(config.encode(), data);
    }
});
