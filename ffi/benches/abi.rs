//! What the C ABI adds per call, against the same operation through the Rust API, on
//! one embedded broker (2 shards) in the same run.
//!
//! ```sh
//! cargo bench -p ringbroker-ffi --bench abi
//! ```
//!
//! - `publish_16B`: a fire-and-forget subject publish of 16 bytes (no subscriber: the
//!   shard routes it to nobody). `c` calls `ringbroker_publish` (subject text checked
//!   and parsed, payload copied); `rust` publishes a prebuilt `Subject` with a shared
//!   `Bytes` (no allocation at all); `rust_fresh_payload` a prebuilt `Subject` with a
//!   payload allocated per message, as a program making new messages does (the like-
//!   for-like baseline: C must copy the caller's bytes once); `rust_same_work` also
//!   parses the subject every time.
//! - `fetch_64`: taking 64 buffered messages and freeing them. Each iteration publishes
//!   64 messages through the Rust API (the same for both sides) and sleeps 1 ms untimed
//!   so that all are buffered, then times
//!   `ringbroker_fetch` of 64 + 64 `ringbroker_msg_free` (`c`) against `next` +
//!   `try_next_batch` of the rest + drop (`rust`).
//! - `publish_batch_64x16B`: 64 messages of 16 B in one `ringbroker_publish_batch`
//!   (`c`) or `publish_batch` (`rust`, 64 clones of a prebuilt message) call.
//! - `pubsub_64B`: throughput, one publisher thread → one subscription drained by a
//!   consumer thread (fetches of up to 64), 60,000 messages of 64 B per iteration
//!   (within the subscription's 65,536-message buffer, so none is dropped by a slow
//!   consumer and every one is counted), published one per call or in batches of 64.
//!
//! The C entry points are called through function pointers hidden from the optimiser,
//! so every call is a real call through the exported symbol, as from C.

// criterion_group!/criterion_main! generate undocumented functions.
#![allow(missing_docs)]

use std::ffi::{c_char, CString};
use std::hint::black_box;
use std::ptr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engine::pubsub::{Message, Subject};

use ringbroker::config::{
    ringbroker_config_free, ringbroker_config_new, ringbroker_config_set, Config,
};
use ringbroker::consumer::{ringbroker_consumer_free, ringbroker_fetch, Consumer};
use ringbroker::handle::{ringbroker_close, ringbroker_open, Handle};
use ringbroker::message::{ringbroker_msg_free, Msg};
use ringbroker::status::RINGBROKER_OK;
use ringbroker::subjects::{
    ringbroker_publish, ringbroker_publish_batch, ringbroker_subscribe, SubjectMsgIn,
};

type PublishFn =
    unsafe extern "C" fn(*const Handle, *const c_char, *const c_char, *const u8, usize) -> i32;
type FetchFn = unsafe extern "C" fn(*const Consumer, *mut *mut Msg, usize, *mut usize, i64) -> i32;
type FreeFn = unsafe extern "C" fn(*mut Msg);
type PublishBatchFn = unsafe extern "C" fn(*const Handle, *const SubjectMsgIn, usize) -> i32;

const BATCH: usize = 64;
const THROUGHPUT_MESSAGES: usize = 60_000;

/// An embedded broker opened through the C API, closed on drop.
struct Broker {
    handle: *mut Handle,
    _dir: tempfile::TempDir,
}

// SAFETY: a `ringbroker_t` is thread-safe (documented); the bench closes it last.
unsafe impl Sync for Broker {}

impl Broker {
    fn open(shards: u32) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config: *mut Config = ptr::null_mut();
        let data_dir = CString::new(dir.path().to_str().expect("utf-8 path")).expect("no NUL");
        let shards = CString::new(shards.to_string()).expect("no NUL");
        let mut handle: *mut Handle = ptr::null_mut();
        // SAFETY: valid out-pointers and NUL-terminated strings; config freed once.
        unsafe {
            assert_eq!(ringbroker_config_new(&mut config), RINGBROKER_OK);
            assert_eq!(
                ringbroker_config_set(config, c"data_dir".as_ptr(), data_dir.as_ptr()),
                RINGBROKER_OK
            );
            assert_eq!(
                ringbroker_config_set(config, c"shards".as_ptr(), shards.as_ptr()),
                RINGBROKER_OK
            );
            assert_eq!(ringbroker_open(config, &mut handle), RINGBROKER_OK);
            ringbroker_config_free(config);
        }
        Self { handle, _dir: dir }
    }

    fn api(&self) -> &dyn engine::api::BrokerApi {
        // SAFETY: the handle is live until drop.
        unsafe { &*self.handle }.api()
    }

    fn subscribe(&self, subject: &std::ffi::CStr) -> *mut Consumer {
        let mut consumer: *mut Consumer = ptr::null_mut();
        // SAFETY: live handle, NUL-terminated subject, valid out-pointer.
        let status = unsafe {
            ringbroker_subscribe(self.handle, subject.as_ptr(), ptr::null(), &mut consumer)
        };
        assert_eq!(status, RINGBROKER_OK);
        consumer
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // SAFETY: the handle is live and nothing uses it any more.
        unsafe { ringbroker_close(self.handle) };
    }
}

