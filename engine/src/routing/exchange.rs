//! Exchanges and bindings (the AMQP 0-9-1 routing model) as one routing table: which
//! queues a message published to an exchange with a routing key and headers reaches.
//!
//! Owns: the four exchange kinds (`direct`: exact key; `fanout`: every binding;
//! `topic`: dot-separated words with `*` = one word and `#` = zero or more, through the
//! shared `Matcher`; `headers`: `x-match` `all` | `any` over header values), exchange to
//! exchange bindings (followed once each: cycles end), and the default exchange (`""`),
//! which routes to the queue named by the routing key. Never: knows where a queue lives
//! or what is in it; a queue reached along several bindings appears once.
//!
//! Topic routing keys are words separated by dots; a key the subject rules refuse
//! (empty words, whitespace) matches only the bindings that are all `#`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use super::matcher::Matcher;
use super::subject::{validate_subject, Pattern, SubjectError, Syntax, Token};
use crate::hash::FastMap;

/// The default exchange: routes to the queue whose name is the routing key.
pub const DEFAULT_EXCHANGE: &str = "";

/// How an exchange routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    /// To the bindings whose key equals the routing key.
    Direct,
    /// To every binding.
    Fanout,
    /// To the bindings whose pattern (`*` one word, `#` zero or more) matches the key.
    Topic,
    /// To the bindings whose header arguments match the message's headers.
    Headers,
}

impl ExchangeKind {
    /// The AMQP name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
        }
    }
}

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// A queue.
    Queue(Arc<str>),
    /// Another exchange (exchange-to-exchange binding).
    Exchange(Arc<str>),
}

/// A headers binding's `x-match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XMatch {
    All,
    Any,
}

/// The binding argument that chooses all/any for a headers binding.
pub const X_MATCH: &[u8] = b"x-match";

/// Why a binding or a route was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No exchange of that name.
    #[error("no exchange {0:?}")]
    NoExchange(String),
    /// A topic binding key is not a valid pattern.
    #[error("bad topic binding key: {0}")]
    BadKey(#[from] SubjectError),
    /// `x-match` is neither `all` nor `any`.
    #[error("x-match must be \"all\" or \"any\", not {0:?}")]
    BadXMatch(String),
    /// The default exchange cannot be bound to or from.
    #[error("the default exchange cannot be bound")]
    DefaultExchange,
}

/// One binding as declared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Binding {
    /// Where it leads.
    pub destination: Destination,
    /// Its key (direct, topic); ignored by fanout and headers.
    pub routing_key: String,
    /// Its arguments (headers: the values to match and `x-match`).
    pub arguments: Vec<(Bytes, Bytes)>,
}

impl Binding {
    /// A binding to `destination` with `routing_key` and `arguments`.
    pub fn new(
        destination: Destination,
        routing_key: &str,
        arguments: Vec<(Bytes, Bytes)>,
    ) -> Self {
        Self {
            destination,
            routing_key: routing_key.to_owned(),
            arguments,
        }
    }
}

#[derive(Debug)]
struct Exchange {
    kind: ExchangeKind,
    bindings: Vec<Binding>,
    /// The same bindings, to find one without a scan.
    set: HashSet<Binding>,
    direct: FastMap<String, Vec<Destination>>,
    topic: Matcher<Destination>,
    /// Topic bindings made only of `#`: the ones an empty or odd key matches.
    topic_any: Vec<Destination>,
    headers: Vec<HeadersBinding>,
}

/// A headers binding, ready to match: all or any of these (name, value) pairs.
type HeadersBinding = (XMatch, Vec<(Bytes, Bytes)>, Destination);

