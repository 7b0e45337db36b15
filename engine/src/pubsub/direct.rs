//! Direct delivery: a publish made by a thread that is not a shard (the application's,
//! a binding's) goes straight into the queues of the subscriptions that such threads
//! consume, without a trip through a shard. Only what needs a shard takes one.
//!
//! Owns: the runtime-wide table of *direct* subscriptions (a `Subscription` read by a
//! thread, with no auto-unsubscribe count and the `DropNewest` policy) and of every
//! queue-group member, the count of the other plain subscriptions, each publishing
//! thread's cached routes, and the counters of what it delivered. Never: delivers to a subscription owned by a shard handler, to a request
//! waiting on its inbox, or to a queue group with a member that is not direct. Those
//! are the shard's (`ShardPubSub::publish_rest`), told which groups were served here,
//! so each group still gets each message once.
//!
//! Ordering: a subscription is direct for its whole life or never, and every message a
//! thread publishes reaches a direct one by this path, so one thread's publishes reach
//! it in the order published. A queue group changes path when a member that is not
//! direct comes or goes, so while a thread has tasks still waiting on shards its groups
//! go through the shard too. A request that needs a shard takes the shard's path
//! (the shard makes its inbox): such a request and a publish of one thread may reach a
//! subscription in either order.
//!
//! Requests from threads take the same path when every responder is direct: the
//! request is registered here under `_INBOX.rb.t.<n>` and offered straight to the
//! responders; the reply completes it on the thread that publishes it (or on the shard
//! that routes it); a timer on the home shard ends the ones that time out. So a round
//! trip between two threads wakes each of them once and no shard.
//!
//! Changes (subscribe, unsubscribe) copy the table, swap it under a lock and bump a
//! version; a publishing thread compares one atomic per call with the version it has
//! cached, and takes the lock only when it changed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::error::PubSubError;
use super::message::{Message, Subject};
use super::shard::{parse_inbox, PubSubStats, ShardPubSub, SubId, INBOX_PREFIX};
use super::subscription::{Offer, SubQueue};
use super::waiting::Waiting;
use crate::hash::FastMap;
use crate::routing::{Matcher, Pattern};
use crate::runtime::{RuntimeHandle, ShardCtx};

/// Routes a publishing thread caches; the cache is emptied when full or stale.
const ROUTE_CACHE_MAX: usize = 4096;

/// Runtimes a thread keeps a cache for; past it the oldest is forgotten.
const CACHES_MAX: usize = 8;

/// Reply subjects of requests made by threads and answered without a shard; the last
/// token is the request's number.
pub(crate) const THREAD_INBOX_PREFIX: &str = "_INBOX.rb.t.";

/// What runs when a request made by a thread is answered, times out, or cannot be made.
pub(crate) type Done = Box<dyn FnOnce(Result<Message, PubSubError>) + Send>;

/// Tells one runtime's table from another's in a thread's cache.
static NEXT_DIRECT_ID: AtomicU64 = AtomicU64::new(1);

/// A subscription as the table holds it: every direct one, and every queue-group
/// member (a group with a member that is not direct is the shard's to serve).
///
/// Queues are held weakly here and in threads' caches, which outlive a version of the
/// table until their thread publishes again: an unsubscribed queue (its eventfd, its
/// pending messages) goes when its subscription and its shards let go of it.
#[derive(Clone)]
struct Entry {
    id: SubId,
    group: Option<Arc<str>>,
    /// `None`: not direct (only its shard delivers to it).
    queue: Option<Weak<SubQueue>>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

/// One version of what direct delivery knows. Its parts are shared between versions
/// and copied only when they change.
#[derive(Clone, Default)]
struct Table {
    matcher: Arc<Matcher<Entry>>,
    /// Each entry's pattern, to remove it.
    patterns: Arc<HashMap<SubId, (Pattern, Entry)>>,
    /// Each queue group's members in the table, and whose turn is next: shared by every
    /// publishing thread and kept across versions, so members take turns evenly
    /// whoever publishes and however often the table changes.
    turns: Arc<HashMap<Arc<str>, Turns>>,
}

/// A queue group's members in the table, and the shared count of its turns.
type Turns = (usize, Arc<AtomicUsize>);

/// What the direct path did, per home shard; `ShardPubSub::stats` adds it in.
#[derive(Default)]
struct Counters {
    published: AtomicU64,
    routed: AtomicU64,
    no_interest: AtomicU64,
    dropped_slow: AtomicU64,
    unknown_target: AtomicU64,
}

/// How direct delivery knows a subscription (kept by its owner, to undo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Registration {
    pub(crate) id: SubId,
    /// Direct delivery writes to its queue.
    pub(crate) direct: bool,
    /// Counted in `indirect_plain` rather than held in the table.
    counted: bool,
}

