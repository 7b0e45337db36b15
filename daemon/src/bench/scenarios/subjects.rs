//! pubsub and request-reply: the subjects model, at most once.
//!
//! Owns: their subjects (`bench.<tag>.pubsub`, `bench.<tag>.rpc`), the subscribers,
//! the responders, and what each subscriber must have received. Never: retries a
//! message that was dropped (that is the loss the run reports).

use std::sync::Arc;

use ringbroker::api::{BrokerApi, SubscriptionApi};
use ringbroker::protocol::ErrorCode;
use ringbroker::pubsub::{Message, Subject};

use super::{Ctx, Outcome};
use crate::bench::flow::Flow;
use crate::bench::phase::{
    self, consume, everything, ConsumerFn, Expect, Got, ProducerFn, SubscriptionSource,
    RECEIVE_WAIT,
};
use crate::bench::produce::{publish_subjects, request_replies};
use crate::bench::record::Recorded;
use crate::bench::verify::{Tally, Tracker};
use crate::bench::BenchError;

fn setup(what: &str) -> impl FnOnce(ringbroker::api::Error) -> BenchError + '_ {
    move |e| BenchError::Setup(format!("{what}: {e}"))
}

/// N publishers, M subscribers each getting every message.
pub fn pubsub(ctx: &Ctx<'_>) -> Result<Outcome, BenchError> {
    let plan = ctx.plan;
    let text = format!("bench.{}.pubsub", ctx.tag);
    let subject = Subject::try_from(text.clone()).map_err(|e| BenchError::Setup(e.to_string()))?;
    let subscribers = ctx.connect(plan.consumers)?;
    let subscriptions = subscribers
        .iter()
        .map(|api| api.subscribe(&text, None))
        .collect::<Result<Vec<_>, _>>()
        .map_err(setup("subscribe"))?;
    let publishers = ctx.connect(plan.producers)?;
    let (flow, intervals) = Flow::new(plan, plan.producers, plan.consumers as u64);
    let producers: Vec<ProducerFn<'_>> = publishers
        .iter()
        .enumerate()
        .map(|(i, api)| {
            let subject = &subject;
            Box::new(move |flow: &Flow| publish_subjects(flow, plan, api.as_ref(), subject, i))
                as ProducerFn<'_>
        })
        .collect();
    let consumers: Vec<ConsumerFn<'_>> = subscriptions
        .into_iter()
        .enumerate()
        .map(|(i, subscription)| {
            let source = SubscriptionSource::new(subscription, plan.allow_loss);
            let expect = Expect {
                ordered: true,
                belongs: everything,
                destination: (i, plan.consumers),
                latency: true,
            };
            Box::new(move |flow: &Flow| consume(flow, plan, source, expect)) as ConsumerFn<'_>
        })
        .collect();
    let phase = phase::run(&flow, &intervals, producers, consumers);
    let (accepted, _) = phase.accepted();
    let mut tally = Tally {
        loss_allowed: plan.allow_loss,
        ..Tally::default()
    };
    for (i, got) in phase.got.iter().enumerate() {
        let name = format!("subscriber {i}");
        tally.destination(&name, &accepted, std::slice::from_ref(&got.tracker));
        tally.dropped += got.dropped;
    }
    if tally.lost > 0 && phase.failure.is_none() {
        let note = format!(
            "at-most-once loss of {} deliveries: subjects drop when a subscriber or its \
             connection falls behind (subscriptions counted {} drops; a server's drops show \
             in its /metrics); lower --rate, or pass --allow-loss to report loss without failing",
            tally.lost, tally.dropped
        );
        match plan.allow_loss {
            true => eprintln!("ringbrokerd bench: {note}"),
            false => tally.fail(note),
        }
    }
    Ok(Ctx::outcome(phase, tally, Some("publish_to_delivery")))
}

/// Answers requests on its subscription until the run stops.
fn respond(flow: &Flow, api: &dyn BrokerApi, sub: &dyn SubscriptionApi) -> Result<Got, String> {
    while !flow.stopped() {
        let request = match sub.next(RECEIVE_WAIT) {
            Ok(m) => m,
            Err(e) if e.code == ErrorCode::Timeout => continue,
            Err(e) => return Err(format!("responder: {e}")),
        };
        let Some(reply) = request.reply else {
            return Err("responder: a request without a reply subject".into());
        };
        api.publish(Message::new(reply, request.payload))
            .map_err(|e| format!("reply: {e}"))?;
    }
    Ok(Got {
        tracker: Tracker::new(false),
        recorded: Recorded::empty(),
        dropped: sub.dropped(),
    })
}

/// N requesters, one request at a time each; M responders in one queue group.
pub fn request_reply(ctx: &Ctx<'_>) -> Result<Outcome, BenchError> {
    let plan = ctx.plan;
    let subject = format!("bench.{}.rpc", ctx.tag);
    let responders = ctx.connect(plan.consumers)?;
    let subscriptions = responders
        .iter()
        .map(|api| api.subscribe(&subject, Some("responders")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(setup("subscribe"))?;
    let requesters = ctx.connect(plan.producers)?;
    let (flow, intervals) = Flow::new(plan, plan.producers, 1);
    let producers: Vec<ProducerFn<'_>> = requesters
        .iter()
        .enumerate()
        .map(|(i, api)| {
            let subject = subject.as_str();
            Box::new(move |flow: &Flow| request_replies(flow, plan, api.as_ref(), subject, i))
                as ProducerFn<'_>
        })
        .collect();
    let consumers: Vec<ConsumerFn<'_>> = responders
        .iter()
        .zip(&subscriptions)
        .map(|(api, sub): (&Arc<dyn BrokerApi>, _)| {
            Box::new(move |flow: &Flow| respond(flow, api.as_ref(), sub.as_ref())) as ConsumerFn<'_>
        })
        .collect();
    let phase = phase::run(&flow, &intervals, producers, consumers);
    let mut tally = Tally::default();
    for (i, sent) in phase.sent.iter().enumerate() {
        let trackers: Vec<Tracker> = sent.tracker.iter().cloned().collect();
        tally.destination(&format!("requester {i}"), &sent.accepted, &trackers);
    }
    Ok(Ctx::outcome(phase, tally, Some("request_to_reply")))
}