impl Exchange {
    fn new(kind: ExchangeKind) -> Self {
        Self {
            kind,
            bindings: Vec::new(),
            set: HashSet::new(),
            direct: FastMap::default(),
            topic: Matcher::new(),
            topic_any: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Adds `binding` to the lookup structure of this kind.
    fn index(&mut self, binding: &Binding) -> Result<(), RouteError> {
        let dest = binding.destination.clone();
        match self.kind {
            ExchangeKind::Direct => self
                .direct
                .entry(binding.routing_key.clone())
                .or_default()
                .push(dest),
            ExchangeKind::Fanout => {}
            ExchangeKind::Topic => {
                let pattern = Pattern::parse(&binding.routing_key, Syntax::Topic)?;
                if pattern.tokens().iter().all(|t| *t == Token::ZeroOrMore) {
                    self.topic_any.push(dest.clone());
                }
                self.topic.insert(&pattern, dest);
            }
            ExchangeKind::Headers => {
                let (x_match, args) = header_args(&binding.arguments)?;
                self.headers.push((x_match, args, dest));
            }
        }
        Ok(())
    }

    /// Removes `binding` from the lookup structure of this kind.
    fn deindex(&mut self, binding: &Binding) {
        let dest = &binding.destination;
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(dests) = self.direct.get_mut(&binding.routing_key) {
                    if let Some(i) = dests.iter().position(|d| d == dest) {
                        dests.remove(i);
                    }
                    if dests.is_empty() {
                        self.direct.remove(&binding.routing_key);
                    }
                }
            }
            ExchangeKind::Fanout => {}
            ExchangeKind::Topic => {
                if let Ok(pattern) = Pattern::parse(&binding.routing_key, Syntax::Topic) {
                    self.topic.remove(&pattern, dest);
                    if pattern.tokens().iter().all(|t| *t == Token::ZeroOrMore) {
                        if let Some(i) = self.topic_any.iter().position(|d| d == dest) {
                            self.topic_any.remove(i);
                        }
                    }
                }
            }
            ExchangeKind::Headers => {
                if let Ok((x_match, args)) = header_args(&binding.arguments) {
                    let same = |h: &HeadersBinding| h.0 == x_match && h.1 == args && h.2 == *dest;
                    if let Some(i) = self.headers.iter().position(same) {
                        self.headers.remove(i);
                    }
                }
            }
        }
    }

    /// Removes the bindings `remove` selects; returns how many.
    fn remove_where(&mut self, remove: impl Fn(&Binding) -> bool) -> usize {
        let doomed: Vec<Binding> = self
            .bindings
            .iter()
            .filter(|b| remove(b))
            .cloned()
            .collect();
        for binding in &doomed {
            self.deindex(binding);
            self.set.remove(binding);
        }
        if !doomed.is_empty() {
            self.bindings.retain(|b| !remove(b));
        }
        doomed.len()
    }

    fn destinations(&mut self, key: &str, headers: &[(Bytes, Bytes)], out: &mut Vec<Destination>) {
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(dests) = self.direct.get(key) {
                    out.extend(dests.iter().cloned());
                }
            }
            ExchangeKind::Fanout => out.extend(self.bindings.iter().map(|b| b.destination.clone())),
            ExchangeKind::Topic => {
                if validate_subject(key).is_ok() {
                    out.extend(self.topic.matches(key).iter().cloned());
                } else {
                    out.extend(self.topic_any.iter().cloned());
                }
            }
            ExchangeKind::Headers => {
                for (x_match, args, dest) in &self.headers {
                    let has = |(name, value): &(Bytes, Bytes)| {
                        headers.iter().any(|(n, v)| n == name && v == value)
                    };
                    let hit = match x_match {
                        XMatch::All => args.iter().all(has),
                        XMatch::Any => args.iter().any(has),
                    };
                    if hit {
                        out.push(dest.clone());
                    }
                }
            }
        }
    }
}

