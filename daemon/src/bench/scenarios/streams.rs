//! stream-publish, stream-replay and ordered-keys: persistent partitioned streams.
//!
//! Owns: the stream each creates (named after the run's tag, deleted afterwards), the
//! check that acknowledged offsets are distinct and gap-free per partition and match
//! what the stream reports, the read-back after stream-publish, and the consumer group
//! of ordered-keys. Never: counts a record as sent before its acknowledgement.

use std::sync::Arc;

use bytes::Bytes;
use ringbroker::api::{self, BrokerApi};
use ringbroker::stream::{
    AckPolicy, ConsumerConfig, DeliverPolicy, Publish, PublishAck, StreamConfig, ACK_PENDING_LIMIT,
    RECORD_BYTES_LIMIT,
};

use super::{cleaned, Ctx, Outcome};
use crate::bench::flow::Flow;
use crate::bench::options::Plan;
use crate::bench::payload::Stamp;
use crate::bench::phase::{
    self, consume, everything, ConsumerFn, Expect, Phase, ProducerFn, StreamSource,
};
use crate::bench::produce::{publish_confirmed, AnswerTx, Confirmed, Lanes};
use crate::bench::verify::{SeqSet, Tally};
use crate::bench::BenchError;

/// Records a stream consumer may hold untaken (its buffer).
const READ_AHEAD: usize = if ACK_PENDING_LIMIT < 16_384 {
    ACK_PENDING_LIMIT
} else {
    16_384
};
/// The durable consumer group of ordered-keys.
const GROUP: &str = "bench-keys";

/// The stream a run created.
struct BenchStream {
    name: String,
    subject: String,
}

impl BenchStream {
    fn create(ctx: &Ctx<'_>, api: &dyn BrokerApi) -> Result<Self, BenchError> {
        let plan = ctx.plan;
        let name = format!("bench-{}", ctx.tag);
        let pattern = format!("bench.{}.s.>", ctx.tag);
        let config = StreamConfig {
            partitions: plan.partitions,
            durability: plan.durability.durability(),
            max_record_bytes: (plan.size + 4096).clamp(1 << 20, RECORD_BYTES_LIMIT),
            dedup_window: std::time::Duration::ZERO,
            ..StreamConfig::new(&name, &[pattern.as_str()])
        };
        api.create_stream(&config)
            .map_err(|e| BenchError::Setup(format!("create stream: {e}")))?;
        Ok(Self {
            subject: format!("bench.{}.s.x", ctx.tag),
            name,
        })
    }

    /// Acknowledged offsets are exactly `0..n` in each partition, and the stream says
    /// each partition holds `n`.
    fn check_positions(&self, api: &dyn BrokerApi, phase: &Phase, tally: &mut Tally) {
        let mut positions = SeqSet::default();
        for sent in &phase.sent {
            let twice = positions.merge(&sent.positions);
            if twice > 0 {
                tally.fail(format!("{twice} offsets acknowledged to two producers"));
            }
        }
        let counts = positions.lane_lens();
        let (gaps, _) = SeqSet::ranges(&counts).compare(&positions);
        if gaps > 0 {
            tally.fail(format!("acknowledged offsets have {gaps} gaps"));
        }
        let info = match api.stream_info(&self.name) {
            Ok(info) => info,
            Err(e) => return tally.fail(format!("stream info: {e}")),
        };
        for p in &info.partitions {
            let acked = counts.get(p.partition as usize).copied().unwrap_or(0);
            if p.next_offset != acked || p.first_offset != 0 {
                tally.fail(format!(
                    "partition {}: offsets {}..{} stored, {acked} acknowledged",
                    p.partition, p.first_offset, p.next_offset
                ));
            }
        }
    }

    fn delete(&self, api: &dyn BrokerApi) {
        cleaned(&self.name, api.delete_stream(&self.name));
    }
}

/// Publishes records with acknowledgements.
struct StreamPublisher<'a> {
    api: &'a dyn BrokerApi,
    subject: &'a str,
    keyed: bool,
}

