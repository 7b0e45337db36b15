//! Shared by the subjects tests (`pubsub.rs`, `pubsub_direct.rs`): a runtime of N
//! shards, numbered messages, subscription options for a queue group member or a small
//! pending buffer, a handler subscription on a chosen shard, and a shard held busy
//! until released.

#![allow(clippy::unwrap_used, dead_code)]

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use ringbroker::pubsub::{Message, PendingLimits, ShardPubSub, SubscribeOptions};
use ringbroker::runtime::{Runtime, RuntimeConfig, ShardCtx};

pub fn runtime(shards: usize) -> Runtime {
    Runtime::start(RuntimeConfig {
        shards: Some(shards),
        ..RuntimeConfig::default()
    })
    .unwrap()
}

/// Options for a member of queue group `name`.
pub fn group(name: &str) -> SubscribeOptions {
    SubscribeOptions {
        queue_group: Some(name.into()),
        ..SubscribeOptions::default()
    }
}

/// Options whose pending buffer holds at most `messages` (the other limits default).
pub fn at_most(messages: usize) -> SubscribeOptions {
    SubscribeOptions {
        pending: PendingLimits {
            messages,
            ..PendingLimits::default()
        },
        ..SubscribeOptions::default()
    }
}

/// A message on `subject` whose payload is `n`, big-endian.
pub fn numbered(subject: &str, n: u32) -> Message {
    Message::new(
        subject.to_owned().try_into().unwrap(),
        Bytes::from(n.to_be_bytes().to_vec()),
    )
}

/// The number a `numbered` message (or any payload of 4 or more bytes) carries.
pub fn number(message: &Message) -> u32 {
    u32::from_be_bytes(message.payload[..4].try_into().unwrap())
}

/// A handler subscription on shard `shard` sending each message's number to the
/// returned receiver; returns once every shard routes to it.
pub fn handler_on(rt: &Runtime, shard: usize, pattern: &'static str) -> mpsc::Receiver<u32> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    rt.handle()
        .spawn(shard, move |ctx: &mut ShardCtx| {
            let on_message = move |_: &mut ShardCtx, m: Message| {
                let _ = tx.send(number(&m));
            };
            let ready = move |_: &mut ShardCtx| ready_tx.send(()).unwrap();
            ShardPubSub::get(ctx)
                .subscribe(ctx, pattern, None, None, on_message, ready)
                .unwrap();
        })
        .unwrap();
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    rx
}

/// Holds shard `shard` busy (a task that waits) from when this returns until the
/// returned sender is used or dropped (or 10 s pass).
pub fn hold(rt: &Runtime, shard: usize) -> mpsc::Sender<()> {
    let (held_tx, held_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    rt.handle()
        .spawn(shard, move |_: &mut ShardCtx| {
            held_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(Duration::from_secs(10));
        })
        .unwrap();
    held_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    release_tx
}
