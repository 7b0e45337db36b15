//! Exchanges and queues through a `Client`: declarations, bindings, confirmed publishes
//! and consumers whose deliveries the server pushes within their prefetch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{lock, push, Client, ClientError, Inner};
use crate::protocol::queue::{
    decode_confirms, decode_definitions, decode_delivery, decode_queue_info, encode_answer,
    encode_exchange, encode_publish, encode_queue, encode_target, Bind, Consume, QueueMessage,
    Routed,
};
use crate::protocol::{Op, Reader};
use crate::queue::{ConsumeOptions, ExchangeConfig, QueueConfig, QueueInfo};

/// After a reconnect: consumes every queue again (the queue redelivered what was
/// unacknowledged when the old connection closed). Exclusive queues went with the old
/// connection; consuming one again gets `NotFound` (logged).
pub(super) fn resubscribe(inner: &Inner) {
    for request in push::requests(&inner.queue_consumers) {
        let correlation = inner.next_correlation.fetch_add(1, Ordering::Relaxed);
        let _ = inner.send(Op::QueueConsume, 0, correlation, |out| request.encode(out));
    }
}

/// Routes a pushed `QUEUE_MESSAGE` to its consumer.
pub(super) fn on_push(inner: &Inner, body: Bytes) -> Result<(), String> {
    let (consumer_id, pushed) = decode_delivery(body).map_err(|e| e.to_string())?;
    push::route(&inner.queue_consumers, consumer_id, pushed);
    Ok(())
}

/// Each message's confirm (queues reached), or why the whole publish failed.
pub type ConfirmResults = Result<Vec<Result<u32, ClientError>>, ClientError>;

/// A `QUEUE_PUBLISH` reply: one confirm per message.
fn confirm_results(body: Bytes, messages: usize) -> ConfirmResults {
    let confirms = super::one_answer_each(decode_confirms(body)?, messages, "messages")?;
    Ok(confirms
        .into_iter()
        .map(|c| c.map_err(|(code, message)| ClientError::Server { code, message }))
        .collect())
}

fn count(body: Bytes, op: &'static str) -> Result<u64, ClientError> {
    let mut r = Reader::new(body, op);
    let n = r.u64()?;
    r.end()?;
    Ok(n)
}

impl Client {
    /// Declares an exchange (idempotent for the same definition).
    pub fn declare_exchange(&self, config: &ExchangeConfig) -> Result<(), ClientError> {
        self.call(
            Op::ExchangeDeclare,
            |out| encode_exchange(out, config),
            None,
        )
        .map(drop)
    }