impl Confirmed for StreamPublisher<'_> {
    type Ack = PublishAck;

    fn submit(
        &mut self,
        batch: Vec<(Stamp, Bytes)>,
        answers: &AnswerTx<PublishAck>,
    ) -> api::Result<()> {
        let stamps: Vec<Stamp> = batch.iter().map(|(s, _)| *s).collect();
        let records: Vec<Publish> = batch
            .into_iter()
            .map(|(stamp, payload)| {
                let record = Publish::new(self.subject, payload);
                match self.keyed {
                    true => record.key(format!("key-{}", stamp.lane)),
                    false => record,
                }
            })
            .collect();
        let tx = answers.clone();
        let done = Box::new(move |outcomes| {
            // The producer waits on the receiving end; if it is gone the run is over.
            let _ = tx.send((stamps, outcomes));
        });
        self.api.publish_records_with(records, done)
    }

    fn check(&mut self, stamp: Stamp, ack: &PublishAck) -> Result<Option<(u32, u64)>, String> {
        match ack.duplicate {
            true => Err(format!(
                "lane {} seq {} acknowledged as a duplicate",
                stamp.lane, stamp.seq
            )),
            false => Ok(Some((ack.partition, ack.offset))),
        }
    }
}

fn stream_producers<'a>(
    plan: &'a Plan,
    publishers: &'a [Arc<dyn BrokerApi>],
    stream: &'a BenchStream,
    keyed: bool,
    record_acks: bool,
) -> Vec<ProducerFn<'a>> {
    publishers
        .iter()
        .enumerate()
        .map(|(i, api)| {
            Box::new(move |flow: &Flow| {
                let mut model = StreamPublisher {
                    api: api.as_ref(),
                    subject: &stream.subject,
                    keyed,
                };
                let lanes = match keyed {
                    true => Lanes::keys(i, plan.producers, plan.keys),
                    false => Lanes::producer(i),
                };
                publish_confirmed(flow, plan, &mut model, lanes, record_acks)
            }) as ProducerFn<'a>
        })
        .collect()
}

/// An ephemeral reader from offset 0, taking without acknowledgements.
fn reader_config() -> ConsumerConfig {
    ConsumerConfig {
        deliver: DeliverPolicy::All,
        ack: AckPolicy::None,
        max_ack_pending: READ_AHEAD,
        ..ConsumerConfig::default()
    }
}

/// `readers` consumers each reading the whole stream from offset 0, until each has
/// every one of `expected` records (or the drain times out).
fn read_all(
    ctx: &Ctx<'_>,
    stream: &BenchStream,
    readers: usize,
    expected: u64,
) -> Result<Phase, BenchError> {
    let plan = ctx.plan;
    let apis = ctx.connect(readers)?;
    let (flow, intervals) = Flow::new(plan, 0, readers as u64);
    flow.sent
        .store(expected, std::sync::atomic::Ordering::Relaxed);
    let consumers: Vec<ConsumerFn<'_>> = apis
        .iter()
        .enumerate()
        .map(|(i, api)| {
            let expect = Expect {
                ordered: plan.partitions == 1,
                belongs: everything,
                destination: (i, readers),
                latency: false,
            };
            Box::new(move |flow: &Flow| {
                let consumer = api
                    .subscribe_stream(&stream.name, &reader_config())
                    .map_err(|e| format!("subscribe to the stream: {e}"))?;
                consume(flow, plan, StreamSource { consumer }, expect)
            }) as ConsumerFn<'_>
        })
        .collect();
    Ok(phase::run(&flow, &intervals, Vec::new(), consumers))
}

/// Adds each reader of `phase` as a destination that must hold all of `accepted`.
fn tally_readers(tally: &mut Tally, phase: &Phase, accepted: &SeqSet, what: &str) {
    if let Some(failure) = &phase.failure {
        tally.fail(format!("{what}: {failure}"));
    }
    for (i, got) in phase.got.iter().enumerate() {
        let name = format!("{what} {i}");
        tally.destination(&name, accepted, std::slice::from_ref(&got.tracker));
    }
}

