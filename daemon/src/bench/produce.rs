//! The producer loops every scenario shares: fire-and-forget subject batches,
//! sequential requests, and pipelined confirmed publishes (exchanges and streams alike:
//! a window of batches in flight, each answered by a callback that only forwards the
//! outcomes to the producer thread).
//!
//! Owns: the lanes a producer stamps (its own index, or the keys it owns), claiming
//! messages from the run's bounds, pacing, and counting what the broker accepted or
//! refused. Never: blocks in a broker callback, or counts a message as sent before
//! the broker accepted it.

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use ringbroker::api::{self, BrokerApi};
use ringbroker::protocol::ErrorCode;
use ringbroker::pubsub::{Message, Subject};

use super::flow::{Flow, Pacer};
use super::options::Plan;
use super::payload::{self, PayloadWriter, Stamp};
use super::phase::Sent;
use super::record::Recorder;
use super::verify::Tracker;

/// The longest pause before retrying a publish the broker refused with backpressure.
const RETRY_PAUSE: Duration = Duration::from_micros(200);
/// How long a request waits for its reply.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a producer waits for one batch's confirm before the run fails.
const CONFIRM_WAIT_MAX: Duration = Duration::from_secs(30);

/// The lanes one producer stamps, round robin, each with its own sequence.
pub struct Lanes {
    lanes: Vec<u16>,
    next_seq: Vec<u64>,
    turn: usize,
}

impl Lanes {
    /// Producer `index`'s one lane.
    pub fn producer(index: usize) -> Self {
        Self::of(vec![index as u16])
    }

    /// The keys producer `index` of `producers` owns: every key `k` with
    /// `k % producers == index` (so each key has one producer and one order).
    pub fn keys(index: usize, producers: usize, keys: usize) -> Self {
        Self::of((index..keys).step_by(producers).map(|k| k as u16).collect())
    }

    fn of(lanes: Vec<u16>) -> Self {
        assert!(!lanes.is_empty());
        Self {
            next_seq: vec![0; lanes.len()],
            lanes,
            turn: 0,
        }
    }

    /// The next (lane, seq).
    pub fn next(&mut self) -> (u16, u64) {
        let i = self.turn;
        self.turn = (self.turn + 1) % self.lanes.len();
        let seq = self.next_seq[i];
        self.next_seq[i] += 1;
        (self.lanes[i], seq)
    }
}

/// Stamps `n` payloads from `lanes`, sent now.
pub fn stamped(
    flow: &Flow,
    writer: &mut PayloadWriter,
    lanes: &mut Lanes,
    n: u64,
) -> Vec<(Stamp, Bytes)> {
    let sent_ns = flow.origin.elapsed().as_nanos() as u64;
    (0..n)
        .map(|_| {
            let (lane, seq) = lanes.next();
            let stamp = Stamp { lane, seq, sent_ns };
            (stamp, writer.payload(stamp))
        })
        .collect()
}

fn backpressure(error: &api::Error) -> bool {
    error.code == ErrorCode::Backpressure
}

/// Runs a producer body; a failure stops the run, and what was sent until then is
/// still returned (the consumers may have it).
fn keeping(
    flow: &Flow,
    body: impl FnOnce(&mut Sent) -> Result<(), String>,
) -> Result<Sent, String> {
    let mut sent = Sent::default();
    if let Err(why) = body(&mut sent) {
        flow.fail(why);
    }
    Ok(sent)
}

/// Fire-and-forget batches on `subject` until the run's bounds.
pub fn publish_subjects(
    flow: &Flow,
    plan: &Plan,
    api: &dyn BrokerApi,
    subject: &Subject,
    index: usize,
) -> Result<Sent, String> {
    keeping(flow, |sent| {
        publish_subjects_into(flow, plan, api, subject, index, sent)
    })
}

