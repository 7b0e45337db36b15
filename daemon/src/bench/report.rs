//! The report of a run: one `Report` with every figure, printed as a table for people
//! or as one JSON object (`--json`; its fields are documented in `bench --help`, and a
//! test keeps the two in step).
//!
//! Owns: the figures' names, units and derivation (throughput over the measured
//! window, percentiles from the HDR histogram). Never: prints a throughput figure for
//! a run that failed verification without saying FAILED next to it.

use std::io::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::options::Plan;
use super::record::Point;
use super::scenarios::Outcome;
use super::target::Target;

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyUs {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl LatencyUs {
    fn of(h: &Histogram<u64>) -> Option<Self> {
        let us = |ns: u64| ns as f64 / 1e3;
        (!h.is_empty()).then(|| Self {
            count: h.len(),
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1e3,
        })
    }
}

/// Every figure of a run (the `--json` object).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// "embedded" or "remote".
    pub target: &'static str,
    /// Remote URL.
    pub url: Option<String>,
    /// Producer threads.
    pub producers: usize,
    /// Consumer threads.
    pub consumers: usize,
    /// Payload bytes.
    pub message_bytes: usize,
    /// Messages per publish.
    pub batch: usize,
    /// Unconfirmed batches per producer.
    pub in_flight: usize,
    /// Queue prefetch.
    pub prefetch: u32,
    /// Stream partitions, stream scenarios only.
    pub partitions: Option<u32>,
    /// ordered-keys keys.
    pub keys: Option<usize>,
    /// Durability policy name.
    pub durability: &'static str,
    /// Requested rate.
    pub rate_limit: Option<f64>,
    /// Duration bound.
    pub duration_s: f64,
    /// Count bound.
    pub count_max: u64,
    /// Measured window.
    pub elapsed_s: f64,
    /// Accepted by the broker.
    pub sent: u64,
    /// Refused with backpressure.
    pub refused: u64,
    /// Completions expected.
    pub expected: u64,
    /// Completions verified.
    pub received: u64,
    /// Never came.
    pub lost: u64,
    /// Came twice.
    pub duplicates: u64,
    /// Out of promised order.
    pub out_of_order: u64,
    /// Misrouted or never sent.
    pub misrouted: u64,
    /// Completions per second in the measured window.
    pub msgs_per_s: f64,
    /// Accepted per second.
    pub sent_per_s: f64,
    /// Completed payload MB/s.
    pub mb_per_s: f64,
    /// What a latency sample is.
    pub latency_kind: Option<&'static str>,
    /// Latency percentiles.
    pub latency_us: Option<LatencyUs>,
    /// User CPU seconds.
    pub cpu_user_s: f64,
    /// System CPU seconds.
    pub cpu_system_s: f64,
    /// Per-interval throughput and latency.
    pub timeline: Vec<Point>,
    /// Verification passed.
    pub passed: bool,
    /// Why not.
    pub failures: Vec<String>,
}

/// Every field name of `Report`, in order.
#[cfg(test)]
const FIELDS: &[&str] = &[
    "scenario",
    "target",
    "url",
    "producers",
    "consumers",
    "message_bytes",
    "batch",
    "in_flight",
    "prefetch",
    "partitions",
    "keys",
    "durability",
    "rate_limit",
    "duration_s",
    "count_max",
    "elapsed_s",
    "sent",
    "refused",
    "expected",
    "received",
    "lost",
    "duplicates",
    "out_of_order",
    "misrouted",
    "msgs_per_s",
    "sent_per_s",
    "mb_per_s",
    "latency_kind",
    "latency_us",
    "cpu_user_s",
    "cpu_system_s",
    "timeline",
    "passed",
    "failures",
];