/// The runtime's direct-delivery state (one per runtime: `RuntimeHandle::singleton`).
pub(crate) struct Direct {
    id: u64,
    version: AtomicU64,
    table: Mutex<Table>,
    /// Plain subscriptions that are not direct: while there are any, every publish
    /// goes to a shard too.
    indirect_plain: AtomicUsize,
    counters: Box<[Counters]>,
    /// Requests made by threads that wait for their reply.
    requests: Mutex<Waiting<Done>>,
}

/// What is left of one message for its home shard.
pub(crate) struct Rest {
    pub(crate) message: Message,
    /// Queue groups served directly: the shard skips them.
    pub(crate) served: Vec<Arc<str>>,
    /// Direct delivery had targets for it (the shard counts `no_interest` only if
    /// neither it nor direct delivery had any).
    pub(crate) matched: bool,
}

/// Where a subject's messages go by the direct path.
#[derive(Default)]
struct Route {
    plain: Vec<Weak<SubQueue>>,
    groups: Vec<Group>,
    /// Part of the route is a shard's: a matched queue group has a member that is not
    /// direct (the shard serves that group whole).
    indirect_groups: bool,
}

struct Group {
    name: Arc<str>,
    members: Vec<Weak<SubQueue>>,
    next: Arc<AtomicUsize>,
}

/// What sends part of a route to a shard, read once per call.
#[derive(Clone, Copy)]
struct ShardWork {
    /// Plain subscriptions a shard serves exist: every publish goes to a shard too.
    indirect_plain: bool,
    /// No task of this thread waits on a shard: queue groups can be served here.
    groups_here: bool,
}

impl ShardWork {
    /// Whether a shard must see a message routed by `route` (inbox subjects aside).
    fn needs_shard(self, route: &Route) -> bool {
        self.indirect_plain
            || route.indirect_groups
            || (!self.groups_here && !route.groups.is_empty())
    }
}

/// One publishing thread's view of one runtime's table.
struct Cache {
    owner: u64,
    version: u64,
    table: Table,
    routes: FastMap<Box<str>, Rc<Route>>,
    /// This thread's tasks on shards not yet routed there. While there are any, the
    /// shard serves every queue group too: a group whose shard-served member just
    /// left must not get a newer message directly before the older ones the shard
    /// still holds.
    in_flight: Arc<AtomicUsize>,
    /// Per message of the current call: its route, and whether its shard must see it.
    plan: Vec<(Rc<Route>, bool)>,
    /// Queues written by the current call, each notified once at its end.
    touched: Vec<Arc<SubQueue>>,
}

thread_local! {
    /// One cache per runtime this thread publishes to, most recently used last.
    static CACHES: RefCell<Vec<Cache>> = const { RefCell::new(Vec::new()) };
}

