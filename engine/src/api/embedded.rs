//! `BrokerApi` for the embedded `Broker`: each method calls the model's method of the
//! same name; queues are declared and consumed as the broker's own `Connection` (its
//! exclusive queues live as long as the broker).

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;

use super::{
    Bind, BrokerApi, ConfirmDone, Error, PublishDone, QueueConsumerApi, QueueMessage, Record,
    ReplyDone, Result, Routed, StreamConsumerApi, SubscriptionApi,
};
use crate::broker::Broker;
use crate::protocol::ErrorCode;
use crate::pubsub::{Message, SubscribeOptions, Subscription};
use crate::queue::{
    Confirm, ConsumeOptions, Delivery, ExchangeConfig, QueueConfig, QueueConsumer, QueueError,
    QueueInfo,
};
use crate::stream::{
    Consumer, ConsumerConfig, ConsumerInfo, Publish, PublishAck, StreamConfig, StreamInfo,
    StreamMessage,
};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn wait_error(error: std::io::Error) -> Error {
    Error::new(ErrorCode::Internal, format!("eventfd: {error}"))
}

/// A subscription (its receiving end behind a lock: `Subscription` takes `&mut` to
/// receive) and its eventfd, read once so asking for it never waits on a receiver.
struct EmbeddedSubscription {
    subscription: Mutex<Subscription>,
    fd: RawFd,
}

impl SubscriptionApi for EmbeddedSubscription {
    fn next(&self, timeout: Duration) -> Result<Message> {
        Ok(lock(&self.subscription).next_timeout(timeout)?)
    }
    fn try_next(&self) -> Result<Option<Message>> {
        Ok(lock(&self.subscription).try_next()?)
    }
    fn try_next_batch(&self, max: usize, out: &mut Vec<Message>) -> Result<usize> {
        Ok(lock(&self.subscription).try_next_batch(max, out)?)
    }
    fn dropped(&self) -> u64 {
        lock(&self.subscription).dropped()
    }
    fn fd(&self) -> RawFd {
        self.fd
    }
    fn arm(&self) -> bool {
        lock(&self.subscription).arm()
    }
    fn clear_notification(&self) -> Result<()> {
        lock(&self.subscription)
            .clear_notification()
            .map_err(wait_error)
    }
}

/// A stream consumer, the lock its receivers take (a group member is read by one
/// thread at a time), and the records it handed out that still need their ack.
struct EmbeddedConsumer {
    consumer: Consumer,
    receive: Mutex<()>,
    outstanding: Mutex<HashMap<(u32, u64), StreamMessage>>,
}

impl EmbeddedConsumer {
    /// The record a message carries; the message is kept for its ack.
    fn hand_out(&self, message: StreamMessage) -> Record {
        let record = Record {
            partition: message.partition,
            offset: message.offset,
            timestamp: message.timestamp,
            delivery_count: message.delivery_count,
            skipped: message.skipped.clone(),
            subject: message.subject.clone(),
            key: message.key.clone(),
            headers: message.headers.clone(),
            payload: message.payload.clone(),
        };
        if message.route.is_some() {
            lock(&self.outstanding).insert((message.partition, message.offset), message);
        }
        record
    }
}

impl StreamConsumerApi for EmbeddedConsumer {
    fn name(&self) -> &str {
        self.consumer.name()
    }

    fn next(&self, timeout: Duration) -> Result<Record> {
        let message = {
            let _receiving = lock(&self.receive);
            self.consumer.next(timeout)?
        };
        Ok(self.hand_out(message))
    }

    fn try_next(&self) -> Result<Option<Record>> {
        let message = {
            let _receiving = lock(&self.receive);
            self.consumer.try_next()?
        };
        Ok(message.map(|m| self.hand_out(m)))
    }

    fn ack(&self, positions: &[(u32, u64)]) -> Result<()> {
        let messages: Vec<StreamMessage> = {
            let mut held = lock(&self.outstanding);
            positions.iter().filter_map(|p| held.remove(p)).collect()
        };
        Ok(self.consumer.ack_all(&messages)?)
    }

    fn nak(&self, partition: u32, offset: u64, delay: Duration) -> Result<()> {
        // A record no longer outstanding (acknowledged, committed, never delivered
        // here) is ignored, as `ack` ignores it and as the remote consumer's
        // fire-and-forget nak does: the two modes answer the same.
        match lock(&self.outstanding).remove(&(partition, offset)) {
            Some(message) => Ok(message.nak(delay)?),
            None => Ok(()),
        }
    }

