//! Messages of the subjects model: a validated subject, an optional reply subject,
//! optional headers and a payload, all shared without copying (`bytes::Bytes`, `Arc`).
//!
//! Owns: the `Subject` type (a publish subject that passed `validate_subject`) and
//! `Message`. Never: copies a payload; a fan-out to N subscribers clones reference
//! counts, not bytes.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::routing::{plainly_valid_subject, validate_subject, SubjectError, SUBJECT_BYTES_MAX};

/// A publish subject: dot-separated tokens, no wildcards, no whitespace, at most
/// `SUBJECT_BYTES_MAX` bytes. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Subject(Bytes);

impl Subject {
    /// Validates `text` as a publish subject.
    pub fn new(text: impl Into<Bytes>) -> Result<Self, SubjectError> {
        let bytes: Bytes = text.into();
        if plainly_valid_subject(&bytes) {
            return Ok(Self(bytes));
        }
        if bytes.len() > SUBJECT_BYTES_MAX {
            return Err(SubjectError::TooLong {
                len: bytes.len(),
                max: SUBJECT_BYTES_MAX,
            });
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| SubjectError::NotUtf8)?;
        validate_subject(text)?;
        Ok(Self(bytes))
    }

    /// The subject's text.
    pub fn as_str(&self) -> &str {
        // SAFETY: `new` is the only constructor and accepted these bytes as UTF-8;
        // `Bytes` is immutable, so they still are.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The subject's bytes (shared with the buffer it was made from).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<&'static str> for Subject {
    type Error = SubjectError;

    fn try_from(text: &'static str) -> Result<Self, Self::Error> {
        Self::new(Bytes::from_static(text.as_bytes()))
    }
}

impl TryFrom<String> for Subject {
    type Error = SubjectError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::new(Bytes::from(text))
    }
}

/// Header name/value pairs, in order; a name may repeat.
pub type Headers = Arc<[(Bytes, Bytes)]>;

/// A message on a subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Where it was published.
    pub subject: Subject,
    /// Where a responder should publish its answer (requests).
    pub reply: Option<Subject>,
    /// Optional headers.
    pub headers: Option<Headers>,
    /// The payload.
    pub payload: Bytes,
    /// Who published it, when the publisher asked not to receive its own messages
    /// (a NATS connection with `echo: false`); 0 otherwise. Not carried over the native
    /// protocol.
    pub origin: u64,
}

impl Message {
    /// A message without reply subject or headers.
    pub fn new(subject: Subject, payload: impl Into<Bytes>) -> Self {
        Self {
            subject,
            reply: None,
            headers: None,
            payload: payload.into(),
            origin: 0,
        }
    }

    /// The bytes this message counts against a subscriber's pending limit: payload,
    /// subject, reply subject and headers.
    pub fn size(&self) -> usize {
        let headers = self
            .headers
            .as_ref()
            .map_or(0, |h| h.iter().map(|(k, v)| k.len() + v.len()).sum());
        self.payload.len()
            + self.subject.as_bytes().len()
            + self.reply.as_ref().map_or(0, |r| r.as_bytes().len())
            + headers
    }
}
