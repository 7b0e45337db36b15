//! work-queue, fanout-exchange and topic-routing: exchanges and queues, at least once.
//!
//! Owns: the exchanges, queues and bindings each declares (named after the run's tag,
//! deleted afterwards), the confirm each message must get (the number of queues it
//! reaches), which queue must get which message, and the check that every queue ends
//! empty with nothing unacknowledged. Never: counts a message whose confirm did not
//! come as sent.

use std::sync::Arc;

use bytes::Bytes;
use ringbroker::api::{self, Bind, BrokerApi, Routed};
use ringbroker::queue::{ConsumeOptions, ExchangeConfig, Message, QueueConfig};
use ringbroker::routing::ExchangeKind;

use super::{cleaned, Ctx, Outcome};
use crate::bench::flow::Flow;
use crate::bench::options::{DurabilityArg, Plan};
use crate::bench::payload::Stamp;
use crate::bench::phase::{self, consume, everything, ConsumerFn, Expect, ProducerFn, QueueSource};
use crate::bench::produce::{publish_confirmed, AnswerTx, Confirmed, Lanes};
use crate::bench::verify::Tally;
use crate::bench::BenchError;

/// How a message finds its queues.
#[derive(Clone, Copy)]
enum Routing {
    /// The default exchange, to the one queue.
    Direct,
    /// A fanout exchange: every queue.
    Fanout,
    /// A topic exchange: queue `seq % queues` by key `bench.<i>.evt`.
    Topic,
}

/// What a scenario declared.
struct Layout {
    exchange: String,
    kind: Routing,
    queues: Vec<String>,
    persistent: bool,
}

impl Layout {
    fn routing_key(&self, stamp: Stamp) -> String {
        match self.kind {
            Routing::Direct => self.queues[0].clone(),
            Routing::Fanout => String::new(),
            Routing::Topic => format!("bench.{}.evt", stamp.seq % self.queues.len() as u64),
        }
    }

    /// Queues each message reaches.
    fn reach(&self) -> u32 {
        match self.kind {
            Routing::Fanout => self.queues.len() as u32,
            Routing::Direct | Routing::Topic => 1,
        }
    }

    fn declare(ctx: &Ctx<'_>, api: &dyn BrokerApi, kind: Routing) -> Result<Self, BenchError> {
        let plan = ctx.plan;
        let durable = plan.durability != DurabilityArg::None;
        let fail = |what: &str, e: api::Error| BenchError::Setup(format!("{what}: {e}"));
        let base = format!("bench-{}", ctx.tag);
        let count = match kind {
            Routing::Direct => 1,
            Routing::Fanout | Routing::Topic => plan.consumers,
        };
        let queues: Vec<String> = (0..count).map(|i| format!("{base}-q{i}")).collect();
        for name in &queues {
            let config = QueueConfig {
                durable,
                ..QueueConfig::new(name)
            };
            api.declare_queue(&config)
                .map_err(|e| fail("declare queue", e))?;
        }
        let exchange = match kind {
            Routing::Direct => String::new(),
            Routing::Fanout | Routing::Topic => format!("{base}-x"),
        };
        if let Some(ex_kind) = match kind {
            Routing::Direct => None,
            Routing::Fanout => Some(ExchangeKind::Fanout),
            Routing::Topic => Some(ExchangeKind::Topic),
        } {
            let config = ExchangeConfig {
                durable,
                ..ExchangeConfig::new(&exchange, ex_kind)
            };
            api.declare_exchange(&config)
                .map_err(|e| fail("declare exchange", e))?;
            for (i, queue) in queues.iter().enumerate() {
                let bind = Bind {
                    destination: queue.clone(),
                    source: exchange.clone(),
                    routing_key: format!("bench.{i}.*"),
                    arguments: Vec::new(),
                };
                api.bind_queue(&bind).map_err(|e| fail("bind", e))?;
            }
        }
        Ok(Self {
            exchange,
            kind,
            queues,
            persistent: durable,
        })
    }

    /// Every queue is empty with nothing unacknowledged; then everything is deleted.
    fn settle_and_delete(&self, api: &dyn BrokerApi, tally: &mut Tally) {
        for queue in &self.queues {
            match api.queue_info(queue) {
                Ok(info) if info.messages == 0 && info.unacked == 0 => {}
                Ok(info) => tally.fail(format!(
                    "queue {queue}: {} ready and {} unacknowledged after the run",
                    info.messages, info.unacked
                )),
                Err(e) => tally.fail(format!("queue {queue}: {e}")),
            }
            cleaned(queue, api.delete_queue(queue, false, false));
        }
        if !self.exchange.is_empty() {
            cleaned(&self.exchange, api.delete_exchange(&self.exchange, false));
        }
    }
}

/// Publishes through an exchange with confirms.
struct ExchangePublisher<'a> {
    api: &'a dyn BrokerApi,
    layout: &'a Layout,
}