    fn fd(&self) -> RawFd {
        self.consumer.fd()
    }
    fn arm(&self) -> bool {
        self.consumer.arm()
    }
    fn clear_notification(&self) -> Result<()> {
        self.consumer.clear_notification().map_err(wait_error)
    }
}

struct EmbeddedQueueConsumer(QueueConsumer);

fn queue_message(d: Delivery) -> QueueMessage {
    QueueMessage {
        delivery_tag: d.delivery_tag,
        redelivered: d.redelivered,
        queue: d.queue.to_string(),
        exchange: d.exchange.to_string(),
        routing_key: d.routing_key.to_string(),
        properties: (*d.properties).clone(),
        payload: d.payload,
    }
}

impl QueueConsumerApi for EmbeddedQueueConsumer {
    fn next(&self, timeout: Duration) -> Result<QueueMessage> {
        Ok(queue_message(self.0.next(timeout)?))
    }
    fn try_next(&self) -> Result<Option<QueueMessage>> {
        Ok(self.0.try_next()?.map(queue_message))
    }
    fn ack(&self, delivery_tag: u64, multiple: bool) -> Result<()> {
        Ok(self.0.ack(delivery_tag, multiple)?)
    }
    fn nack(&self, delivery_tag: u64, multiple: bool, requeue: bool) -> Result<()> {
        Ok(self.0.nack(delivery_tag, multiple, requeue)?)
    }
    fn fd(&self) -> RawFd {
        self.0.fd()
    }
    fn arm(&self) -> bool {
        self.0.arm()
    }
    fn clear_notification(&self) -> Result<()> {
        self.0.clear_notification().map_err(wait_error)
    }
}

/// A confirm as the API reports it: the number of queues reached.
fn confirm_outcome(result: std::result::Result<Confirm, QueueError>) -> Result<u32> {
    result
        .map(|c| u32::try_from(c.queues).unwrap_or(u32::MAX))
        .map_err(Error::from)
}

fn boxed_consumer(consumer: Consumer) -> Box<dyn StreamConsumerApi> {
    Box::new(EmbeddedConsumer {
        consumer,
        receive: Mutex::new(()),
        outstanding: Mutex::new(HashMap::new()),
    })
}

impl BrokerApi for Broker {
    fn publish(&self, message: Message) -> Result<()> {
        Ok(self.pubsub().publish_message(message)?)
    }

    fn subscribe(
        &self,
        pattern: &str,
        queue_group: Option<&str>,
    ) -> Result<Box<dyn SubscriptionApi>> {
        let options = SubscribeOptions {
            queue_group: queue_group.map(str::to_owned),
            ..SubscribeOptions::default()
        };
        let subscription = self.pubsub().subscribe(pattern, options)?;
        Ok(Box::new(EmbeddedSubscription {
            fd: subscription.fd(),
            subscription: Mutex::new(subscription),
        }))
    }

    fn publish_batch(&self, messages: Vec<Message>) -> Result<()> {
        Ok(self.pubsub().publish_batch(messages)?)
    }
    fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Message> {
        Ok(self.pubsub().request(subject, payload, timeout)?)
    }
    fn request_with(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
        done: ReplyDone,
    ) -> Result<()> {
        self.pubsub()
            .request_with(subject, payload, timeout, move |reply| {
                done(reply.map_err(Error::from));
            })?;
        Ok(())
    }

