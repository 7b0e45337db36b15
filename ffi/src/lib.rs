//! The C ABI of ringbroker (`libringbroker.so`, `libringbroker.a`,
//! `include/ringbroker.h`): one API over an embedded broker and a connection to a
//! `ringbrokerd`, covering subjects, streams, and exchanges with queues.
//!
//! Owns: every `extern "C"` entry point, the C-visible types, and the rules at the
//! boundary: arguments checked before use (`arguments`), every failure a status plus
//! a thread-local message, no panic crossing (`status::guard`). Never: implements
//! broker behaviour: each entry point maps its arguments onto `engine::api`.
//!
//! Layout: `status` (codes, last error, the guard), `arguments` (pointers to
//! references), `copies` (the one copy of a caller's bytes), `config` (key/value settings), `handle` (open, connect, close,
//! completions), `message` (received messages), `consumer` (receiving and
//! acknowledging, every model), `outcomes` (per-item publish results and completions), `subjects`, `streams`, `queues` (each model's calls).
//! docs/c-api.md is the guide; the header is generated from these doc comments.

/// Rust allocations of the library, see the `mimalloc` feature in ffi/Cargo.toml.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod arguments;
pub mod config;
pub mod consumer;
mod copies;
pub mod handle;
pub mod message;
mod outcomes;
pub mod queues;
pub mod status;
pub mod streams;
pub mod subjects;

/// The ABI version: bumped when a signature or a struct layout changes incompatibly.
/// The header's `RINGBROKER_ABI_VERSION` has the same value.
pub const RINGBROKER_ABI_VERSION: u32 = 1;