/// A headers binding's x-match and the arguments to match (`x-` arguments excluded).
fn header_args(arguments: &[(Bytes, Bytes)]) -> Result<(XMatch, Vec<(Bytes, Bytes)>), RouteError> {
    let mut x_match = XMatch::All;
    let mut args = Vec::new();
    for (name, value) in arguments {
        if name.as_ref() == X_MATCH {
            x_match = match value.as_ref() {
                b"all" => XMatch::All,
                b"any" => XMatch::Any,
                other => return Err(RouteError::BadXMatch(String::from_utf8_lossy(other).into())),
            };
        } else if !name.starts_with(b"x-") {
            args.push((name.clone(), value.clone()));
        }
    }
    Ok((x_match, args))
}

/// Every exchange and binding, and the queue names the default exchange routes to.
#[derive(Debug, Default)]
pub struct RoutingTable {
    exchanges: HashMap<Arc<str>, Exchange>,
    queues: HashMap<Arc<str>, ()>,
}

impl RoutingTable {
    /// An empty table (the default exchange is implicit).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds exchange `name` of `kind` (no-op if it exists).
    pub fn add_exchange(&mut self, name: &str, kind: ExchangeKind) {
        self.exchanges
            .entry(Arc::from(name))
            .or_insert_with(|| Exchange::new(kind));
    }

    /// Removes exchange `name`, its bindings, and the bindings that lead to it.
    pub fn remove_exchange(&mut self, name: &str) {
        self.exchanges.remove(name);
        self.unbind_all(&Destination::Exchange(Arc::from(name)));
    }

    /// Whether exchange `name` exists.
    pub fn has_exchange(&self, name: &str) -> bool {
        name == DEFAULT_EXCHANGE || self.exchanges.contains_key(name)
    }

    /// Adds queue `name` (the default exchange routes to it).
    pub fn add_queue(&mut self, name: &str) {
        self.queues.insert(Arc::from(name), ());
    }

    /// Removes queue `name` and every binding to it.
    pub fn remove_queue(&mut self, name: &str) {
        self.queues.remove(name);
        self.unbind_all(&Destination::Queue(Arc::from(name)));
    }

    /// Binds `binding.destination` to `exchange`; binding twice is a no-op.
    pub fn bind(&mut self, exchange: &str, binding: Binding) -> Result<(), RouteError> {
        if exchange == DEFAULT_EXCHANGE {
            return Err(RouteError::DefaultExchange);
        }
        let ex = self
            .exchanges
            .get_mut(exchange)
            .ok_or_else(|| RouteError::NoExchange(exchange.to_owned()))?;
        if ex.set.contains(&binding) {
            return Ok(());
        }
        ex.index(&binding)?;
        ex.set.insert(binding.clone());
        ex.bindings.push(binding);
        Ok(())
    }

    /// Removes a binding; returns whether it existed.
    pub fn unbind(&mut self, exchange: &str, binding: &Binding) -> bool {
        match self.exchanges.get_mut(exchange) {
            Some(ex) if ex.set.contains(binding) => ex.remove_where(|b| b == binding) > 0,
            _ => false,
        }
    }

    fn unbind_all(&mut self, dest: &Destination) {
        for ex in self.exchanges.values_mut() {
            ex.remove_where(|b| b.destination == *dest);
        }
    }

    /// Whether `exchange` has `binding`.
    pub fn has_binding(&self, exchange: &str, binding: &Binding) -> bool {
        self.exchanges
            .get(exchange)
            .is_some_and(|e| e.set.contains(binding))
    }

    /// The bindings of exchange `name` (as declared).
    pub fn bindings(&self, name: &str) -> &[Binding] {
        self.exchanges.get(name).map_or(&[], |e| &e.bindings)
    }

    /// Whether any binding leads to `dest`.
    pub fn is_bound(&self, dest: &Destination) -> bool {
        self.exchanges
            .values()
            .any(|e| e.bindings.iter().any(|b| b.destination == *dest))
    }