fn publish_subjects_into(
    flow: &Flow,
    plan: &Plan,
    api: &dyn BrokerApi,
    subject: &Subject,
    index: usize,
    sent: &mut Sent,
) -> Result<(), String> {
    let mut lanes = Lanes::producer(index);
    let mut writer = PayloadWriter::new(plan.size);
    let mut pacer = Pacer::new(plan.rate, plan.producers);
    loop {
        let n = flow.claim(plan.batch as u64);
        if n == 0 || !pacer.pace(n, flow) {
            return Ok(());
        }
        let batch = stamped(flow, &mut writer, &mut lanes, n);
        let stamps: Vec<Stamp> = batch.iter().map(|(s, _)| *s).collect();
        let mut messages: Vec<Message> = batch
            .into_iter()
            .map(|(_, payload)| Message::new(subject.clone(), payload))
            .collect();
        loop {
            match api.publish_batch(messages) {
                Ok(()) => break,
                Err(e) if backpressure(&e) && flow.stopped() => return Ok(()),
                Err(e) if backpressure(&e) => {
                    std::thread::sleep(RETRY_PAUSE);
                    messages = rebuild(subject, &stamps, plan.size);
                }
                Err(e) => return Err(format!("publish: {e}")),
            }
        }
        for s in &stamps {
            sent.accepted.insert(s.lane, s.seq);
        }
        flow.sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The same messages again (a refused batch was consumed by the call).
fn rebuild(subject: &Subject, stamps: &[Stamp], size: usize) -> Vec<Message> {
    let mut writer = PayloadWriter::new(size);
    stamps
        .iter()
        .map(|s| Message::new(subject.clone(), writer.payload(*s)))
        .collect()
}

/// Sequential requests on `subject`, each reply checked to echo its request.
pub fn request_replies(
    flow: &Flow,
    plan: &Plan,
    api: &dyn BrokerApi,
    subject: &str,
    index: usize,
) -> Result<Sent, String> {
    let mut lanes = Lanes::producer(index);
    let mut writer = PayloadWriter::new(plan.size);
    let mut pacer = Pacer::new(plan.rate, plan.producers);
    let mut recorder = flow.recorder();
    let mut tracker = Tracker::new(true);
    let mut sent = Sent::default();
    while flow.claim(1) == 1 && pacer.pace(1, flow) {
        let Some((stamp, body)) = stamped(flow, &mut writer, &mut lanes, 1).pop() else {
            break;
        };
        let reply = api
            .request(subject, body, REQUEST_TIMEOUT)
            .map_err(|e| format!("request lane {} seq {}: {e}", stamp.lane, stamp.seq))?;
        let now = recorder.now_ns();
        sent.accepted.insert(stamp.lane, stamp.seq);
        flow.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let echoed = payload::read(&reply.payload, plan.size).map_err(|e| e.to_string())?;
        if echoed != stamp {
            let why = format!("reply {echoed:?} to request {stamp:?}");
            tracker.misroute(|| why);
        } else if tracker.take(stamp.lane, stamp.seq, false) {
            recorder.record(
                now,
                Some(now.saturating_sub(stamp.sent_ns)),
                reply.payload.len(),
            );
        }
    }
    sent.recorded = Some(recorder.finish());
    sent.tracker = Some(tracker);
    Ok(sent)
}

/// Outcomes of one submitted batch: its stamps, and the broker's answer.
pub type Answered<T> = (Vec<Stamp>, api::Result<Vec<api::Result<T>>>);
/// Where a broker callback sends a batch's answer.
pub type AnswerTx<T> = mpsc::Sender<Answered<T>>;

/// How a pipelined producer talks to one model.
pub trait Confirmed: Send {
    /// The per-message confirm (`u32` queues reached, or a `PublishAck`).
    type Ack: Send + 'static;
    /// Submits `batch`; the callback must send its answer on `answers` with `stamps`.
    fn submit(
        &mut self,
        batch: Vec<(Stamp, Bytes)>,
        answers: &AnswerTx<Self::Ack>,
    ) -> api::Result<()>;
    /// Checks one message's confirm; returns its stored position (partition, offset)
    /// when the model has positions.
    fn check(&mut self, stamp: Stamp, ack: &Self::Ack) -> Result<Option<(u32, u64)>, String>;
}

/// Pipelined confirmed publishes: up to `--in-flight` batches unconfirmed; with
/// `record_acks`, each confirm is a completion with publish → confirm latency.
pub fn publish_confirmed<C: Confirmed>(
    flow: &Flow,
    plan: &Plan,
    model: &mut C,
    lanes: Lanes,
    record_acks: bool,
) -> Result<Sent, String> {
    let mut recorder = record_acks.then(|| flow.recorder());
    let mut sent = keeping(flow, |sent| {
        confirmed_into(flow, plan, model, lanes, recorder.as_mut(), sent)
    })?;
    sent.recorded = recorder.map(|r| r.finish());
    Ok(sent)
}

fn confirmed_into<C: Confirmed>(
    flow: &Flow,
    plan: &Plan,
    model: &mut C,
    mut lanes: Lanes,
    mut recorder: Option<&mut Recorder>,
    sent: &mut Sent,
) -> Result<(), String> {
    let mut writer = PayloadWriter::new(plan.size);
    let mut pacer = Pacer::new(plan.rate, plan.producers);
    let (tx, rx) = mpsc::channel::<Answered<C::Ack>>();
    let mut in_flight = 0usize;
    let mut publishing = true;
    while publishing || in_flight > 0 {
        if publishing && in_flight < plan.in_flight {
            let n = flow.claim(plan.batch as u64);
            if n == 0 || !pacer.pace(n, flow) {
                publishing = false;
                continue;
            }
            let batch = stamped(flow, &mut writer, &mut lanes, n);
            if !submit_retrying(flow, model, batch, &tx)? {
                publishing = false;
                continue;
            }
            in_flight += 1;
            continue;
        }
        let answered = rx
            .recv_timeout(CONFIRM_WAIT_MAX)
            .map_err(|_| format!("no confirm within {CONFIRM_WAIT_MAX:?}"))?;
        in_flight -= 1;
        confirm_batch(flow, plan, model, answered, recorder.as_deref_mut(), sent)?;
    }
    Ok(())
}

/// Counts one batch's confirms.
fn confirm_batch<C: Confirmed>(
    flow: &Flow,
    plan: &Plan,
    model: &mut C,
    (stamps, outcomes): Answered<C::Ack>,
    mut recorder: Option<&mut Recorder>,
    sent: &mut Sent,
) -> Result<(), String> {
    let outcomes = outcomes.map_err(|e| format!("publish: {e}"))?;
    if outcomes.len() != stamps.len() {
        let (got, want) = (outcomes.len(), stamps.len());
        return Err(format!("{got} confirms for a batch of {want}"));
    }
    let now = recorder.as_ref().map_or(0, |r| r.now_ns());
    for (stamp, outcome) in stamps.into_iter().zip(outcomes) {
        let ack = match outcome {
            Ok(ack) => ack,
            Err(e) if backpressure(&e) => {
                sent.refused += 1;
                continue;
            }
            Err(e) => {
                return Err(format!(
                    "publish lane {} seq {}: {e}",
                    stamp.lane, stamp.seq
                ))
            }
        };
        if let Some((partition, offset)) = model.check(stamp, &ack)? {
            if !sent.positions.insert(partition as u16, offset) {
                return Err(format!(
                    "offset {offset} of partition {partition} acknowledged twice"
                ));
            }
        }
        sent.accepted.insert(stamp.lane, stamp.seq);
        flow.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(r) = recorder.as_mut() {
            r.record(now, Some(now.saturating_sub(stamp.sent_ns)), plan.size);
        }
    }
    Ok(())
}

/// Submits a batch, retrying while the broker pushes back; false if the run stopped
/// first (the batch was never accepted).
fn submit_retrying<C: Confirmed>(
    flow: &Flow,
    model: &mut C,
    batch: Vec<(Stamp, Bytes)>,
    tx: &AnswerTx<C::Ack>,
) -> Result<bool, String> {
    loop {
        match model.submit(batch.clone(), tx) {
            Ok(()) => return Ok(true),
            Err(e) if backpressure(&e) && flow.stopped() => return Ok(false),
            Err(e) if backpressure(&e) => std::thread::sleep(RETRY_PAUSE),
            Err(e) => return Err(format!("publish: {e}")),
        }
    }
}