    /// Deletes an exchange (`if_unused`: only while nothing is bound from it).
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), ClientError> {
        self.call(
            Op::ExchangeDelete,
            |out| encode_target(out, name, if_unused, false),
            None,
        )
        .map(drop)
    }

    /// Declares a queue as this connection (an exclusive queue belongs to it and goes
    /// when it closes).
    pub fn declare_queue(&self, config: &QueueConfig) -> Result<QueueInfo, ClientError> {
        let (_, body) = self.call(Op::QueueDeclare, |out| encode_queue(out, config), None)?;
        Ok(decode_queue_info(body)?)
    }

    /// Deletes a queue; returns how many messages were ready.
    pub fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u64, ClientError> {
        let (_, body) = self.call(
            Op::QueueDelete,
            |out| encode_target(out, name, if_unused, if_empty),
            None,
        )?;
        count(body, "QUEUE_DELETE reply")
    }

    /// Removes a queue's ready messages; returns how many.
    pub fn purge_queue(&self, name: &str) -> Result<u64, ClientError> {
        let (_, body) = self.call(
            Op::QueuePurge,
            |out| encode_target(out, name, false, false),
            None,
        )?;
        count(body, "QUEUE_PURGE reply")
    }

    /// Every declared exchange's definition.
    pub fn exchanges(&self) -> Result<Vec<ExchangeConfig>, ClientError> {
        let (_, body) = self.call(Op::ExchangeList, |_| {}, None)?;
        Ok(decode_definitions(
            body,
            "EXCHANGE_LIST reply",
            ExchangeConfig::decode,
        )?)
    }

    /// Every declared queue's definition.
    pub fn queues(&self) -> Result<Vec<QueueConfig>, ClientError> {
        let (_, body) = self.call(Op::QueueList, |_| {}, None)?;
        Ok(decode_definitions(
            body,
            "QUEUE_LIST reply",
            QueueConfig::decode,
        )?)
    }

    /// A queue's counters.
    pub fn queue_info(&self, name: &str) -> Result<QueueInfo, ClientError> {
        let (_, body) = self.call(
            Op::QueueInfo,
            |out| encode_target(out, name, false, false),
            None,
        )?;
        Ok(decode_queue_info(body)?)
    }

    fn bind_op(&self, op: Op, bind: &Bind) -> Result<(), ClientError> {
        self.call(op, |out| bind.encode(out), None).map(drop)
    }

    /// Binds queue `bind.destination` to exchange `bind.source` with
    /// `bind.routing_key` (and `bind.arguments`, for headers exchanges).
    pub fn bind_queue(&self, bind: &Bind) -> Result<(), ClientError> {
        self.bind_op(Op::QueueBind, bind)
    }

    /// Removes that binding.
    pub fn unbind_queue(&self, bind: &Bind) -> Result<(), ClientError> {
        self.bind_op(Op::QueueUnbind, bind)
    }

    /// Binds exchange `bind.destination` to exchange `bind.source`.
    pub fn bind_exchange(&self, bind: &Bind) -> Result<(), ClientError> {
        self.bind_op(Op::ExchangeBind, bind)
    }

    /// Removes that exchange-to-exchange binding.
    pub fn unbind_exchange(&self, bind: &Bind) -> Result<(), ClientError> {
        self.bind_op(Op::ExchangeUnbind, bind)
    }

    /// Publishes (exchange, routing key, message) triples in one frame and waits for
    /// each confirm: the number of queues the message reached (persistent copies in
    /// durable queues stored), or why it was refused.
    pub fn publish_messages(
        &self,
        messages: &[Routed],
        mandatory: bool,
    ) -> Result<Vec<Result<u32, ClientError>>, ClientError> {
        let (_, body) = self.call(
            Op::QueuePublish,
            |out| encode_publish(out, mandatory, messages),
            None,
        )?;
        confirm_results(body, messages.len())
    }

    /// Publishes in one frame without waiting: `done` runs on the client's reader
    /// thread with each confirm, in order (or with the error that failed the whole
    /// frame, `Disconnected` if the connection went first). Keep it short. When this
    /// returns `Err`, `done` is not called.
    pub fn publish_messages_with<F>(
        &self,
        messages: &[Routed],
        mandatory: bool,
        done: F,
    ) -> Result<(), ClientError>
    where
        F: FnOnce(ConfirmResults) + Send + 'static,
    {
        let n = messages.len();
        self.call_with(
            Op::QueuePublish,
            |out| encode_publish(out, mandatory, messages),
            Box::new(move |reply| done(reply.and_then(|(_, body)| confirm_results(body, n)))),
        )
    }

    /// Starts consuming `queue`.
    pub fn consume(
        &self,
        queue: &str,
        options: ConsumeOptions,
    ) -> Result<ClientQueueConsumer, ClientError> {
        let id = self.inner.next_id();
        let request = Consume {
            consumer_id: id,
            queue: queue.to_owned(),
            prefetch: options.prefetch,
            no_ack: options.no_ack,
        };
        let source = push::open(&self.inner.queue_consumers, id, request.clone())?;
        if let Err(error) = self.call(Op::QueueConsume, |out| request.encode(out), None) {
            lock(&self.inner.queue_consumers).remove(&id);
            return Err(error);
        }
        Ok(ClientQueueConsumer {
            shared: Arc::new(QueueConsumerShared {
                id,
                inner: self.inner.clone(),
                cancelled: AtomicBool::new(false),
            }),
            source,
        })
    }
}