impl Confirmed for ExchangePublisher<'_> {
    type Ack = u32;

    fn submit(&mut self, batch: Vec<(Stamp, Bytes)>, answers: &AnswerTx<u32>) -> api::Result<()> {
        let stamps: Vec<Stamp> = batch.iter().map(|(s, _)| *s).collect();
        let messages: Vec<Routed> = batch
            .into_iter()
            .map(|(stamp, payload)| {
                let message = match self.layout.persistent {
                    true => Message::persistent(payload),
                    false => Message::new(payload),
                };
                (
                    self.layout.exchange.clone(),
                    self.layout.routing_key(stamp),
                    message,
                )
            })
            .collect();
        let tx = answers.clone();
        let done = Box::new(move |outcomes| {
            // The producer waits on the receiving end; if it is gone the run is over.
            let _ = tx.send((stamps, outcomes));
        });
        self.api.publish_messages_with(messages, false, done)
    }

    fn check(&mut self, stamp: Stamp, reached: &u32) -> Result<Option<(u32, u64)>, String> {
        match *reached == self.layout.reach() {
            true => Ok(None),
            false => Err(format!(
                "lane {} seq {} reached {reached} queues, expected {}",
                stamp.lane,
                stamp.seq,
                self.layout.reach()
            )),
        }
    }
}

fn belongs_topic(stamp: Stamp, dest: usize, dests: usize) -> bool {
    stamp.seq % dests as u64 == dest as u64
}

/// Declares, runs the phase, verifies, deletes.
fn exchange_run(ctx: &Ctx<'_>, kind: Routing) -> Result<Outcome, BenchError> {
    let plan = ctx.plan;
    let admin = ctx.target.connect()?;
    let layout = Layout::declare(ctx, admin.as_ref(), kind)?;
    let consumers_api = ctx.connect(plan.consumers)?;
    let queue_consumers = consumers_api
        .iter()
        .enumerate()
        .map(|(i, api)| {
            let queue = &layout.queues[i % layout.queues.len()];
            let options = ConsumeOptions {
                prefetch: plan.prefetch,
                no_ack: false,
            };
            api.consume(queue, options)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BenchError::Setup(format!("consume: {e}")))?;
    let publishers = ctx.connect(plan.producers)?;
    let (flow, intervals) = Flow::new(plan, plan.producers, u64::from(layout.reach()));
    let producers = exchange_producers(plan, &publishers, &layout);
    let consumers: Vec<ConsumerFn<'_>> = queue_consumers
        .into_iter()
        .enumerate()
        .map(|(i, consumer)| {
            let source = QueueSource::new(consumer, plan.prefetch);
            let expect = Expect {
                ordered: true,
                belongs: match kind {
                    Routing::Topic => belongs_topic,
                    Routing::Direct | Routing::Fanout => everything,
                },
                destination: (i % layout.queues.len(), layout.queues.len()),
                latency: true,
            };
            Box::new(move |flow: &Flow| consume(flow, plan, source, expect)) as ConsumerFn<'_>
        })
        .collect();
    let phase = phase::run(&flow, &intervals, producers, consumers);
    let (accepted, _) = phase.accepted();
    let mut tally = Tally::default();
    let queues = layout.queues.len();
    for (q, name) in layout.queues.iter().enumerate() {
        let trackers: Vec<_> = (q..phase.got.len())
            .step_by(queues)
            .map(|i| phase.got[i].tracker.clone())
            .collect();
        let expected = match kind {
            Routing::Topic => accepted.filtered(|_, seq| seq % queues as u64 == q as u64),
            Routing::Direct | Routing::Fanout => accepted.clone(),
        };
        tally.destination(&format!("queue {name}"), &expected, &trackers);
    }
    layout.settle_and_delete(admin.as_ref(), &mut tally);
    Ok(Ctx::outcome(phase, tally, Some("publish_to_delivery")))
}

fn exchange_producers<'a>(
    plan: &'a Plan,
    publishers: &'a [Arc<dyn BrokerApi>],
    layout: &'a Layout,
) -> Vec<ProducerFn<'a>> {
    publishers
        .iter()
        .enumerate()
        .map(|(i, api)| {
            Box::new(move |flow: &Flow| {
                let mut model = ExchangePublisher {
                    api: api.as_ref(),
                    layout,
                };
                publish_confirmed(flow, plan, &mut model, Lanes::producer(i), false)
            }) as ProducerFn<'a>
        })
        .collect()
}

/// One queue, K competing consumers.
pub fn work_queue(ctx: &Ctx<'_>) -> Result<Outcome, BenchError> {
    exchange_run(ctx, Routing::Direct)
}

/// A fanout exchange to M queues.
pub fn fanout(ctx: &Ctx<'_>) -> Result<Outcome, BenchError> {
    exchange_run(ctx, Routing::Fanout)
}

/// A topic exchange to M queues, one share each.
pub fn topic(ctx: &Ctx<'_>) -> Result<Outcome, BenchError> {
    exchange_run(ctx, Routing::Topic)
}