/// Durable appends, timed to their acknowledgement; then every record read back.
pub fn publish(ctx: &Ctx<'_>) -> Result<Outcome, BenchError> {
    let plan = ctx.plan;
    let admin = ctx.target.connect()?;
    let stream = BenchStream::create(ctx, admin.as_ref())?;
    let publishers = ctx.connect(plan.producers)?;
    let (flow, intervals) = Flow::new(plan, plan.producers, 1);
    let producers = stream_producers(plan, &publishers, &stream, false, true);
    let phase = phase::run(&flow, &intervals, producers, Vec::new());
    let mut tally = Tally::default();
    stream.check_positions(admin.as_ref(), &phase, &mut tally);
    let (accepted, _) = phase.accepted();
    let read_back = read_all(ctx, &stream, 1, accepted.len())?;
    tally_readers(&mut tally, &read_back, &accepted, "read-back");
    stream.delete(admin.as_ref());
    Ok(Ctx::outcome(phase, tally, Some("publish_to_ack")))
}

/// Fills a stream (not timed), then M readers catch up from offset 0 (timed).
pub fn replay(ctx: &Ctx<'_>) -> Result<Outcome, BenchError> {
    let plan = ctx.plan;
    let admin = ctx.target.connect()?;
    let stream = BenchStream::create(ctx, admin.as_ref())?;
    let publishers = ctx.connect(plan.producers)?;
    let (flow, intervals) = Flow::new(plan, plan.producers, 0);
    let producers = stream_producers(plan, &publishers, &stream, false, false);
    let fill = phase::run(&flow, &intervals, producers, Vec::new());
    let mut tally = Tally::default();
    if let Some(failure) = &fill.failure {
        tally.fail(format!("fill: {failure}"));
    }
    stream.check_positions(admin.as_ref(), &fill, &mut tally);
    let (accepted, refused) = fill.accepted();
    let phase = read_all(ctx, &stream, plan.consumers, accepted.len())?;
    tally_readers(&mut tally, &phase, &accepted, "reader");
    stream.delete(admin.as_ref());
    let mut outcome = Ctx::outcome(phase, tally, None);
    (outcome.sent, outcome.refused) = (accepted.len(), refused);
    Ok(outcome)
}

/// Keyed records, a consumer group of M members; per-key order checked.
pub fn ordered_keys(ctx: &Ctx<'_>) -> Result<Outcome, BenchError> {
    let plan = ctx.plan;
    let admin = ctx.target.connect()?;
    let stream = BenchStream::create(ctx, admin.as_ref())?;
    let group = ConsumerConfig {
        durable: Some(GROUP.to_owned()),
        ..reader_config()
    };
    let setup = |what: &str, e: api::Error| BenchError::Setup(format!("{what}: {e}"));
    admin
        .create_consumer(&stream.name, &group)
        .map_err(|e| setup("create consumer", e))?;
    let members_api = ctx.connect(plan.consumers)?;
    let members = members_api
        .iter()
        .map(|api| api.join(&stream.name, GROUP))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setup("join", e))?;
    let publishers = ctx.connect(plan.producers)?;
    let (flow, intervals) = Flow::new(plan, plan.producers, 1);
    let producers = stream_producers(plan, &publishers, &stream, true, false);
    let consumers: Vec<ConsumerFn<'_>> = members
        .into_iter()
        .enumerate()
        .map(|(i, consumer)| {
            let expect = Expect {
                ordered: true,
                belongs: everything,
                destination: (i, plan.consumers),
                latency: true,
            };
            Box::new(move |flow: &Flow| consume(flow, plan, StreamSource { consumer }, expect))
                as ConsumerFn<'_>
        })
        .collect();
    let phase = phase::run(&flow, &intervals, producers, consumers);
    let mut tally = Tally::default();
    stream.check_positions(admin.as_ref(), &phase, &mut tally);
    let (accepted, _) = phase.accepted();
    let trackers: Vec<_> = phase.got.iter().map(|g| g.tracker.clone()).collect();
    tally.destination("group", &accepted, &trackers);
    cleaned(GROUP, admin.delete_consumer(&stream.name, GROUP));
    stream.delete(admin.as_ref());
    Ok(Ctx::outcome(phase, tally, Some("publish_to_delivery")))
}