struct QueueConsumerShared {
    id: u64,
    inner: Arc<Inner>,
    cancelled: AtomicBool,
}

impl QueueConsumerShared {
    fn answer(&self, op: Op, tag: u64, multiple: bool, requeue: bool) -> Result<(), ClientError> {
        let id = self.id;
        self.inner.fire(op, |out| {
            encode_answer(out, id, tag, multiple, requeue);
        })
    }

    fn cancel(&self) -> Result<(), ClientError> {
        if self.cancelled.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        lock(&self.inner.queue_consumers).remove(&self.id);
        let id = self.id;
        self.inner.fire(Op::QueueCancel, |out| {
            bytes::BufMut::put_u64_le(out, id);
        })
    }
}

/// A queue consumer made through a `Client`. Dropping it cancels it (unacknowledged
/// deliveries go back to the queue).
pub struct ClientQueueConsumer {
    shared: Arc<QueueConsumerShared>,
    source: push::Source<QueueMessage>,
}

impl std::fmt::Debug for ClientQueueConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientQueueConsumer")
            .field("id", &self.shared.id)
            .finish()
    }
}

/// A delivery received through a `ClientQueueConsumer`.
pub struct ClientDelivery {
    /// What the server pushed.
    pub delivery: QueueMessage,
    consumer: Arc<QueueConsumerShared>,
}

impl std::fmt::Debug for ClientDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.delivery.fmt(f)
    }
}

impl ClientDelivery {
    /// Acknowledges this delivery (and every earlier one, if `multiple`).
    pub fn ack(&self, multiple: bool) -> Result<(), ClientError> {
        self.consumer
            .answer(Op::QueueAck, self.delivery.delivery_tag, multiple, false)
    }

    /// Rejects it: back to the queue (`requeue`) or dead-lettered / dropped.
    pub fn nack(&self, multiple: bool, requeue: bool) -> Result<(), ClientError> {
        self.consumer
            .answer(Op::QueueNack, self.delivery.delivery_tag, multiple, requeue)
    }
}

impl ClientQueueConsumer {
    /// The next delivery, waiting up to `timeout`.
    pub fn next_timeout(&self, timeout: Duration) -> Result<ClientDelivery, ClientError> {
        let delivery = self.source.next(timeout, &self.shared.inner)?;
        Ok(ClientDelivery {
            delivery,
            consumer: self.shared.clone(),
        })
    }

    /// The next delivery if one is buffered; `Err` once the consumer ended (the
    /// server's reason) or the client closed, and every delivery was taken.
    pub fn try_next(&self) -> Result<Option<ClientDelivery>, ClientError> {
        let delivery = self.source.try_next(&self.shared.inner)?;
        Ok(delivery.map(|delivery| ClientDelivery {
            delivery,
            consumer: self.shared.clone(),
        }))
    }

    /// The eventfd that becomes readable when deliveries arrive (after `arm`).
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.source.ready.fd()
    }

    /// Announces the caller is about to wait on `fd()`; true if deliveries (or the end
    /// of the consumer) are already there.
    pub fn arm(&self) -> bool {
        self.source.ready.arm()
    }

    /// Clears the eventfd after it was readable.
    pub fn clear_notification(&self) -> Result<(), ClientError> {
        self.source.ready.clear_notification()
    }

    /// Acknowledges `delivery_tag` (and every earlier one, if `multiple`).
    pub fn ack(&self, delivery_tag: u64, multiple: bool) -> Result<(), ClientError> {
        self.shared
            .answer(Op::QueueAck, delivery_tag, multiple, false)
    }

    /// Rejects `delivery_tag` (and every earlier one, if `multiple`).
    pub fn nack(
        &self,
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
    ) -> Result<(), ClientError> {
        self.shared
            .answer(Op::QueueNack, delivery_tag, multiple, requeue)
    }

    /// Cancels the consumer.
    pub fn cancel(self) -> Result<(), ClientError> {
        self.shared.cancel()
    }
}

impl Drop for ClientQueueConsumer {
    fn drop(&mut self) {
        let _ = self.shared.cancel();
    }
}