    /// The queues a message published to `exchange` with `routing_key` and `headers`
    /// reaches, each once, sorted. `NoExchange` if the exchange does not exist.
    pub fn route(
        &mut self,
        exchange: &str,
        routing_key: &str,
        headers: &[(Bytes, Bytes)],
    ) -> Result<Vec<Arc<str>>, RouteError> {
        if exchange == DEFAULT_EXCHANGE {
            return Ok(self
                .queues
                .get_key_value(routing_key)
                .map(|(q, ())| vec![q.clone()])
                .unwrap_or_default());
        }
        let Some((first, _)) = self.exchanges.get_key_value(exchange) else {
            return Err(RouteError::NoExchange(exchange.to_owned()));
        };
        let mut queues = Vec::new();
        let mut visited: Vec<Arc<str>> = Vec::new();
        let mut pending: Vec<Arc<str>> = vec![first.clone()];
        while let Some(name) = pending.pop() {
            if visited.contains(&name) {
                continue;
            }
            let mut dests = Vec::new();
            if let Some(ex) = self.exchanges.get_mut(&name) {
                ex.destinations(routing_key, headers, &mut dests);
            }
            visited.push(name);
            for dest in dests {
                match dest {
                    Destination::Queue(q) => queues.push(q),
                    Destination::Exchange(e) => pending.push(e),
                }
            }
        }
        if queues.len() > 1 {
            queues.sort();
            queues.dedup();
        }
        Ok(queues)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(name: &str) -> Destination {
        Destination::Queue(Arc::from(name))
    }

    fn bind(t: &mut RoutingTable, ex: &str, q: &str, key: &str) {
        let binding = Binding {
            destination: queue(q),
            routing_key: key.into(),
            arguments: Vec::new(),
        };
        t.bind(ex, binding).expect("bind");
    }

    fn routed(t: &mut RoutingTable, ex: &str, key: &str) -> Vec<String> {
        let queues = t.route(ex, key, &[]).expect("route");
        queues.iter().map(|q| q.to_string()).collect()
    }

    #[test]
    fn topic_routing_as_in_the_tutorials() {
        let mut t = RoutingTable::new();
        t.add_exchange("events", ExchangeKind::Topic);
        bind(&mut t, "events", "all", "#");
        bind(&mut t, "events", "orders", "order.*");
        bind(&mut t, "events", "high", "payment.processed.*");
        bind(&mut t, "events", "us", "user.*.us");
        bind(&mut t, "events", "zero", "order.#");
        assert_eq!(
            routed(&mut t, "events", "order.placed"),
            ["all", "orders", "zero"]
        );
        assert_eq!(
            routed(&mut t, "events", "payment.processed.high"),
            ["all", "high"]
        );
        assert_eq!(routed(&mut t, "events", "user.registered"), ["all"]);
        assert_eq!(
            routed(&mut t, "events", "user.registered.us"),
            ["all", "us"]
        );
        assert_eq!(
            routed(&mut t, "events", "order"),
            ["all", "zero"],
            "# matches zero words"
        );
        assert_eq!(
            routed(&mut t, "events", ""),
            ["all"],
            "an empty key matches only #"
        );
    }

    #[test]
    fn direct_fanout_default_and_exchange_to_exchange() {
        let mut t = RoutingTable::new();
        t.add_exchange("d", ExchangeKind::Direct);
        t.add_exchange("f", ExchangeKind::Fanout);
        t.add_queue("q1");
        bind(&mut t, "d", "q1", "k");
        bind(&mut t, "d", "q2", "k");
        bind(&mut t, "f", "q3", "ignored");
        let e2e = Binding {
            destination: Destination::Exchange(Arc::from("f")),
            routing_key: "k".into(),
            arguments: Vec::new(),
        };
        t.bind("d", e2e.clone()).expect("e2e");
        // A cycle back to `d` is followed once.
        let back = Binding {
            destination: Destination::Exchange(Arc::from("d")),
            routing_key: String::new(),
            arguments: Vec::new(),
        };
        t.bind("f", back).expect("cycle");
        assert_eq!(routed(&mut t, "d", "k"), ["q1", "q2", "q3"]);
        assert_eq!(routed(&mut t, "d", "other"), Vec::<String>::new());
        assert_eq!(routed(&mut t, "", "q1"), ["q1"]);
        assert_eq!(routed(&mut t, "", "nope"), Vec::<String>::new());
        assert!(t.unbind("d", &e2e));
        assert_eq!(routed(&mut t, "d", "k"), ["q1", "q2"]);
        t.remove_queue("q2");
        assert_eq!(routed(&mut t, "d", "k"), ["q1"]);
        assert!(matches!(
            t.route("nope", "k", &[]),
            Err(RouteError::NoExchange(_))
        ));
        assert_eq!(t.bind("", e2e), Err(RouteError::DefaultExchange));
    }

    #[test]
    fn unbinding_removes_exactly_that_binding_in_every_kind() {
        let mut t = RoutingTable::new();
        t.add_exchange("t", ExchangeKind::Topic);
        bind(&mut t, "t", "a", "x.*");
        bind(&mut t, "t", "b", "x.*");
        bind(&mut t, "t", "c", "#");
        let b = Binding {
            destination: queue("b"),
            routing_key: "x.*".into(),
            arguments: Vec::new(),
        };
        assert!(t.unbind("t", &b));
        assert!(!t.unbind("t", &b));
        assert_eq!(routed(&mut t, "t", "x.y"), ["a", "c"]);
        t.remove_queue("c");
        assert_eq!(routed(&mut t, "t", ""), Vec::<String>::new());
        t.add_exchange("h", ExchangeKind::Headers);
        let args = vec![(Bytes::from_static(b"k"), Bytes::from_static(b"v"))];
        for q in ["h1", "h2"] {
            let binding = Binding {
                destination: queue(q),
                routing_key: String::new(),
                arguments: args.clone(),
            };
            t.bind("h", binding).expect("bind");
        }
        t.remove_queue("h1");
        assert_eq!(
            t.route("h", "", &args).expect("route"),
            vec![Arc::from("h2")]
        );
    }

    #[test]
    fn headers_all_and_any() {
        let mut t = RoutingTable::new();
        t.add_exchange("h", ExchangeKind::Headers);
        let args = |m: &'static str| {
            vec![
                (
                    Bytes::from_static(X_MATCH),
                    Bytes::from_static(m.as_bytes()),
                ),
                (Bytes::from_static(b"format"), Bytes::from_static(b"pdf")),
                (Bytes::from_static(b"type"), Bytes::from_static(b"report")),
            ]
        };
        for (q, m) in [("all", "all"), ("any", "any")] {
            let binding = Binding {
                destination: queue(q),
                routing_key: String::new(),
                arguments: args(m),
            };
            t.bind("h", binding).expect("bind");
        }
        let h = |pairs: &[(&'static str, &'static str)]| -> Vec<(Bytes, Bytes)> {
            pairs
                .iter()
                .map(|(n, v)| {
                    (
                        Bytes::from_static(n.as_bytes()),
                        Bytes::from_static(v.as_bytes()),
                    )
                })
                .collect()
        };
        let both = h(&[("format", "pdf"), ("type", "report")]);
        let one = h(&[("format", "pdf"), ("type", "log")]);
        let names = |v: Vec<Arc<str>>| v.iter().map(|q| q.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(t.route("h", "", &both).expect("route")),
            ["all", "any"]
        );
        assert_eq!(names(t.route("h", "", &one).expect("route")), ["any"]);
        assert!(t.route("h", "", &[]).expect("route").is_empty());
        let bad = Binding {
            destination: queue("x"),
            routing_key: String::new(),
            arguments: vec![(Bytes::from_static(X_MATCH), Bytes::from_static(b"most"))],
        };
        assert!(matches!(t.bind("h", bad), Err(RouteError::BadXMatch(_))));
    }
}
