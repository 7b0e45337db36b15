//! `BrokerApi` for the embedded `Broker`: each method calls the model's method of the
//! same name; queues are declared and consumed as the broker's own `Connection` (its
//! exclusive queues live as long as the broker).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;

use super::{
    Bind, BrokerApi, Error, QueueConsumerApi, QueueMessage, Record, Result, Routed,
    StreamConsumerApi, SubscriptionApi,
};
use crate::broker::Broker;
use crate::pubsub::{Message, SubscribeOptions, Subscription};
use crate::queue::{ConsumeOptions, ExchangeConfig, QueueConfig, QueueConsumer, QueueInfo};
use crate::stream::{
    Consumer, ConsumerConfig, ConsumerInfo, Publish, PublishAck, StreamConfig, StreamInfo,
    StreamMessage,
};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct EmbeddedSubscription(Mutex<Subscription>);

impl SubscriptionApi for EmbeddedSubscription {
    fn next(&self, timeout: Duration) -> Result<Message> {
        Ok(lock(&self.0).next_timeout(timeout)?)
    }
    fn try_next(&self) -> Result<Option<Message>> {
        Ok(lock(&self.0).try_next()?)
    }
    fn dropped(&self) -> u64 {
        lock(&self.0).dropped()
    }
}

/// A stream consumer and the records it handed out that still need their ack.
struct EmbeddedConsumer {
    consumer: Consumer,
    outstanding: Mutex<HashMap<(u32, u64), StreamMessage>>,
}

impl StreamConsumerApi for EmbeddedConsumer {
    fn name(&self) -> &str {
        self.consumer.name()
    }

    fn next(&self, timeout: Duration) -> Result<Record> {
        let message = self.consumer.next(timeout)?;
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
        Ok(record)
    }

    fn ack(&self, records: &[Record]) -> Result<()> {
        let messages: Vec<StreamMessage> = {
            let mut held = lock(&self.outstanding);
            records
                .iter()
                .filter_map(|r| held.remove(&(r.partition, r.offset)))
                .collect()
        };
        Ok(self.consumer.ack_all(&messages)?)
    }

    fn nak(&self, record: &Record, delay: Duration) -> Result<()> {
        let message = lock(&self.outstanding).remove(&(record.partition, record.offset));
        match message {
            Some(message) => Ok(message.nak(delay)?),
            None => Err(Error::new(
                crate::protocol::ErrorCode::NotFound,
                format!(
                    "record {}/{} is not outstanding on this consumer",
                    record.partition, record.offset
                ),
            )),
        }
    }
}

struct EmbeddedQueueConsumer(QueueConsumer);

impl QueueConsumerApi for EmbeddedQueueConsumer {
    fn next(&self, timeout: Duration) -> Result<QueueMessage> {
        let d = self.0.next(timeout)?;
        Ok(QueueMessage {
            delivery_tag: d.delivery_tag,
            redelivered: d.redelivered,
            queue: d.queue.to_string(),
            exchange: d.exchange.to_string(),
            routing_key: d.routing_key.to_string(),
            properties: (*d.properties).clone(),
            payload: d.payload,
        })
    }
    fn ack(&self, delivery_tag: u64, multiple: bool) -> Result<()> {
        Ok(self.0.ack(delivery_tag, multiple)?)
    }
    fn nack(&self, delivery_tag: u64, multiple: bool, requeue: bool) -> Result<()> {
        Ok(self.0.nack(delivery_tag, multiple, requeue)?)
    }
}

fn boxed_consumer(consumer: Consumer) -> Box<dyn StreamConsumerApi> {
    Box::new(EmbeddedConsumer {
        consumer,
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
        Ok(Box::new(EmbeddedSubscription(Mutex::new(subscription))))
    }

    fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Message> {
        Ok(self.pubsub().request(subject, payload, timeout)?)
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
    fn publish_messages(&self, messages: &[Routed], mandatory: bool) -> Result<Vec<Result<u32>>> {
        let results = self.queues().publish_batch(messages.to_vec(), mandatory)?;
        Ok(results
            .into_iter()
            .map(|r| {
                r.map(|c| u32::try_from(c.queues).unwrap_or(u32::MAX))
                    .map_err(Error::from)
            })
            .collect())
    }
    fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Box<dyn QueueConsumerApi>> {
        let consumer = self.connection().consume(queue, options)?;
        Ok(Box::new(EmbeddedQueueConsumer(consumer)))
    }
}