impl Direct {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            id: NEXT_DIRECT_ID.fetch_add(1, Ordering::Relaxed),
            version: AtomicU64::new(0),
            table: Mutex::new(Table::default()),
            indirect_plain: AtomicUsize::new(0),
            counters: (0..shards).map(|_| Counters::default()).collect(),
            requests: Mutex::new(Waiting::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a subscription before its interest reaches any shard, so a publish that
    /// starts after the subscribe returns sees it. `queue` is `Some` for a direct one.
    pub(crate) fn add(
        &self,
        id: SubId,
        pattern: &Pattern,
        group: Option<Arc<str>>,
        queue: Option<Arc<SubQueue>>,
    ) -> Registration {
        let registration = Registration {
            id,
            direct: queue.is_some(),
            counted: queue.is_none() && group.is_none(),
        };
        if registration.counted {
            self.indirect_plain.fetch_add(1, Ordering::SeqCst);
        } else {
            self.change(|table| {
                if let Some(name) = &group {
                    let turns = Arc::make_mut(&mut table.turns);
                    turns.entry(name.clone()).or_default().0 += 1;
                }
                let queue = queue.as_ref().map(Arc::downgrade);
                let entry = Entry { id, group, queue };
                Arc::make_mut(&mut table.matcher).insert(pattern, entry.clone());
                Arc::make_mut(&mut table.patterns).insert(id, (pattern.clone(), entry));
            });
        }
        registration
    }

    /// Undoes `add`.
    pub(crate) fn remove(&self, registration: &Registration) {
        if registration.counted {
            self.indirect_plain.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        self.change(|table| {
            if let Some((pattern, entry)) =
                Arc::make_mut(&mut table.patterns).remove(&registration.id)
            {
                Arc::make_mut(&mut table.matcher).remove(&pattern, &entry);
                if let Some(name) = &entry.group {
                    let turns = Arc::make_mut(&mut table.turns);
                    if let Some((members, _)) = turns.get_mut(name) {
                        *members -= 1;
                        if *members == 0 {
                            turns.remove(name);
                        }
                    }
                }
            }
        });
    }

    fn change(&self, edit: impl FnOnce(&mut Table)) {
        let mut table = self.lock();
        edit(&mut table);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Adds what the direct path did for publishes homed on `shard` to `stats`.
    pub(crate) fn add_stats(&self, shard: usize, stats: &mut PubSubStats) {
        let Some(c) = self.counters.get(shard) else {
            return;
        };
        stats.published += c.published.load(Ordering::Relaxed);
        stats.routed += c.routed.load(Ordering::Relaxed);
        stats.no_interest += c.no_interest.load(Ordering::Relaxed);
        stats.dropped_slow += c.dropped_slow.load(Ordering::Relaxed);
        stats.unknown_target += c.unknown_target.load(Ordering::Relaxed);
    }

    /// Publishes `messages` (in order) from a thread that is not a shard: delivers to
    /// the direct subscriptions here, and hands what needs a shard to `home` as one
    /// task. If that shard cannot take the task, nothing is delivered and the error
    /// says why (`Backpressure`: retry), so a retry never duplicates.
    pub(crate) fn publish<M>(
        &self,
        runtime: &RuntimeHandle,
        home: usize,
        messages: M,
    ) -> Result<(), PubSubError>
    where
        M: AsRef<[Message]> + IntoIterator<Item = Message>,
    {
        if runtime.is_closing() {
            return Err(PubSubError::ShuttingDown);
        }
        // Replies to threads' requests complete here, before anything else (a callback
        // may publish); then they are matched as usual.
        for message in messages.as_ref() {
            if let Some(done) = self.take_request(message.subject.as_str()) {
                done(Ok(message.clone()));
            }
        }
        CACHES.with(|caches| {
            let mut caches = caches.borrow_mut();
            let cache = self.refresh(&mut caches);
            let now = self.shard_work(cache);
            let mut hop = false;
            let mut target = home;
            let single = messages.as_ref().len() == 1;
            for message in messages.as_ref() {
                let subject = message.subject.as_str();
                let inbox = is_shard_inbox(subject);
                let route = cache.route(subject, subject.starts_with(INBOX_PREFIX));
                let needs_shard = inbox || now.needs_shard(&route);
                hop |= needs_shard;
                // A lone reply whose only shard work is completing its request goes to
                // the shard that waits for it: one hop instead of two. No subscription
                // a shard serves matches it, so no subscription's order can change.
                if single && inbox && !now.indirect_plain && !route.indirect_groups {
                    if let Some((shard, _)) = parse_inbox(subject, runtime.shard_count()) {
                        target = shard;
                    }
                }
                cache.plan.push((route, needs_shard));
            }
            let result = if hop {
                let in_flight = cache.in_flight.clone();
                runtime
                    .enqueue(target, || {
                        let rests = self.deliver(cache, home, messages, true, now.groups_here);
                        in_flight.fetch_add(1, Ordering::AcqRel);
                        Box::new(move |ctx: &mut ShardCtx| {
                            ShardPubSub::get(ctx).publish_rest(ctx, rests);
                            in_flight.fetch_sub(1, Ordering::AcqRel);
                        })
                    })
                    .map_err(PubSubError::from)
            } else {
                self.deliver(cache, home, messages, false, now.groups_here);
                Ok(())
            };
            cache.plan.clear();
            result
        })
    }

    /// Sends a request from a thread that is not a shard, if every responder is direct:
    /// registers it under a fresh `_INBOX.rb.t.<n>`, makes sure an expiry timer on
    /// `home` covers its deadline, and offers it to the responders; `done` runs once
    /// (`NoResponders` at once, on this thread, when nothing matches). Otherwise hands
    /// `message` and `done` back for the shard's path. `Err`: `done` never runs.
    pub(crate) fn request(
        self: &Arc<Self>,
        runtime: &RuntimeHandle,
        home: usize,
        mut message: Message,
        timeout: Duration,
        done: Done,
    ) -> Result<Option<(Message, Done)>, PubSubError> {
        if runtime.is_closing() {
            return Err(PubSubError::ShuttingDown);
        }
        let subject = message.subject.as_str();
        let route = CACHES.with(|caches| {
            let mut caches = caches.borrow_mut();
            let cache = self.refresh(&mut caches);
            let inbox = subject.starts_with(INBOX_PREFIX);
            let route = cache.route(subject, inbox);
            let shard_part = inbox || self.shard_work(cache).needs_shard(&route);
            (!shard_part).then_some(route)
        });
        let Some(route) = route else {
            return Ok(Some((message, done)));
        };
        if route.plain.is_empty() && route.groups.is_empty() {
            done(Err(PubSubError::NoResponders));
            return Ok(None);
        }
        let (seq, arm) = {
            let mut requests = self.lock_requests();
            let seq = requests.next_seq();
            (seq, requests.insert(seq, timeout, done))
        };
        if let Some(deadline) = arm {
            let direct = self.clone();
            let armed = runtime.spawn(home, move |ctx: &mut ShardCtx| {
                direct.arm_expiry(ctx, deadline);
            });
            if let Err(error) = armed {
                // Not sent: `done` is dropped unrun, as this error promises.
                drop(self.lock_requests().withdraw(seq, arm));
                return Err(error.into());
            }
        }
        let inbox = format!("{THREAD_INBOX_PREFIX}{seq}");
        message.reply = Some(Subject::new(Bytes::from(inbox))?);
        CACHES.with(|caches| {
            let mut caches = caches.borrow_mut();
            let cache = self.refresh(&mut caches);
            cache.plan.push((route, false));
            self.deliver(cache, home, [message], false, true);
            cache.plan.clear();
        });
        Ok(None)
    }

    /// The waiting request a reply on `subject` answers, taken out, if `subject` is a
    /// thread's inbox and the request still waits.
    pub(crate) fn take_request(&self, subject: &str) -> Option<Done> {
        let seq: u64 = subject.strip_prefix(THREAD_INBOX_PREFIX)?.parse().ok()?;
        self.lock_requests().take(seq)
    }

    /// Runs on a shard: arms a timer for `deadline` that ends the requests due then.
    fn arm_expiry(self: Arc<Self>, ctx: &mut ShardCtx, deadline: Instant) {
        let delay = deadline.saturating_duration_since(Instant::now());
        let direct = self.clone();
        if ctx
            .after(delay, move |ctx| direct.expire(ctx, deadline))
            .is_err()
        {
            // No timer (shutting down, or the timer table is full): fail what waits
            // rather than leave it waiting forever.
            self.fail_all();
        }
    }

    /// Runs when the timer armed for `armed_at` fires.
    fn expire(self: Arc<Self>, ctx: &mut ShardCtx, armed_at: Instant) {
        let (due, next) = self.lock_requests().expire(armed_at);
        if let Some(next) = next {
            self.clone().arm_expiry(ctx, next);
        }
        for done in due {
            done(Err(PubSubError::Timeout));
        }
    }

    /// Ends every waiting request with `ShuttingDown` (the runtime is stopping).
    pub(crate) fn fail_all(&self) {
        let waiting = self.lock_requests().drain();
        for done in waiting {
            done(Err(PubSubError::ShuttingDown));
        }
    }

    fn lock_requests(&self) -> MutexGuard<'_, Waiting<Done>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What makes a shard's part of a route right now, for the calling thread.
    fn shard_work(&self, cache: &Cache) -> ShardWork {
        ShardWork {
            indirect_plain: self.indirect_plain.load(Ordering::Acquire) > 0,
            groups_here: cache.in_flight.load(Ordering::Acquire) == 0,
        }
    }

    /// The calling thread's cache for this runtime, refreshed if the table changed.
    fn refresh<'c>(&self, caches: &'c mut Vec<Cache>) -> &'c mut Cache {
        let found = match caches.last() {
            Some(last) if last.owner == self.id => true,
            _ => match caches.iter().position(|c| c.owner == self.id) {
                Some(i) => {
                    let cache = caches.remove(i);
                    caches.push(cache);
                    true
                }
                None => false,
            },
        };
        if !found {
            if caches.len() >= CACHES_MAX {
                caches.remove(0);
            }
            caches.push(Cache {
                owner: self.id,
                version: u64::MAX,
                table: Table::default(),
                routes: FastMap::default(),
                in_flight: Arc::new(AtomicUsize::new(0)),
                plan: Vec::new(),
                touched: Vec::new(),
            });
        }
        let last = caches.len() - 1;
        let cache = &mut caches[last];
        if cache.version != self.version.load(Ordering::Acquire) {
            let table = self.lock();
            // Read under the lock: changes bump it under the lock too.
            cache.version = self.version.load(Ordering::Acquire);
            cache.table = table.clone();
            cache.routes.clear();
        }
        cache
    }

    /// Offers each message to its direct targets (the plan says which; queue groups
    /// only with `groups`), notifies each queue written once, counts. With `keep`,
    /// returns what the shard must route.
    fn deliver<M>(
        &self,
        cache: &mut Cache,
        home: usize,
        messages: M,
        keep: bool,
        groups: bool,
    ) -> Vec<Rest>
    where
        M: IntoIterator<Item = Message>,
    {
        let mut rests = Vec::new();
        let (mut published, mut routed, mut no_interest) = (0u64, 0u64, 0u64);
        let (mut dropped, mut unknown) = (0u64, 0u64);
        for ((route, needs_shard), message) in cache.plan.iter().zip(messages) {
            published += 1;
            let keep_this = keep && *needs_shard;
            let mut served = Vec::new();
            let group_targets = route.groups.iter().filter(|_| groups).map(|group| {
                let turn = group.next.fetch_add(1, Ordering::Relaxed);
                if keep_this {
                    served.push(group.name.clone());
                }
                &group.members[turn % group.members.len()]
            });
            let targets = route.plain.iter().chain(group_targets);
            let total = route.plain.len() + if groups { route.groups.len() } else { 0 };
            let mut message = Some(message);
            for (i, queue) in targets.enumerate() {
                // The last target takes the message itself unless the shard needs it.
                let copy = if i + 1 == total && !keep_this {
                    message.take()
                } else {
                    message.clone()
                };
                let Some(copy) = copy else {
                    break;
                };
                let Some(queue) = queue.upgrade() else {
                    // Unsubscribed since this thread's table was made.
                    unknown += 1;
                    continue;
                };
                match queue.offer(copy) {
                    Offer::Queued => {
                        if !cache.touched.iter().any(|q| Arc::ptr_eq(q, &queue)) {
                            cache.touched.push(queue);
                        }
                    }
                    // Direct subscriptions drop the newest: `Overflow` cannot happen.
                    Offer::Dropped | Offer::Overflow => dropped += 1,
                    Offer::Closed => unknown += 1,
                }
            }
            // Like a shard's: one per receiving subscription, dropped ones included.
            routed += total as u64;
            match message {
                Some(message) if keep_this => rests.push(Rest {
                    message,
                    served,
                    matched: total > 0,
                }),
                _ if total == 0 && !keep_this => no_interest += 1,
                _ => {}
            }
        }
        for queue in cache.touched.drain(..) {
            queue.notify();
        }
        if let Some(c) = self.counters.get(home) {
            c.published.fetch_add(published, Ordering::Relaxed);
            if routed > 0 {
                c.routed.fetch_add(routed, Ordering::Relaxed);
            }
            if no_interest > 0 {
                c.no_interest.fetch_add(no_interest, Ordering::Relaxed);
            }
            if dropped > 0 {
                c.dropped_slow.fetch_add(dropped, Ordering::Relaxed);
            }
            if unknown > 0 {
                c.unknown_target.fetch_add(unknown, Ordering::Relaxed);
            }
        }
        rests
    }
}

impl Cache {
    /// The route of `subject` (inbox subjects are unique: `inbox` ones are never
    /// cached).
    fn route(&mut self, subject: &str, inbox: bool) -> Rc<Route> {
        if let Some(route) = self.routes.get(subject) {
            return route.clone();
        }
        let route = Rc::new(build_route(&self.table, subject));
        if !inbox {
            if self.routes.len() >= ROUTE_CACHE_MAX {
                self.routes.clear();
            }
            self.routes.insert(subject.into(), route.clone());
        }
        route
    }
}

fn build_route(table: &Table, subject: &str) -> Route {
    let mut route = Route::default();
    // Groups with a member only its shard delivers to: the shard serves them whole.
    let mut indirect: Vec<Arc<str>> = Vec::new();
    for entry in table.matcher.matches_uncached(subject) {
        match (entry.group, entry.queue) {
            (None, Some(queue)) => route.plain.push(queue),
            // Not held in the table (counted instead); a shard would serve it.
            (None, None) => route.indirect_groups = true,
            (Some(name), None) => {
                if !indirect.contains(&name) {
                    indirect.push(name);
                }
            }
            (Some(name), Some(queue)) => {
                match route.groups.iter_mut().find(|group| group.name == name) {
                    Some(group) => group.members.push(queue),
                    None => {
                        let next = table
                            .turns
                            .get(&name)
                            .map(|(_, next)| next.clone())
                            .unwrap_or_default();
                        route.groups.push(Group {
                            name,
                            members: vec![queue],
                            next,
                        });
                    }
                }
            }
        }
    }
    route.groups.retain(|group| !indirect.contains(&group.name));
    route.indirect_groups |= !indirect.is_empty();
    route
}

/// A subject the shards complete requests on (`_INBOX.rb.<shard>.<n>`), as opposed to a
/// thread's (`_INBOX.rb.t.<n>`, completed where it is published).
pub(crate) fn is_shard_inbox(subject: &str) -> bool {
    subject.starts_with(INBOX_PREFIX) && !subject.starts_with(THREAD_INBOX_PREFIX)
}