fn publish_fn() -> PublishFn {
    black_box(ringbroker_publish as PublishFn)
}

fn publish_batch_fn() -> PublishBatchFn {
    black_box(ringbroker_publish_batch as PublishBatchFn)
}

fn fetch_fn() -> FetchFn {
    black_box(ringbroker_fetch as FetchFn)
}

fn free_fn() -> FreeFn {
    black_box(ringbroker_msg_free as FreeFn)
}

/// Publishes through the Rust API; a saturated engine is retried, any other error ends
/// the bench.
fn publish_rust(api: &dyn engine::api::BrokerApi, message: Message) {
    let mut message = Some(message);
    while let Some(m) = message.take() {
        match api.publish(m.clone()) {
            Ok(()) => {}
            Err(e) if e.code == engine::protocol::ErrorCode::Backpressure => {
                std::thread::yield_now();
                message = Some(m);
            }
            Err(e) => panic!("publish: {e}"),
        }
    }
}

/// Publishes a batch through the Rust API, retrying a saturated engine.
fn publish_batch_rust(api: &dyn engine::api::BrokerApi, batch: Vec<Message>) {
    loop {
        match api.publish_batch(batch.clone()) {
            Ok(()) => return,
            Err(e) if e.code == engine::protocol::ErrorCode::Backpressure => {
                std::thread::yield_now();
            }
            Err(e) => panic!("publish_batch: {e}"),
        }
    }
}

/// Publishes a batch through the C ABI, retrying a saturated engine.
fn publish_batch_c(publish: PublishBatchFn, broker: &Broker, batch: &[SubjectMsgIn]) {
    loop {
        // SAFETY: live handle; `batch` holds live messages with static subjects.
        let status = unsafe { publish(broker.handle, batch.as_ptr(), batch.len()) };
        match status {
            RINGBROKER_OK => return,
            s if s == ringbroker::status::RINGBROKER_BACKPRESSURE => std::thread::yield_now(),
            s => panic!("ringbroker_publish_batch: status {s}"),
        }
    }
}

/// Publishes through the C ABI, retrying a saturated engine like `publish_rust`.
fn publish_c(publish: PublishFn, broker: &Broker, subject: &std::ffi::CStr, payload: &[u8]) {
    loop {
        // SAFETY: live handle, NUL-terminated subject, `payload` readable.
        let status = unsafe {
            publish(
                broker.handle,
                subject.as_ptr(),
                ptr::null(),
                payload.as_ptr(),
                payload.len(),
            )
        };
        match status {
            RINGBROKER_OK => return,
            s if s == ringbroker::status::RINGBROKER_BACKPRESSURE => std::thread::yield_now(),
            s => panic!("ringbroker_publish: status {s}"),
        }
    }
}

fn publish_16b(c: &mut Criterion, broker: &Broker) {
    let mut group = c.benchmark_group("publish_16B");
    let payload = [7u8; 16];
    let shared = Bytes::copy_from_slice(&payload);
    let subject = Subject::new("bench.nobody").expect("valid subject");
    let api = broker.api();
    group.bench_function("rust", |b| {
        b.iter(|| publish_rust(api, Message::new(subject.clone(), shared.clone())));
    });
    group.bench_function("rust_fresh_payload", |b| {
        b.iter(|| {
            let payload = Bytes::copy_from_slice(black_box(&payload));
            publish_rust(api, Message::new(subject.clone(), payload));
        });
    });
    group.bench_function("rust_same_work", |b| {
        b.iter(|| {
            let subject = Subject::new(black_box("bench.nobody")).expect("valid subject");
            publish_rust(
                api,
                Message::new(subject, Bytes::copy_from_slice(black_box(&payload))),
            );
        });
    });
    let publish = publish_fn();
    group.bench_function("c", |b| {
        b.iter(|| publish_c(publish, broker, c"bench.nobody", black_box(&payload)));
    });
    group.finish();
}

