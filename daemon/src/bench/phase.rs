//! One measured phase: producer and consumer threads around a `Flow`, watched from the
//! calling thread; and the consume loop every scenario's consumers share, over the
//! three kinds of receiving handle (subscription, queue consumer, stream consumer).
//!
//! Owns: spawning and joining the phase's threads (a thread's error or panic fails the
//! run, it never hangs it), the CPU time of the phase, and how each kind of handle
//! receives and acknowledges. Never: decides what a scenario expects.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ringbroker::api::{QueueConsumerApi, StreamConsumerApi, SubscriptionApi};
use ringbroker::protocol::ErrorCode;
use ringbroker::pubsub::Message;

use super::flow::Flow;
use super::options::Plan;
use super::payload::{self, Stamp};
use super::record::{cpu_time, timeline, Point, Recorded, Recorder};
use super::verify::{SeqSet, Tracker};

/// How long one receive waits before the loop looks at the stop flag again.
pub const RECEIVE_WAIT: Duration = Duration::from_millis(20);
/// Receipts a subscription consumer takes between two looks at its drop counter.
const DROP_CHECK_EVERY: u64 = 4096;
/// The longest a subscription consumer goes without looking at its drop counter.
const DROP_CHECK_PERIOD: Duration = Duration::from_millis(50);

/// What a producer thread did.
#[derive(Default)]
pub struct Sent {
    /// What the broker accepted, per (lane, seq).
    pub accepted: SeqSet,
    /// Messages it refused with backpressure.
    pub refused: u64,
    /// Completions measured on the producer side (acks, replies), if any.
    pub recorded: Option<Recorded>,
    /// Replies checked (request-reply).
    pub tracker: Option<Tracker>,
    /// Stream positions acknowledged: lane = partition, seq = offset.
    pub positions: SeqSet,
}

/// What a consumer thread did.
pub struct Got {
    /// Its receipts.
    pub tracker: Tracker,
    /// Its completions' latency and counts.
    pub recorded: Recorded,
    /// Messages its subscription dropped (at most once), if it is one.
    pub dropped: u64,
}

/// Everything a phase produced.
pub struct Phase {
    /// Per producer.
    pub sent: Vec<Sent>,
    /// Per consumer.
    pub got: Vec<Got>,
    /// Throughput and latency per interval.
    pub timeline: Vec<Point>,
    /// User and system CPU time of the process during the phase.
    pub cpu: (Duration, Duration),
    /// Why a thread failed, if one did.
    pub failure: Option<String>,
}

/// A producer's body.
pub type ProducerFn<'a> = Box<dyn FnOnce(&Flow) -> Result<Sent, String> + Send + 'a>;
/// A consumer's body.
pub type ConsumerFn<'a> = Box<dyn FnOnce(&Flow) -> Result<Got, String> + Send + 'a>;

/// Runs `producers` and `consumers` under `flow` until `Flow::watch` ends it.
pub fn run(
    flow: &Flow,
    intervals: &std::sync::mpsc::Receiver<super::record::Interval>,
    producers: Vec<ProducerFn<'_>>,
    consumers: Vec<ConsumerFn<'_>>,
) -> Phase {
    let (user0, sys0) = cpu_time();
    let (sent, got) = std::thread::scope(|s| {
        // A thread's failure stops the run at once (not when it is joined).
        let consumers: Vec<_> = consumers
            .into_iter()
            .map(|c| s.spawn(move || failing(flow, c(flow))))
            .collect();
        let producers: Vec<_> = producers
            .into_iter()
            .map(|p| {
                s.spawn(move || {
                    let sent = failing(flow, p(flow));
                    flow.producer_done();
                    sent
                })
            })
            .collect();
        flow.watch();
        let sent: Vec<Sent> = producers
            .into_iter()
            .filter_map(|h| joined(flow, h))
            .collect();
        let got: Vec<Got> = consumers
            .into_iter()
            .filter_map(|h| joined(flow, h))
            .collect();
        (sent, got)
    });
    let (user1, sys1) = cpu_time();
    Phase {
        sent,
        got,
        timeline: timeline(intervals, flow.interval()),
        cpu: (user1.saturating_sub(user0), sys1.saturating_sub(sys0)),
        failure: flow.failure(),
    }
}

fn failing<T>(flow: &Flow, result: Result<T, String>) -> Result<T, String> {
    if let Err(why) = &result {
        flow.fail(why.clone());
    }
    result
}

fn joined<T>(
    flow: &Flow,
    handle: std::thread::ScopedJoinHandle<'_, Result<T, String>>,
) -> Option<T> {
    match handle.join() {
        Ok(Ok(value)) => Some(value),
        Ok(Err(why)) => {
            flow.fail(why);
            None
        }
        Err(_) => {
            flow.fail("a load thread panicked".into());
            None
        }
    }
}

