//! Durable storage: the record batch format, partition logs of segments, group commit,
//! recovery. (Issue #4, being built in steps; see docs/storage.md.)
//!
//! Owns: everything on disk. Never: imports network or model code; never acknowledges
//! a record as durable before the sync that covers it has completed.

pub mod codec;
