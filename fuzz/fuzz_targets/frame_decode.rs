//! Fuzz target: arbitrary bytes as a native-protocol byte stream, the way a server
//! reads a connection: frames are split off with `split_frame` under a 64 KiB maximum,
//! and each body is decoded with the decoder of its op (requests and replies alike).
//!
//! What it asserts:
//! - nothing panics and nothing allocates past the input (every length is checked
//!   against the bytes present before use);
//! - a frame `split_frame` accepts lies within the input and is at most the maximum;
//! - a `PUBLISH`, `STREAM_PUBLISH` or `QUEUE_PUBLISH` body that decodes re-encodes to a body that decodes to the same
//!   messages.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use ringbroker::protocol::pubsub::{
    decode_delivery, decode_publish, decode_reply, decode_unsubscribe, encode_publish, Request,
    Subscribe,
};
use ringbroker::protocol::queue as q;
use ringbroker::protocol::session::{ErrorBody, Hello, Welcome};
use ringbroker::protocol::stream as st;
use ringbroker::protocol::{split_frame, Op, FLAG_REPLY, HEADER_BYTES};

const MAX_FRAME: u32 = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let mut rest = Bytes::copy_from_slice(data);
    while let Ok(Some((header, total))) = split_frame(&rest, MAX_FRAME) {
        assert!(total <= rest.len());
        assert!(total <= MAX_FRAME as usize);
        assert_eq!(total, HEADER_BYTES + header.body_len);
        let frame = rest.split_to(total);
        let body = frame.slice(HEADER_BYTES..);
        let reply = header.has(FLAG_REPLY);
        match header.op {
            Op::Hello if reply => drop(Welcome::decode(body)),
            Op::Hello => drop(Hello::decode(body)),
            Op::Error => drop(ErrorBody::decode(body)),
            Op::Publish => {
                if let Ok(messages) = decode_publish(body) {
                    let mut again = BytesMut::new();
                    encode_publish(&mut again, &messages);
                    let decoded = decode_publish(again.freeze()).expect("re-encoded body");
                    assert_eq!(decoded, messages);
                }
            }
            Op::Subscribe => drop(Subscribe::decode(body)),
            Op::Unsubscribe => drop(decode_unsubscribe(body)),
            Op::Request if reply => drop(decode_reply(body)),
            Op::Request => drop(Request::decode(body)),
            Op::Message => drop(decode_delivery(body)),
            Op::Ping | Op::Pong => {}
            _ => streams_and_queues(header.op, reply, body),
        }
    }
});

fn streams_and_queues(op: Op, reply: bool, body: Bytes) {
    match (op, reply) {
        (Op::StreamCreate | Op::StreamUpdate, false) => {
            drop(st::decode_stream_config(body, "fuzz"))
        }
        (Op::StreamInfo, true) => drop(st::decode_stream_info(body)),
        (Op::StreamList | Op::ConsumerList, true) => drop(st::decode_names(body, "fuzz")),
        (Op::StreamPublish, false) => {
            if let Ok(records) = st::decode_publish(body) {
                let mut again = BytesMut::new();
                st::encode_publish(&mut again, &records);
                assert_eq!(st::decode_publish(again.freeze()).expect("re-encoded"), records);
            }
        }
        (Op::StreamPublish, true) => drop(st::decode_publish_reply(body)),
        (Op::ConsumerCreate, false) => drop(st::decode_consumer_create(body, "fuzz")),
        (Op::ConsumerInfo, true) => drop(st::decode_consumer_info(body)),
        (Op::ConsumerJoin, false) => drop(st::Attach::decode(body, true)),
        (Op::ConsumerSubscribe, false) => drop(st::Attach::decode(body, false)),
        (Op::StreamMessage, _) => drop(st::decode_message(body)),
        (Op::StreamAck, _) => drop(st::decode_ack(body)),
        (Op::StreamNak, _) => drop(st::decode_nak(body)),
        (Op::ConsumerClosed, _) => drop(st::decode_consumer_closed(body)),
        (Op::QueueBind | Op::QueueUnbind | Op::ExchangeBind, false) => {
            drop(q::Bind::decode(body, "fuzz"))
        }
        (Op::QueueDeclare | Op::QueueInfo, true) => drop(q::decode_queue_info(body)),
        (Op::QueuePublish, false) => {
            if let Ok((mandatory, messages)) = q::decode_publish(body) {
                let mut again = BytesMut::new();
                q::encode_publish(&mut again, mandatory, &messages);
                let decoded = q::decode_publish(again.freeze()).expect("re-encoded");
                assert_eq!(decoded, (mandatory, messages));
            }
        }
        (Op::QueuePublish, true) => drop(q::decode_confirms(body)),
        (Op::QueueConsume, false) => drop(q::Consume::decode(body)),
        (Op::QueueMessage, _) => drop(q::decode_delivery(body)),
        (Op::QueueAck | Op::QueueNack, _) => drop(q::decode_answer(body, "fuzz")),
        (Op::ExchangeList, true) => {
            drop(q::decode_definitions(body, "fuzz", ringbroker::queue::ExchangeConfig::decode))
        }
        (Op::QueueList, true) => {
            drop(q::decode_definitions(body, "fuzz", ringbroker::queue::QueueConfig::decode))
        }
        (_, _) => drop(st::decode_name(body, "fuzz")),
    }
}