impl Phase {
    /// Every recorder's totals, producers' and consumers'.
    pub fn recorded(&self) -> Recorded {
        let mut all = Recorded::empty();
        for r in self.sent.iter().filter_map(|s| s.recorded.as_ref()) {
            all.add(r);
        }
        for g in &self.got {
            all.add(&g.recorded);
        }
        all
    }

    /// Everything the producers had accepted, and how much was refused.
    pub fn accepted(&self) -> (SeqSet, u64) {
        let mut all = SeqSet::default();
        let mut refused = 0;
        for s in &self.sent {
            all.merge(&s.accepted);
            refused += s.refused;
        }
        (all, refused)
    }
}

/// One delivery, whatever handed it out.
pub struct Receipt {
    /// Its payload.
    pub payload: Bytes,
    /// The broker says it may have been delivered before.
    pub redelivered: bool,
}

/// A receiving handle.
pub trait Source: Send {
    /// The next delivery, waiting up to `wait`; `None` if none came.
    fn next(&mut self, wait: Duration) -> Result<Option<Receipt>, String>;
    /// Called after each receipt was counted (acknowledge, check drops).
    fn handled(&mut self) -> Result<(), String>;
    /// Called when nothing came (acknowledge what is pending).
    fn idle(&mut self) -> Result<(), String>;
    /// Messages dropped at most once.
    fn dropped(&self) -> u64 {
        0
    }
}

/// How a consumer judges what it gets.
#[derive(Clone, Copy)]
pub struct Expect {
    /// Lanes must arrive in order.
    pub ordered: bool,
    /// Whether (lane, seq) belongs to this consumer at all.
    pub belongs: fn(Stamp, usize, usize) -> bool,
    /// This consumer's destination index and the number of destinations.
    pub destination: (usize, usize),
    /// Record latency (publish → delivery).
    pub latency: bool,
}

/// Every receipt belongs.
pub fn everything(_: Stamp, _: usize, _: usize) -> bool {
    true
}

/// The consume loop: until the run stops, take, check, count, hand back. A failure
/// stops the run and still returns what was received.
pub fn consume(
    flow: &Flow,
    plan: &Plan,
    mut source: impl Source,
    expect: Expect,
) -> Result<Got, String> {
    let mut recorder = flow.recorder();
    let mut tracker = Tracker::new(expect.ordered);
    let taken = take_all(flow, plan, &mut source, expect, &mut recorder, &mut tracker);
    if let Err(why) = taken.and_then(|()| source.idle()) {
        flow.fail(why);
    }
    Ok(Got {
        tracker,
        recorded: recorder.finish(),
        dropped: source.dropped(),
    })
}

fn take_all(
    flow: &Flow,
    plan: &Plan,
    source: &mut impl Source,
    expect: Expect,
    recorder: &mut Recorder,
    tracker: &mut Tracker,
) -> Result<(), String> {
    let (dest, dests) = expect.destination;
    while !flow.stopped() {
        let Some(receipt) = source.next(RECEIVE_WAIT)? else {
            recorder.publish_progress();
            source.idle()?;
            continue;
        };
        let stamp = payload::read(&receipt.payload, plan.size).map_err(|e| e.to_string())?;
        let now = recorder.now_ns();
        if !(expect.belongs)(stamp, dest, dests) {
            let (lane, seq) = (stamp.lane, stamp.seq);
            tracker.misroute(|| format!("lane {lane} seq {seq} delivered to #{dest}"));
        } else if tracker.take(stamp.lane, stamp.seq, receipt.redelivered) {
            let latency = expect.latency.then(|| now.saturating_sub(stamp.sent_ns));
            recorder.record(now, latency, receipt.payload.len());
        }
        if !plan.consumer_delay.is_zero() {
            std::thread::sleep(plan.consumer_delay);
        }
        source.handled()?;
    }
    Ok(())
}

/// A subject subscription: at most once; a drop fails the run unless loss is allowed.
pub struct SubscriptionSource {
    /// The subscription.
    pub subscription: Box<dyn SubscriptionApi>,
    /// Report drops instead of failing.
    pub allow_loss: bool,
    /// Receipts since the last drop check.
    unchecked: u64,
    /// When the drop counter was last looked at.
    checked: Instant,
    /// Messages taken in one batch (`try_next_batch`) and not yet handed out, in
    /// reverse: the next one is the last (`pop`).
    taken: Vec<Message>,
}

/// The most messages one `try_next_batch` takes: one update of the subscription's
/// shared counters per batch instead of one per message. Against one daemon, `bench
/// pubsub -s 16 --url ... -d 4`, 4 runs each, interleaved: received 2.42-2.67 M msgs/s
/// with 0-6.5 % lost per message, 2.55-2.77 M with 0-3.7 % lost per batch.
const RECEIVE_BATCH: usize = 256;