/// Publishes `BATCH` messages of 16 B on `subject` (each payload its own allocation, as
/// from any publisher) and waits 1 ms so that all are in the subscription's buffer.
/// Both sides of `fetch_64` receive exactly these.
fn fill(api: &dyn engine::api::BrokerApi, subject: &Subject) {
    for i in 0..BATCH {
        let payload = Bytes::copy_from_slice(&[i as u8; 16]);
        publish_rust(api, Message::new(subject.clone(), payload));
    }
    std::thread::sleep(Duration::from_millis(1));
}

fn fetch_64(c: &mut Criterion, broker: &Broker) {
    let mut group = c.benchmark_group("fetch_64");
    group.throughput(Throughput::Elements(BATCH as u64));
    let api = broker.api();

    let rust_sub = api.subscribe("bench.fetch.rust", None).expect("subscribe");
    let subject = Subject::new("bench.fetch.rust").expect("valid subject");
    group.bench_function("rust", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut taken = Vec::with_capacity(BATCH);
            for _ in 0..iters {
                fill(api, &subject);
                let start = Instant::now();
                taken.push(
                    rust_sub
                        .next(Duration::from_secs(1))
                        .expect("first message"),
                );
                while taken.len() < BATCH {
                    let want = BATCH - taken.len();
                    if rust_sub
                        .try_next_batch(want, &mut taken)
                        .expect("try_next_batch")
                        == 0
                    {
                        taken.push(rust_sub.next(Duration::from_secs(1)).expect("message"));
                    }
                }
                taken.clear();
                total += start.elapsed();
            }
            total
        });
    });

    fetch_64_c(&mut group, broker);
    group.finish();
}

fn fetch_64_c(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    broker: &Broker,
) {
    let c_sub = broker.subscribe(c"bench.fetch.c");
    let subject = Subject::new("bench.fetch.c").expect("valid subject");
    let (fetch, free) = (fetch_fn(), free_fn());
    group.bench_function("c", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut msgs: [*mut Msg; BATCH] = [ptr::null_mut(); BATCH];
            for _ in 0..iters {
                fill(broker.api(), &subject);
                let start = Instant::now();
                let mut have = 0;
                while have < BATCH {
                    let mut n = 0usize;
                    // SAFETY: live consumer; room for `BATCH - have` pointers from `have`.
                    let status = unsafe {
                        fetch(
                            c_sub,
                            msgs.as_mut_ptr().add(have),
                            BATCH - have,
                            &mut n,
                            1000,
                        )
                    };
                    assert_eq!(status, RINGBROKER_OK);
                    assert!(n > 0, "no message within 1 s");
                    have += n;
                }
                for m in msgs {
                    // SAFETY: each message was returned by this fetch and is freed once.
                    unsafe { free(m) };
                }
                total += start.elapsed();
            }
            total
        });
    });
    // SAFETY: the consumer is live and used by nothing else now.
    unsafe { ringbroker_consumer_free(c_sub) };
}

/// One iteration of a throughput run: a consumer thread calls `drain(remaining)` (which
/// returns how many it took) until `THROUGHPUT_MESSAGES` arrived, while this thread
/// calls `publish(n)` for `n` messages at a time until all are published.
fn flow(step: usize, publish: &dyn Fn(usize), drain: &(dyn Fn(usize) -> usize + Sync)) {
    std::thread::scope(|s| {
        let consumer = s.spawn(|| {
            let mut received = 0;
            while received < THROUGHPUT_MESSAGES {
                received += drain(THROUGHPUT_MESSAGES - received);
            }
        });
        let mut published = 0;
        while published < THROUGHPUT_MESSAGES {
            let n = step.min(THROUGHPUT_MESSAGES - published);
            publish(n);
            published += n;
        }
        consumer.join().expect("consumer thread");
    });
}

/// A consumer pointer other threads may use (one receiver at a time, as documented).
struct Shared(*mut Consumer);
// SAFETY: a `ringbroker_consumer_t` may be used from any thread, one receiver at a time;
// `flow` runs one consumer thread per iteration and joins it.
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so closures capture the whole `Shared`, which is `Sync`).
    fn get(&self) -> *mut Consumer {
        self.0
    }
}

