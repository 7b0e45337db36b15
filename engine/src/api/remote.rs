//! `BrokerApi` for a remote broker through `client::Client`: each method calls the
//! client's method of the same name and maps its error.

use std::os::fd::RawFd;
use std::time::Duration;

use bytes::Bytes;

use super::{
    Bind, BrokerApi, ConfirmDone, Error, PublishDone, QueueConsumerApi, QueueMessage, Record,
    ReplyDone, Result, Routed, StreamConsumerApi, SubscriptionApi,
};
use crate::client::{Client, ClientConsumer, ClientError, ClientQueueConsumer, ClientSubscription};
use crate::pubsub::Message;
use crate::queue::{ConsumeOptions, ExchangeConfig, QueueConfig, QueueInfo};
use crate::stream::{ConsumerConfig, ConsumerInfo, Publish, PublishAck, StreamConfig, StreamInfo};

impl SubscriptionApi for ClientSubscription {
    fn next(&self, timeout: Duration) -> Result<Message> {
        Ok(self.next_timeout(timeout)?)
    }
    fn try_next(&self) -> Result<Option<Message>> {
        Ok(ClientSubscription::try_next(self)?)
    }
    fn try_next_batch(&self, max: usize, out: &mut Vec<Message>) -> Result<usize> {
        Ok(ClientSubscription::try_next_batch(self, max, out)?)
    }
    fn dropped(&self) -> u64 {
        ClientSubscription::dropped(self)
    }
    fn fd(&self) -> RawFd {
        ClientSubscription::fd(self)
    }
    fn arm(&self) -> bool {
        ClientSubscription::arm(self)
    }
    fn clear_notification(&self) -> Result<()> {
        Ok(ClientSubscription::clear_notification(self)?)
    }
}

impl StreamConsumerApi for ClientConsumer {
    fn name(&self) -> &str {
        ClientConsumer::name(self)
    }
    fn next(&self, timeout: Duration) -> Result<Record> {
        Ok(self.next_timeout(timeout)?.record)
    }
    fn try_next(&self) -> Result<Option<Record>> {
        Ok(ClientConsumer::try_next(self)?.map(|m| m.record))
    }
    fn ack(&self, positions: &[(u32, u64)]) -> Result<()> {
        Ok(self.ack_positions(positions)?)
    }
    fn nak(&self, partition: u32, offset: u64, delay: Duration) -> Result<()> {
        Ok(self.nak_position(partition, offset, delay)?)
    }
    fn fd(&self) -> RawFd {
        ClientConsumer::fd(self)
    }
    fn arm(&self) -> bool {
        ClientConsumer::arm(self)
    }
    fn clear_notification(&self) -> Result<()> {
        Ok(ClientConsumer::clear_notification(self)?)
    }
}

impl QueueConsumerApi for ClientQueueConsumer {
    fn next(&self, timeout: Duration) -> Result<QueueMessage> {
        Ok(self.next_timeout(timeout)?.delivery)
    }
    fn try_next(&self) -> Result<Option<QueueMessage>> {
        Ok(ClientQueueConsumer::try_next(self)?.map(|d| d.delivery))
    }
    fn ack(&self, delivery_tag: u64, multiple: bool) -> Result<()> {
        Ok(ClientQueueConsumer::ack(self, delivery_tag, multiple)?)
    }
    fn fd(&self) -> RawFd {
        ClientQueueConsumer::fd(self)
    }
    fn arm(&self) -> bool {
        ClientQueueConsumer::arm(self)
    }
    fn clear_notification(&self) -> Result<()> {
        Ok(ClientQueueConsumer::clear_notification(self)?)
    }
    fn nack(&self, delivery_tag: u64, multiple: bool, requeue: bool) -> Result<()> {
        Ok(ClientQueueConsumer::nack(
            self,
            delivery_tag,
            multiple,
            requeue,
        )?)
    }
}

/// Per-item client results as the API reports them.
fn outcomes<T>(
    results: std::result::Result<Vec<std::result::Result<T, ClientError>>, ClientError>,
) -> Result<Vec<Result<T>>> {
    Ok(results?
        .into_iter()
        .map(|r| r.map_err(Error::from))
        .collect())
}

impl BrokerApi for Client {
    fn publish(&self, message: Message) -> Result<()> {
        Ok(self.publish_batch_nowait(std::slice::from_ref(&message))?)
    }
    fn subscribe(
        &self,
        pattern: &str,
        queue_group: Option<&str>,
    ) -> Result<Box<dyn SubscriptionApi>> {
        Ok(Box::new(Client::subscribe(self, pattern, queue_group)?))
    }
    fn publish_batch(&self, messages: Vec<Message>) -> Result<()> {
        Ok(self.publish_batch_nowait(&messages)?)
    }
    fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Message> {
        Ok(Client::request(self, subject, payload, timeout)?)
    }
    fn request_with(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
        done: ReplyDone,
    ) -> Result<()> {
        Client::request_with(self, subject, payload, timeout, move |reply| {
            done(reply.map_err(Error::from));
        })?;
        Ok(())
    }