impl SubscriptionSource {
    /// A source for `subscription`.
    pub fn new(subscription: Box<dyn SubscriptionApi>, allow_loss: bool) -> Self {
        Self {
            subscription,
            allow_loss,
            unchecked: 0,
            checked: Instant::now(),
            taken: Vec::with_capacity(RECEIVE_BATCH),
        }
    }

    fn check_drops(&mut self) -> Result<(), String> {
        self.unchecked = 0;
        self.checked = Instant::now();
        let dropped = self.subscription.dropped();
        match dropped > 0 && !self.allow_loss {
            true => Err(format!(
                "at-most-once loss: the subscriber fell behind and its pending buffer \
                 dropped {dropped} messages"
            )),
            false => Ok(()),
        }
    }
}

impl Source for SubscriptionSource {
    fn next(&mut self, wait: Duration) -> Result<Option<Receipt>, String> {
        if self.taken.is_empty() {
            match self
                .subscription
                .try_next_batch(RECEIVE_BATCH, &mut self.taken)
            {
                Ok(_) => self.taken.reverse(),
                Err(e) => return Err(format!("receive: {e}")),
            }
        }
        let message = match self.taken.pop() {
            Some(m) => Some(m),
            None => match self.subscription.next(wait) {
                Ok(m) => Some(m),
                Err(e) if e.code == ErrorCode::Timeout => None,
                Err(e) => return Err(format!("receive: {e}")),
            },
        };
        Ok(message.map(|m| Receipt {
            payload: m.payload,
            redelivered: false,
        }))
    }
    fn handled(&mut self) -> Result<(), String> {
        self.unchecked += 1;
        let due = self.unchecked >= DROP_CHECK_EVERY || self.checked.elapsed() >= DROP_CHECK_PERIOD;
        match due {
            true => self.check_drops(),
            false => Ok(()),
        }
    }
    fn idle(&mut self) -> Result<(), String> {
        self.check_drops()
    }
    fn dropped(&self) -> u64 {
        self.subscription.dropped()
    }
}

/// A queue consumer acknowledging with `multiple` once half its prefetch is pending.
pub struct QueueSource {
    /// The consumer.
    pub consumer: Box<dyn QueueConsumerApi>,
    /// Acknowledge after this many deliveries.
    pub ack_every: u64,
    /// The last delivery tag not yet acknowledged.
    pub pending: Option<u64>,
    /// Deliveries not yet acknowledged.
    pub unacked: u64,
}

impl QueueSource {
    /// A source for `consumer` with `prefetch`.
    pub fn new(consumer: Box<dyn QueueConsumerApi>, prefetch: u32) -> Self {
        Self {
            consumer,
            ack_every: u64::from(prefetch / 2).max(1),
            pending: None,
            unacked: 0,
        }
    }

    fn ack(&mut self) -> Result<(), String> {
        if let Some(tag) = self.pending.take() {
            self.unacked = 0;
            self.consumer
                .ack(tag, true)
                .map_err(|e| format!("ack: {e}"))?;
        }
        Ok(())
    }
}

impl Source for QueueSource {
    fn next(&mut self, wait: Duration) -> Result<Option<Receipt>, String> {
        let delivery = match self.consumer.try_next() {
            Ok(Some(d)) => Some(d),
            Ok(None) => {
                // Nothing buffered: acknowledge first, or a full prefetch never refills.
                self.ack()?;
                match self.consumer.next(wait) {
                    Ok(d) => Some(d),
                    Err(e) if e.code == ErrorCode::Timeout => None,
                    Err(e) => return Err(format!("receive: {e}")),
                }
            }
            Err(e) => return Err(format!("receive: {e}")),
        };
        Ok(delivery.map(|d| {
            self.pending = Some(d.delivery_tag);
            self.unacked += 1;
            Receipt {
                payload: d.payload,
                redelivered: d.redelivered,
            }
        }))
    }
    fn handled(&mut self) -> Result<(), String> {
        match self.unacked >= self.ack_every {
            true => self.ack(),
            false => Ok(()),
        }
    }
    fn idle(&mut self) -> Result<(), String> {
        self.ack()
    }
}

/// A stream consumer under `AckPolicy::None` (taking a record processes it).
pub struct StreamSource {
    /// The consumer.
    pub consumer: Box<dyn StreamConsumerApi>,
}

impl Source for StreamSource {
    fn next(&mut self, wait: Duration) -> Result<Option<Receipt>, String> {
        let record = match self.consumer.try_next() {
            Ok(Some(r)) => Some(r),
            Ok(None) => match self.consumer.next(wait) {
                Ok(r) => Some(r),
                Err(e) if e.code == ErrorCode::Timeout => None,
                Err(e) => return Err(format!("receive: {e}")),
            },
            Err(e) => return Err(format!("receive: {e}")),
        };
        Ok(record.map(|r| Receipt {
            redelivered: r.delivery_count > 1,
            payload: r.payload,
        }))
    }
    fn handled(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn idle(&mut self) -> Result<(), String> {
        Ok(())
    }
}