fn pubsub_64b(c: &mut Criterion, broker: &Broker) {
    let mut group = c.benchmark_group("pubsub_64B");
    group.throughput(Throughput::Elements(THROUGHPUT_MESSAGES as u64));
    group.sample_size(20);
    let api = broker.api();
    let payload = [3u8; 64];

    let rust_sub = api.subscribe("bench.flow.rust", None).expect("subscribe");
    let rust_drain = |remaining: usize| {
        let mut n = 1;
        black_box(
            rust_sub
                .next(Duration::from_secs(5))
                .expect("message within 5 s"),
        );
        let mut taken = Vec::with_capacity(BATCH);
        n += rust_sub
            .try_next_batch(remaining.min(BATCH) - 1, &mut taken)
            .expect("try_next_batch");
        black_box(taken);
        n
    };
    let subject = Subject::new("bench.flow.rust").expect("valid subject");
    let one = Message::new(subject, Bytes::copy_from_slice(&payload));
    group.bench_function(BenchmarkId::new("rust", "one_per_call"), |b| {
        let publish = |n: usize| (0..n).for_each(|_| publish_rust(api, one.clone()));
        b.iter(|| flow(1, &publish, &rust_drain));
    });
    group.bench_function(BenchmarkId::new("rust", "batch_64"), |b| {
        let publish = |n: usize| publish_batch_rust(api, vec![one.clone(); n]);
        b.iter(|| flow(BATCH, &publish, &rust_drain));
    });
    drop(rust_sub);

    let c_sub = Shared(broker.subscribe(c"bench.flow.c"));
    let (publish_one, publish_many, fetch, free) =
        (publish_fn(), publish_batch_fn(), fetch_fn(), free_fn());
    let c_drain = |remaining: usize| {
        let mut msgs: [*mut Msg; BATCH] = [ptr::null_mut(); BATCH];
        let mut n = 0usize;
        let want = BATCH.min(remaining);
        // SAFETY: live consumer, room for `want` pointers.
        let status = unsafe { fetch(c_sub.get(), msgs.as_mut_ptr(), want, &mut n, 5000) };
        assert_eq!(status, RINGBROKER_OK);
        assert!(n > 0, "no message within 5 s");
        for &m in &msgs[..n] {
            // SAFETY: returned by this fetch, freed once.
            unsafe { free(m) };
        }
        n
    };
    group.bench_function(BenchmarkId::new("c", "one_per_call"), |b| {
        let publish = |n: usize| {
            (0..n).for_each(|_| publish_c(publish_one, broker, c"bench.flow.c", &payload))
        };
        b.iter(|| flow(1, &publish, &c_drain));
    });
    let batch = c_batch(c"bench.flow.c", &payload);
    group.bench_function(BenchmarkId::new("c", "batch_64"), |b| {
        let publish = |n: usize| publish_batch_c(publish_many, broker, &batch[..n]);
        b.iter(|| flow(BATCH, &publish, &c_drain));
    });
    // SAFETY: live and unused now.
    unsafe { ringbroker_consumer_free(c_sub.get()) };
    group.finish();
}

/// `BATCH` C messages of `payload` on `subject` (both must outlive the batch's use).
fn c_batch(subject: &'static std::ffi::CStr, payload: &[u8]) -> Vec<SubjectMsgIn> {
    (0..BATCH)
        .map(|_| SubjectMsgIn {
            subject: subject.as_ptr(),
            reply: ptr::null(),
            headers: ptr::null(),
            headers_len: 0,
            payload: payload.as_ptr(),
            payload_len: payload.len(),
        })
        .collect()
}

/// A batch of 64 messages of 16 B, published in one call: the per-message cost of the
/// batch entry points.
fn publish_batch_16b(c: &mut Criterion, broker: &Broker) {
    let mut group = c.benchmark_group("publish_batch_64x16B");
    group.throughput(Throughput::Elements(BATCH as u64));
    let payload = [7u8; 16];
    let api = broker.api();
    let one = Message::new(
        Subject::new("bench.nobody").expect("valid subject"),
        Bytes::copy_from_slice(&payload),
    );
    group.bench_function("rust", |b| {
        b.iter(|| publish_batch_rust(api, vec![one.clone(); BATCH]));
    });
    let batch = c_batch(c"bench.nobody", &payload);
    let publish_many = publish_batch_fn();
    group.bench_function("c", |b| {
        b.iter(|| publish_batch_c(publish_many, broker, black_box(&batch)));
    });
    group.finish();
}

fn abi(c: &mut Criterion) {
    let broker = Broker::open(2);
    publish_16b(c, &broker);
    publish_batch_16b(c, &broker);
    fetch_64(c, &broker);
    pubsub_64b(c, &broker);
}

criterion_group!(benches, abi);
criterion_main!(benches);
