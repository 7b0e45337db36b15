//! Shared measurement code for ringbroker's benchmarks: the workloads themselves, so the
//! criterion benches and the `runtime-report` binary measure exactly the same thing.
//!
//! Owns: two-thread queue workloads (our SPSC ring and its baselines) and cross-shard
//! workloads on a real `Runtime`. Never: asserts on timings (figures are reported, not
//! tested; the machines are shared and noisy).

pub mod queues;
pub mod report;
pub mod shards;
pub mod storage;
