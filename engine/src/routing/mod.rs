//! Routing: subjects, patterns and the matcher every model routes with (subjects and
//! their queue groups, stream subject filters, topic exchanges), and the exchange routing
//! table of the AMQP model.
//!
//! Owns: subject syntax and validation, and pattern matching. Never: knows about
//! subscriptions, queues or streams (the models keep their own values in a `Matcher`),
//! or anything of the network.

pub mod exchange;
pub mod matcher;
pub mod subject;

pub use exchange::{
    Binding, Destination, ExchangeKind, RouteError, RoutingTable, DEFAULT_EXCHANGE, X_MATCH,
};
pub use matcher::{naive_match, Matcher, MATCH_CACHE_MAX};
pub(crate) use subject::plainly_valid_subject;
pub use subject::{
    validate_subject, Pattern, SubjectError, Syntax, Token, SUBJECT_BYTES_MAX, SUBJECT_TOKENS_MAX,
};
