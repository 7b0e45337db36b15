//! The eight scenarios: each declares what it needs on the broker, runs a measured
//! phase with the shared producer and consumer loops, and says what every destination
//! should have received. `subjects` has pubsub and request-reply, `queues` the three
//! exchange scenarios, `streams` the three stream scenarios.
//!
//! Owns: names of what a run creates (unique per run, so a remote daemon's other data
//! is never touched; deleted afterwards) and the `Outcome` a scenario hands to the
//! report. Never: prints (the report does).

mod queues;
mod streams;
mod subjects;

use std::sync::Arc;

use ringbroker::api::BrokerApi;

use super::options::{Plan, Scenario};
use super::phase::Phase;
use super::target::Target;
use super::verify::Tally;
use super::BenchError;

/// What a scenario measured and found.
pub struct Outcome {
    /// The measured phase.
    pub phase: Phase,
    /// The verdict's figures.
    pub tally: Tally,
    /// Messages the broker accepted.
    pub sent: u64,
    /// Messages it refused with backpressure.
    pub refused: u64,
    /// What a latency sample is, if the scenario has them.
    pub latency_kind: Option<&'static str>,
}

/// A run's broker and plan.
pub struct Ctx<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// The broker.
    pub target: &'a Target,
    /// Unique to this run: `<pid>x<start time in ms, base 36>`.
    pub tag: String,
}

impl<'a> Ctx<'a> {
    /// A context with a fresh tag.
    pub fn new(plan: &'a Plan, target: &'a Target) -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            plan,
            target,
            tag: format!("{}x{ms}", std::process::id()),
        }
    }

    /// `n` handles: the shared broker, or `n` connections.
    pub fn connect(&self, n: usize) -> Result<Vec<Arc<dyn BrokerApi>>, BenchError> {
        (0..n).map(|_| self.target.connect()).collect()
    }

    /// Produces the scenario's outcome from a finished phase and a tally.
    fn outcome(phase: Phase, mut tally: Tally, latency_kind: Option<&'static str>) -> Outcome {
        let (accepted, refused) = phase.accepted();
        if let Some(failure) = &phase.failure {
            // The first thing that went wrong leads the list.
            tally.failures.insert(0, failure.clone());
        }
        Outcome {
            sent: accepted.len(),
            refused,
            phase,
            tally,
            latency_kind,
        }
    }
}

/// Runs `ctx.plan`'s scenario.
pub fn run(ctx: &Ctx<'_>) -> Result<Outcome, BenchError> {
    match ctx.plan.scenario {
        Scenario::Pubsub => subjects::pubsub(ctx),
        Scenario::RequestReply => subjects::request_reply(ctx),
        Scenario::WorkQueue => queues::work_queue(ctx),
        Scenario::FanoutExchange => queues::fanout(ctx),
        Scenario::TopicRouting => queues::topic(ctx),
        Scenario::StreamPublish => streams::publish(ctx),
        Scenario::StreamReplay => streams::replay(ctx),
        Scenario::OrderedKeys => streams::ordered_keys(ctx),
    }
}

/// Reports a cleanup failure on stderr; the measurement stands.
fn cleaned(what: &str, result: ringbroker::api::Result<impl Sized>) {
    if let Err(error) = result {
        eprintln!("ringbrokerd bench: cannot remove {what}: {error}");
    }
}
