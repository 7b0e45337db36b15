//! Subjects frames: `PUBLISH`, `SUBSCRIBE`, `UNSUBSCRIBE`, `REQUEST` and the pushed
//! `MESSAGE`.
//!
//! Owns: their bodies. A message on the wire is
//! `subject str, reply str (empty = none), headers, payload bytes`; decoding validates
//! the subjects and leaves every byte string a slice of the frame.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::ProtocolError;
use super::wire::{Reader, Writer};
use crate::pubsub::{Message, Subject};

/// The most messages one `PUBLISH` frame carries.
pub const PUBLISH_BATCH_MAX: usize = 65536;
/// Bytes of the smallest message on the wire (empty reply, no headers, empty payload,
/// a one-byte subject).
const MESSAGE_BYTES_MIN: usize = 4 + 1 + 4 + 2 + 4;

/// Appends one message.
pub fn encode_message(out: &mut BytesMut, message: &Message) {
    Writer::bytes(out, message.subject.as_bytes());
    Writer::bytes(
        out,
        message.reply.as_ref().map_or(&[][..], |r| r.as_bytes()),
    );
    Writer::headers(out, message.headers.as_deref());
    Writer::bytes(out, &message.payload);
}

/// Reads one message, validating its subjects.
pub fn decode_message(r: &mut Reader) -> Result<Message, ProtocolError> {
    let subject = Subject::new(r.str_bytes()?).map_err(|_| r.malformed("invalid subject"))?;
    let reply = r.str_bytes()?;
    let reply = if reply.is_empty() {
        None
    } else {
        Some(Subject::new(reply).map_err(|_| r.malformed("invalid reply subject"))?)
    };
    let headers = r.headers()?;
    let payload = r.bytes()?;
    Ok(Message {
        subject,
        reply,
        headers,
        payload,
        origin: 0,
    })
}

/// `PUBLISH` body: a `u32` count, then the messages.
pub fn encode_publish(out: &mut BytesMut, messages: &[Message]) {
    out.put_u32_le(u32::try_from(messages.len()).unwrap_or(u32::MAX));
    for message in messages {
        encode_message(out, message);
    }
}

/// Reads a `PUBLISH` body.
pub fn decode_publish(body: Bytes) -> Result<Vec<Message>, ProtocolError> {
    let mut r = Reader::new(body, "PUBLISH");
    let n = r.count(MESSAGE_BYTES_MIN, PUBLISH_BATCH_MAX)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(decode_message(&mut r)?);
    }
    r.end()?;
    Ok(out)
}

/// `SUBSCRIBE` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The client's id for the subscription (unique on its connection); pushed
    /// `MESSAGE` frames carry it.
    pub sub_id: u64,
    /// The subject pattern (`*` one token, `>` the rest).
    pub pattern: String,
    /// Queue group: each message goes to one member of the group.
    pub queue_group: Option<String>,
    /// Unsubscribe after this many messages (0 = never).
    pub max_messages: u64,
}

impl Subscribe {
    /// Appends the body.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u64_le(self.sub_id);
        Writer::str(out, &self.pattern);
        Writer::opt_str(out, self.queue_group.as_deref());
        out.put_u64_le(self.max_messages);
    }

    /// Reads a body.
    pub fn decode(body: Bytes) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(body, "SUBSCRIBE");
        let out = Self {
            sub_id: r.u64()?,
            pattern: r.string()?,
            queue_group: r.opt_string()?,
            max_messages: r.u64()?,
        };
        r.end()?;
        Ok(out)
    }
}

/// `UNSUBSCRIBE` body: the subscription id.
pub fn decode_unsubscribe(body: Bytes) -> Result<u64, ProtocolError> {
    let mut r = Reader::new(body, "UNSUBSCRIBE");
    let id = r.u64()?;
    r.end()?;
    Ok(id)
}

/// `REQUEST` body: a timeout, then the message (its reply subject is ignored: the
/// server makes a fresh inbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// How long to wait for the first reply, in milliseconds.
    pub timeout_ms: u32,
    /// What to send.
    pub message: Message,
}