impl Report {
    /// The report of `outcome`.
    pub fn new(plan: &Plan, target: &Target, outcome: Outcome) -> Self {
        let recorded = outcome.phase.recorded();
        let elapsed_s = (recorded.last_ns as f64 / 1e9).max(1e-9);
        let tally = outcome.tally;
        let streams = plan.scenario.uses_streams();
        let keyed = plan.scenario == super::options::Scenario::OrderedKeys;
        let (user, system) = outcome.phase.cpu;
        Self {
            scenario: plan.scenario.name(),
            target: target.kind(),
            url: plan.url.clone(),
            producers: plan.producers,
            consumers: plan.consumers,
            message_bytes: plan.size,
            batch: plan.batch,
            in_flight: plan.in_flight,
            prefetch: plan.prefetch,
            partitions: streams.then_some(plan.partitions),
            keys: keyed.then_some(plan.keys),
            durability: plan.durability.name(),
            rate_limit: plan.rate,
            duration_s: plan.duration.as_secs_f64(),
            count_max: plan.count_max,
            elapsed_s,
            sent: outcome.sent,
            refused: outcome.refused,
            passed: tally.passed(),
            expected: tally.expected,
            received: tally.received,
            lost: tally.lost,
            duplicates: tally.duplicates,
            out_of_order: tally.out_of_order,
            misrouted: tally.misrouted,
            msgs_per_s: recorded.count as f64 / elapsed_s,
            sent_per_s: outcome.sent as f64 / elapsed_s,
            mb_per_s: recorded.bytes as f64 / elapsed_s / 1e6,
            latency_kind: outcome.latency_kind,
            latency_us: outcome
                .latency_kind
                .and_then(|_| LatencyUs::of(&recorded.latency)),
            cpu_user_s: user.as_secs_f64(),
            cpu_system_s: system.as_secs_f64(),
            timeline: outcome.phase.timeline,
            failures: tally.failures,
        }
    }

    /// The JSON object, one line.
    pub fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }

    /// The table for people.
    pub fn write_table(&self, out: &mut impl Write) -> std::io::Result<()> {
        let verdict = match self.passed {
            true => "passed",
            false => "FAILED",
        };
        writeln!(
            out,
            "ringbrokerd bench {} ({}): {verdict}",
            self.scenario, self.target
        )?;
        writeln!(
            out,
            "  {} producers, {} consumers, {} B messages, batch {}, durability {}",
            self.producers, self.consumers, self.message_bytes, self.batch, self.durability
        )?;
        writeln!(out, "  {:<14} {}", "messages", self.counts())?;
        if self.passed {
            writeln!(
                out,
                "  {:<14} {:.0} msgs/s, {:.1} MB/s over {:.2} s (sent {:.0} msgs/s)",
                "throughput", self.msgs_per_s, self.mb_per_s, self.elapsed_s, self.sent_per_s
            )?;
        } else {
            writeln!(
                out,
                "  {:<14} not reported: verification failed",
                "throughput"
            )?;
        }
        if let (Some(kind), Some(l)) = (self.latency_kind, &self.latency_us) {
            writeln!(
                out,
                "  {:<14} p50 {:.1} · p90 {:.1} · p99 {:.1} · p99.9 {:.1} · max {:.1} µs ({kind})",
                "latency", l.p50, l.p90, l.p99, l.p999, l.max
            )?;
        }
        writeln!(
            out,
            "  {:<14} user {:.2} s, system {:.2} s",
            "cpu", self.cpu_user_s, self.cpu_system_s
        )?;
        for failure in &self.failures {
            writeln!(out, "  failure: {failure}")?;
        }
        Ok(())
    }

    fn counts(&self) -> String {
        let mut line = format!(
            "sent {}, expected {}, received {}",
            self.sent, self.expected, self.received
        );
        for (name, n) in [
            ("refused", self.refused),
            ("lost", self.lost),
            ("duplicates", self.duplicates),
            ("out of order", self.out_of_order),
            ("misrouted", self.misrouted),
        ] {
            if n > 0 {
                line.push_str(&format!(", {name} {n}"));
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_documents_every_json_field() {
        let help = super::super::options::JSON_FIELDS;
        for field in FIELDS {
            let documented = help
                .lines()
                .any(|l| l.split_whitespace().next() == Some(field));
            assert!(documented, "--help does not document {field}");
        }
    }
}