    fn create_stream(&self, config: &StreamConfig) -> Result<()> {
        Ok(Client::create_stream(self, config)?)
    }
    fn update_stream(&self, config: &StreamConfig) -> Result<()> {
        Ok(Client::update_stream(self, config)?)
    }
    fn delete_stream(&self, name: &str) -> Result<()> {
        Ok(Client::delete_stream(self, name)?)
    }
    fn stream_info(&self, name: &str) -> Result<StreamInfo> {
        Ok(Client::stream_info(self, name)?)
    }
    fn streams(&self) -> Result<Vec<String>> {
        Ok(Client::streams(self)?)
    }
    fn publish_records(&self, records: &[Publish]) -> Result<Vec<Result<PublishAck>>> {
        outcomes(Client::publish_records(self, records))
    }
    fn publish_records_with(&self, records: Vec<Publish>, done: PublishDone) -> Result<()> {
        Client::publish_records_with(self, &records, move |results| {
            done(outcomes(results));
        })?;
        Ok(())
    }
    fn create_consumer(&self, stream: &str, config: &ConsumerConfig) -> Result<()> {
        Ok(Client::create_consumer(self, stream, config)?)
    }
    fn delete_consumer(&self, stream: &str, name: &str) -> Result<()> {
        Ok(Client::delete_consumer(self, stream, name)?)
    }
    fn consumer_info(&self, stream: &str, name: &str) -> Result<ConsumerInfo> {
        Ok(Client::consumer_info(self, stream, name)?)
    }
    fn consumers(&self, stream: &str) -> Result<Vec<String>> {
        Ok(Client::consumers(self, stream)?)
    }
    fn join(&self, stream: &str, name: &str) -> Result<Box<dyn StreamConsumerApi>> {
        Ok(Box::new(Client::join(self, stream, name)?))
    }
    fn subscribe_stream(
        &self,
        stream: &str,
        config: &ConsumerConfig,
    ) -> Result<Box<dyn StreamConsumerApi>> {
        Ok(Box::new(Client::subscribe_stream(
            self,
            stream,
            config.clone(),
        )?))
    }

    fn declare_exchange(&self, config: &ExchangeConfig) -> Result<()> {
        Ok(Client::declare_exchange(self, config)?)
    }
    fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<()> {
        Ok(Client::delete_exchange(self, name, if_unused)?)
    }
    fn exchanges(&self) -> Result<Vec<ExchangeConfig>> {
        Ok(Client::exchanges(self)?)
    }
    fn queues(&self) -> Result<Vec<QueueConfig>> {
        Ok(Client::queues(self)?)
    }
    fn declare_queue(&self, config: &QueueConfig) -> Result<QueueInfo> {
        Ok(Client::declare_queue(self, config)?)
    }
    fn delete_queue(&self, name: &str, if_unused: bool, if_empty: bool) -> Result<u64> {
        Ok(Client::delete_queue(self, name, if_unused, if_empty)?)
    }
    fn purge_queue(&self, name: &str) -> Result<u64> {
        Ok(Client::purge_queue(self, name)?)
    }
    fn queue_info(&self, name: &str) -> Result<QueueInfo> {
        Ok(Client::queue_info(self, name)?)
    }
    fn bind_queue(&self, b: &Bind) -> Result<()> {
        Ok(Client::bind_queue(self, b)?)
    }
    fn unbind_queue(&self, b: &Bind) -> Result<()> {
        Ok(Client::unbind_queue(self, b)?)
    }
    fn bind_exchange(&self, b: &Bind) -> Result<()> {
        Ok(Client::bind_exchange(self, b)?)
    }
    fn unbind_exchange(&self, b: &Bind) -> Result<()> {
        Ok(Client::unbind_exchange(self, b)?)
    }
    fn publish_messages(&self, messages: &[Routed], mandatory: bool) -> Result<Vec<Result<u32>>> {
        outcomes(Client::publish_messages(self, messages, mandatory))
    }
    fn publish_messages_with(
        &self,
        messages: Vec<Routed>,
        mandatory: bool,
        done: ConfirmDone,
    ) -> Result<()> {
        Client::publish_messages_with(self, &messages, mandatory, move |results| {
            done(outcomes(results));
        })?;
        Ok(())
    }
    fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Box<dyn QueueConsumerApi>> {
        Ok(Box::new(Client::consume(self, queue, options)?))
    }
}