impl Request {
    /// Appends the body.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.timeout_ms);
        encode_message(out, &self.message);
    }

    /// Reads a body.
    pub fn decode(body: Bytes) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(body, "REQUEST");
        let timeout_ms = r.u32()?;
        let message = decode_message(&mut r)?;
        r.end()?;
        Ok(Self {
            timeout_ms,
            message,
        })
    }
}

/// `MESSAGE` body (server push): the subscription id, then the message.
pub fn encode_delivery(out: &mut BytesMut, sub_id: u64, message: &Message) {
    out.put_u64_le(sub_id);
    encode_message(out, message);
}

/// Reads a `MESSAGE` body.
pub fn decode_delivery(body: Bytes) -> Result<(u64, Message), ProtocolError> {
    let mut r = Reader::new(body, "MESSAGE");
    let sub_id = r.u64()?;
    let message = decode_message(&mut r)?;
    r.end()?;
    Ok((sub_id, message))
}

/// Reads a `REQUEST` reply body: the reply message.
pub fn decode_reply(body: Bytes) -> Result<Message, ProtocolError> {
    let mut r = Reader::new(body, "REQUEST reply");
    let message = decode_message(&mut r)?;
    r.end()?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    fn message(subject: &str, reply: Option<&str>, payload: Vec<u8>, headers: usize) -> Message {
        let headers: Vec<(Bytes, Bytes)> = (0..headers)
            .map(|i| (Bytes::from(format!("h{i}")), Bytes::from(vec![i as u8; i])))
            .collect();
        Message {
            subject: Subject::new(subject.to_owned()).expect("subject"),
            reply: reply.map(|r| Subject::new(r.to_owned()).expect("reply")),
            headers: (!headers.is_empty()).then(|| Arc::from(headers)),
            payload: Bytes::from(payload),
            origin: 0,
        }
    }

    proptest! {
        #[test]
        fn publish_batches_roundtrip(
            batch in proptest::collection::vec(
                ("[a-z]{1,8}(\\.[a-z0-9_]{1,8}){0,3}",
                 proptest::option::of("_INBOX\\.[a-z0-9]{1,12}"),
                 proptest::collection::vec(any::<u8>(), 0..300),
                 0usize..4),
                0..20)
        ) {
            let messages: Vec<Message> = batch
                .iter()
                .map(|(s, r, p, h)| message(s, r.as_deref(), p.clone(), *h))
                .collect();
            let mut out = BytesMut::new();
            encode_publish(&mut out, &messages);
            prop_assert_eq!(decode_publish(out.freeze()).expect("decodes"), messages);
        }

        #[test]
        fn publish_decoding_never_panics_on_arbitrary_bytes(
            body in proptest::collection::vec(any::<u8>(), 0..512)
        ) {
            let _ = decode_publish(Bytes::from(body));
        }
    }

    #[test]
    fn invalid_subjects_are_malformed() {
        let mut out = BytesMut::new();
        out.put_u32_le(1);
        Writer::str(&mut out, "orders.*");
        Writer::str(&mut out, "");
        Writer::headers(&mut out, None);
        Writer::bytes(&mut out, b"x");
        assert!(
            decode_publish(out.freeze()).is_err(),
            "wildcard publish subject"
        );
    }

    #[test]
    fn subscribe_and_request_roundtrip() {
        let sub = Subscribe {
            sub_id: 7,
            pattern: "orders.>".into(),
            queue_group: Some("workers".into()),
            max_messages: 10,
        };
        let mut out = BytesMut::new();
        sub.encode(&mut out);
        assert_eq!(Subscribe::decode(out.freeze()), Ok(sub));
        let req = Request {
            timeout_ms: 250,
            message: message("svc.time", None, b"now?".to_vec(), 1),
        };
        let mut out = BytesMut::new();
        req.encode(&mut out);
        assert_eq!(Request::decode(out.freeze()), Ok(req));
    }
}