    fn create_stream(&self, config: &StreamConfig) -> Result<()> {
        Ok(self.streams().create(config.clone())?)
    }
    fn update_stream(&self, config: &StreamConfig) -> Result<()> {
        Ok(self.streams().update(config.clone())?)
    }
    fn delete_stream(&self, name: &str) -> Result<()> {
        Ok(self.streams().delete(name)?)
    }
    fn stream_info(&self, name: &str) -> Result<StreamInfo> {
        Ok(self.streams().info(name)?)
    }
    fn streams(&self) -> Result<Vec<String>> {
        Ok(Broker::streams(self).list())
    }
    fn publish_records(&self, records: &[Publish]) -> Result<Vec<Result<PublishAck>>> {
        let results = Broker::streams(self).publish_batch(records.to_vec())?;
        Ok(results
            .into_iter()
            .map(|r| r.map_err(Error::from))
            .collect())
    }
    fn publish_records_with(&self, records: Vec<Publish>, done: PublishDone) -> Result<()> {
        Broker::streams(self).publish_with(records, move |results| {
            done(Ok(results
                .into_iter()
                .map(|r| r.map_err(Error::from))
                .collect()));
        })?;
        Ok(())
    }
    fn create_consumer(&self, stream: &str, config: &ConsumerConfig) -> Result<()> {
        Ok(Broker::streams(self).create_consumer(stream, config.clone())?)
    }
    fn delete_consumer(&self, stream: &str, name: &str) -> Result<()> {
        Ok(Broker::streams(self).delete_consumer(stream, name)?)
    }
    fn consumer_info(&self, stream: &str, name: &str) -> Result<ConsumerInfo> {
        Ok(Broker::streams(self).consumer_info(stream, name)?)
    }
    fn consumers(&self, stream: &str) -> Result<Vec<String>> {
        Ok(Broker::streams(self).consumers(stream))
    }
    fn join(&self, stream: &str, name: &str) -> Result<Box<dyn StreamConsumerApi>> {
        Ok(boxed_consumer(Broker::streams(self).join(stream, name)?))
    }
    fn subscribe_stream(
        &self,
        stream: &str,
        config: &ConsumerConfig,
    ) -> Result<Box<dyn StreamConsumerApi>> {
        let consumer = Broker::streams(self).subscribe(stream, config.clone())?;
        Ok(boxed_consumer(consumer))
    }

    fn declare_exchange(&self, config: &ExchangeConfig) -> Result<()> {
        Ok(self.queues().declare_exchange(config.clone())?)
    }
    fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<()> {
        Ok(self.queues().delete_exchange(name, if_unused)?)
    }
    fn exchanges(&self) -> Result<Vec<ExchangeConfig>> {
        Ok(self.queues().exchanges())
    }
    fn queues(&self) -> Result<Vec<QueueConfig>> {
        Ok(Broker::queues(self).queues())
    }
    fn declare_queue(&self, config: &QueueConfig) -> Result<QueueInfo> {
        Ok(self.connection().declare_queue(config.clone())?)
    }
    fn delete_queue(&self, name: &str, if_unused: bool, if_empty: bool) -> Result<u64> {
        Ok(self.connection().delete_queue(name, if_unused, if_empty)?)
    }
    fn purge_queue(&self, name: &str) -> Result<u64> {
        Ok(self.connection().purge_queue(name)?)
    }
    fn queue_info(&self, name: &str) -> Result<QueueInfo> {
        Ok(self.queues().queue_info(name)?)
    }
    fn bind_queue(&self, b: &Bind) -> Result<()> {
        let args = b.arguments.clone();
        Ok(self
            .connection()
            .bind_queue(&b.destination, &b.source, &b.routing_key, args)?)
    }
    fn unbind_queue(&self, b: &Bind) -> Result<()> {
        let args = b.arguments.clone();
        Ok(self
            .queues()
            .unbind_queue(&b.destination, &b.source, &b.routing_key, args)?)
    }
    fn bind_exchange(&self, b: &Bind) -> Result<()> {
        let args = b.arguments.clone();
        Ok(self
            .queues()
            .bind_exchange(&b.destination, &b.source, &b.routing_key, args)?)
    }
    fn unbind_exchange(&self, b: &Bind) -> Result<()> {
        let args = b.arguments.clone();
        Ok(self
            .queues()
            .unbind_exchange(&b.destination, &b.source, &b.routing_key, args)?)
    }
    fn publish_messages(&self, messages: &[Routed], mandatory: bool) -> Result<Vec<Result<u32>>> {
        let results = self.queues().publish_batch(messages.to_vec(), mandatory)?;
        Ok(results.into_iter().map(confirm_outcome).collect())
    }
    fn publish_messages_with(
        &self,
        messages: Vec<Routed>,
        mandatory: bool,
        done: ConfirmDone,
    ) -> Result<()> {
        self.queues()
            .publish_with(messages, mandatory, move |results| {
                done(Ok(results.into_iter().map(confirm_outcome).collect()));
            })?;
        Ok(())
    }
    fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Box<dyn QueueConsumerApi>> {
        let consumer = self.connection().consume(queue, options)?;
        Ok(Box::new(EmbeddedQueueConsumer(consumer)))
    }
}
