//! Prints the network tax of the native protocol as markdown: each workload runs
//! through `Client`s over loopback TCP to a `net::Server`, and through the embedded API
//! of the same broker, in the same run, with the ratio of the two; `iperf3` over the
//! same loopback is the baseline for bytes.
//!
//! Every case gets a fresh `Broker` (2 shards, pinned, over a data directory under the
//! run directory) with a `net::Server` on 127.0.0.1:0, stopped and removed after it:
//!
//! 1. Pub/sub throughput: one publisher (`publish_batch_nowait`, batches of 64 and of 1,
//!    64 B and 1 KiB payloads) and one subscriber `Client`; embedded, one thread with
//!    `PubSub::publish_batch` and a `Subscription`. Fails unless every message published
//!    was received or counted as dropped (the client's subscription buffer, the server's
//!    output bound, the embedded subscription's buffer).
//! 2. Request-reply latency: sequential `request`s to a responder that publishes each
//!    answer to the reply subject; embedded, `PubSub::request` and a responder
//!    `Subscription` on a thread. Fails unless every request got its own payload back.
//! 3. Durable stream publish: batches of 64 records of 64 B with `publish_records` from
//!    1 and 8 connections (one thread each), durability `always` and `none`; embedded,
//!    `Streams::publish_batch` from 1 and 8 threads. Fails on any record not
//!    acknowledged as stored, and unless the stream stores, per partition, exactly as
//!    many records as were acknowledged there.
//! 4. `iperf3 -c 127.0.0.1 -J` against `iperf3 -s -1 -B 127.0.0.1` (one TCP stream),
//!    if installed (`apt-get install -y iperf3`); missing is not a failure.
//!
//! ```sh
//! cargo run --release -p ringbroker-benches --bin net-report -- \
//!     [--seconds 2] [--dir PATH] [--filter NAME] [--quick]
//! ```
//!
//! `--quick`: 0.25 s per case and a 1 s iperf3, the CI smoke run (a few seconds).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use ringbroker::broker::{Broker, BrokerConfig};
use ringbroker::client::{Client, ClientConfig, ClientError, ClientSubscription};
use ringbroker::net::{NetStats, NetStatsReader, Server, ServerConfig};
use ringbroker::pubsub::{Message, PubSub, PubSubError, Subject, SubscribeOptions, Subscription};
use ringbroker::stream::{Publish, PublishAck, StreamConfig, StreamInfo};
use ringbroker_benches::report;
use ringbroker_benches::storage::Policy;

const USAGE: &str = "net-report [--seconds 2] [--dir PATH] [--filter NAME] [--quick]

  --seconds  load per case (iperf3 runs for the same, rounded, at least 1 s)
  --dir      where the brokers store their data (default: the system temp dir)
  --filter   run only the cases whose name contains NAME (pubsub-tcp-same-1024B-batch64,
             pubsub-embedded, rpc-tcp-across, stream-tcp-always-8, iperf3, ...)
  --quick    0.25 s per case, a 1 s iperf3: the CI smoke run";

/// Shards of every case's broker.
const SHARDS: usize = 2;
/// The pub/sub cases' subject.
const PUBSUB_SUBJECT: &str = "bench.net";
/// The request-reply cases' subject.
const RPC_SUBJECT: &str = "bench.rpc";
/// Payload of a request (the reply echoes it).
const RPC_PAYLOAD: usize = 64;
/// How long one request may wait for its reply.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// The stream of the stream cases.
const STREAM: &str = "netbench";
/// What the stream captures, and the subject its records are published on.
const STREAM_PATTERN: &str = "bench.s.>";
const STREAM_SUBJECT: &str = "bench.s.x";
const STREAM_PARTITIONS: u32 = 2;
/// Records per `publish_records` / `publish_batch` call.
const STREAM_BATCH: usize = 64;
/// Payload of a stream record.
const STREAM_PAYLOAD: usize = 64;
/// Connections (TCP) or threads (embedded) of the stream cases.
const STREAM_CONNECTIONS: [usize; 2] = [1, 8];
/// No message or answer for this long while some are due: the case stalled.
const STALL: Duration = Duration::from_secs(20);
/// No message for this long once the publisher finished: the rest is lost.
const DRAIN_QUIET: Duration = Duration::from_secs(5);
/// One blocking wait of a receiving loop.
const RECEIVE_WAIT: Duration = Duration::from_millis(20);
/// Messages a receiving loop takes without waiting before it reads the clock again.
const BURST_MAX: usize = 4096;
/// Connections tried at most to land one on a wanted shard (each lands on either of
/// the two by the kernel's hash: all 32 missing is a 1 in 4 billion chance).
const PLACEMENT_TRIES: usize = 32;
/// How long a server's stop waits for its connections to close.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Attempts to reach iperf3's server while it starts, `IPERF_RETRY` apart.
const IPERF_CONNECT_TRIES: u32 = 50;
const IPERF_RETRY: Duration = Duration::from_millis(100);
/// How much longer than its `-t` an iperf3 client may take before it is killed.
const IPERF_SLACK: Duration = Duration::from_secs(15);
/// The latency table's percentiles.
const LATENCY_QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

#[derive(Debug, Clone)]
struct Options {
    seconds: f64,
    /// Pub/sub messages a case publishes at most.
    messages_max: u64,
    /// Requests a latency case sends at most.
    requests_max: u64,
    /// Stream records a case publishes at most (split over its connections).
    records_max: u64,
    iperf_seconds: u64,
    dir: Option<PathBuf>,
    filter: String,
}

impl Options {
    fn parse() -> Result<Self, String> {
        let mut o = Options {
            seconds: 2.0,
            messages_max: 100_000_000,
            requests_max: 1_000_000,
            records_max: 50_000_000,
            iperf_seconds: 2,
            dir: None,
            filter: String::new(),
        };
        let mut quick = false;
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--seconds" => {
                    let v = value()?;
                    o.seconds = v.parse().map_err(|e| format!("--seconds {v}: {e}"))?;
                }
                "--dir" => o.dir = Some(PathBuf::from(value()?)),
                "--filter" => o.filter = value()?,
                "--quick" => quick = true,
                "--help" | "-h" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other}")),
            }
        }
        o.seconds = o.seconds.clamp(0.05, 600.0);
        o.iperf_seconds = o.seconds.round().max(1.0) as u64;
        if quick {
            o.seconds = 0.25;
            o.messages_max = 2_000_000;
            o.requests_max = 20_000;
            o.records_max = 400_000;
            o.iperf_seconds = 1;
        }
        Ok(o)
    }

    fn wants(&self, case: &str) -> bool {
        case.contains(&self.filter)
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }
}

/// Where the report runs and what went wrong so far.
struct Setup {
    root: PathBuf,
    failures: Vec<String>,
    started: Instant,
}

impl Setup {
    fn progress(&self, what: &str) {
        eprintln!(
            "running {what} at {:.1} s",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Runs one case, recording its failure (if any) under `tag`.
    fn run<T>(&mut self, tag: &str, case: impl FnOnce(&Path) -> Result<T, String>) -> Option<T> {
        self.progress(tag);
        match case(&self.root.join(tag)) {
            Ok(value) => Some(value),
            Err(error) => {
                eprintln!("  {tag} FAILED: {error}");
                self.failures.push(format!("{tag}: {error}"));
                None
            }
        }
    }
}

fn main() {
    let options = match Options::parse() {
        Ok(o) => o,
        Err(error) => {
            eprintln!("net-report: {error}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let root = match report::run_dir(options.dir.as_deref(), "net-report") {
        Ok(root) => root,
        Err(error) => {
            eprintln!("net-report: {error}");
            std::process::exit(2);
        }
    };
    let mut setup = Setup {
        root,
        failures: Vec::new(),
        started: Instant::now(),
    };
    print_header(&options, &setup.root);
    let flows = pubsub_section(&options, &mut setup);
    rpc_section(&options, &mut setup);
    stream_section(&options, &mut setup);
    iperf_section(&options, &mut setup, &flows);
    print_reading_notes();
    report::finish("net-report", &setup.root, setup.started, &setup.failures);
}

fn print_header(options: &Options, root: &Path) {
    println!("# Network report (native protocol over loopback)\n");
    report::print_machine(root);
    println!(
        "- per case: {} s, or {} pub/sub messages, {} requests, {} stream records, \
         whichever comes first; one run per case",
        options.seconds, options.messages_max, options.requests_max, options.records_max
    );
    println!(
        "- broker: `Broker` with {SHARDS} shards (pinned to cores, `idle_spin` 0), fresh per \
         case, `net::Server` on 127.0.0.1:0 with its defaults (4 MiB output bound per \
         connection, 256 × 16 KiB provided buffers per shard); clients: `Client` defaults \
         (TCP_NODELAY, subscription buffer 65536 messages), reconnect off"
    );
}

// ---------------------------------------------------------------------------------
// The broker, the server and the clients as every case sets them up.

/// Where the server's shards hold a case's two connections (the kernel's
/// `SO_REUSEPORT` hash places each; the report reconnects until it fits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Both on one shard.
    Same,
    /// On different shards.
    Across,
    /// Wherever the kernel put them.
    Kernel,
}

/// TCP through `Client`s, or the embedded API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Tcp(Placement),
    Embedded,
}

impl Via {
    /// The pub/sub and request-reply paths: TCP with both placements, and embedded.
    const PAIRED: [Via; 3] = [
        Via::Tcp(Placement::Same),
        Via::Tcp(Placement::Across),
        Via::Embedded,
    ];
    /// The stream paths (the records of a batch go to both shards' partitions anyway).
    const STREAM: [Via; 2] = [Via::Tcp(Placement::Kernel), Via::Embedded];

    fn tag(self) -> &'static str {
        match self {
            Via::Tcp(Placement::Same) => "tcp-same",
            Via::Tcp(Placement::Across) => "tcp-across",
            Via::Tcp(Placement::Kernel) => "tcp",
            Via::Embedded => "embedded",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Via::Tcp(Placement::Same) => "TCP, one shard",
            Via::Tcp(Placement::Across) => "TCP, across shards",
            Via::Tcp(Placement::Kernel) => "TCP",
            Via::Embedded => "embedded",
        }
    }

    fn is_tcp(self) -> bool {
        matches!(self, Via::Tcp(_))
    }
}

/// Runs `work` on a fresh broker over `dir` with a server on 127.0.0.1:0; stops both
/// (an error if either stopped uncleanly) and removes `dir`.
fn with_node<T>(
    dir: &Path,
    work: impl FnOnce(&Broker, &Server) -> Result<T, String>,
) -> Result<T, String> {
    let mut config = BrokerConfig::new(dir);
    config.runtime.shards = Some(SHARDS);
    config.runtime.shutdown_drain_max = Duration::from_secs(10);
    let broker = Broker::open(config).map_err(|e| format!("open broker: {e}"))?;
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = match Server::start(
        &broker,
        ServerConfig {
            listen,
            ..ServerConfig::default()
        },
    ) {
        Ok(server) => server,
        Err(error) => {
            let _ = broker.shutdown();
            let _ = std::fs::remove_dir_all(dir);
            return Err(format!("start server: {error}"));
        }
    };
    let result = work(&broker, &server);
    let stopped = server.stop(STOP_GRACE);
    let shutdown = broker.shutdown();
    let _ = std::fs::remove_dir_all(dir);
    let value = result?;
    if stopped.forced > 0 {
        return Err(format!(
            "server stop forced {} connection(s)",
            stopped.forced
        ));
    }
    let report = shutdown.map_err(|e| format!("broker shutdown: {e}"))?;
    if report.forced || report.tasks_panicked > 0 {
        return Err(format!("unclean broker shutdown: {report:?}"));
    }
    Ok(value)
}

/// Connects a client to `server`; returns it and the shard the server put the
/// connection on (the one whose accepted count rose).
fn connect(server: &Server) -> Result<(Client, Option<usize>), String> {
    let mut config = ClientConfig::new(format!("ringbroker://{}", server.local_addr()));
    config.client_name = "net-report".into();
    // A dropped connection fails the case instead of reconnecting and losing messages.
    config.reconnect = None;
    let before = server.stats();
    let client = Client::connect(config).map_err(|e| format!("connect: {e}"))?;
    let shard = server
        .stats()
        .iter()
        .zip(&before)
        .position(|(after, before)| after.connections_accepted > before.connections_accepted);
    Ok((client, shard))
}

/// Connects until the server puts the connection on a shard for which `fits` holds
/// (each try lands on either shard by the kernel's hash); at most `PLACEMENT_TRIES`.
fn connect_where(server: &Server, fits: impl Fn(usize) -> bool) -> Result<(Client, usize), String> {
    for _ in 0..PLACEMENT_TRIES {
        if let (client, Some(shard)) = connect(server)? {
            if fits(shard) {
                return Ok((client, shard));
            }
        }
    }
    Err(format!(
        "no connection landed on the wanted shard in {PLACEMENT_TRIES} tries"
    ))
}

/// Connects the second connection of a pair to fit `placement` relative to `first`.
fn connect_placed(
    server: &Server,
    first: Option<usize>,
    placement: Placement,
) -> Result<(Client, Option<usize>), String> {
    match (placement, first) {
        (Placement::Same, Some(f)) => connect_where(server, |s| s == f).map(|(c, s)| (c, Some(s))),
        (Placement::Across, Some(f)) => {
            connect_where(server, |s| s != f).map(|(c, s)| (c, Some(s)))
        }
        (Placement::Kernel, _) => connect(server),
        (_, None) => Err("the first connection's shard is unknown".into()),
    }
}

fn shard_name(shard: Option<usize>) -> String {
    shard.map_or_else(|| "?".to_owned(), |s| s.to_string())
}

/// The server's counters summed over its shards, as one stderr line.
fn log_server(tag: &str, server: &Server) {
    let mut sum = NetStats::default();
    for s in server.stats() {
        sum += s;
    }
    eprintln!(
        "  {tag} server: frames in {} out {}, bytes in {} out {}, reads paused {}, \
         deliveries dropped {}, errors sent {}",
        sum.frames_in,
        sum.frames_out,
        sum.bytes_in,
        sum.bytes_out,
        sum.reads_paused,
        sum.deliveries_dropped,
        sum.errors_sent
    );
}

fn subject(text: &'static str) -> Result<Subject, String> {
    Subject::new(Bytes::from_static(text.as_bytes())).map_err(|e| e.to_string())
}

/// 1 ns to 100 s at 3 significant digits (`saturating_record` clamps above).
fn latency_histogram() -> Result<Histogram<u64>, String> {
    Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3).map_err(|e| e.to_string())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------
// Subscriptions, read the same way on both paths.

/// A subscription either path reads.
trait Inbox {
    /// The next message, waiting up to `wait` (zero: only one already buffered).
    fn next(&mut self, wait: Duration) -> Result<Option<Message>, String>;
    /// Messages lost on the way: (subscription buffer full, server output over bound).
    fn dropped(&self) -> (u64, u64);
}

/// A `Client`'s subscription, and the server's counters (its output drops).
struct TcpInbox {
    sub: ClientSubscription,
    server: NetStatsReader,
}

impl Inbox for TcpInbox {
    fn next(&mut self, wait: Duration) -> Result<Option<Message>, String> {
        if wait.is_zero() {
            return self
                .sub
                .try_next()
                .map_err(|e| format!("subscription: {e}"));
        }
        match self.sub.next_timeout(wait) {
            Ok(message) => Ok(Some(message)),
            Err(ClientError::Timeout(_)) => Ok(None),
            Err(error) => Err(format!("subscription: {error}")),
        }
    }

    fn dropped(&self) -> (u64, u64) {
        let server = self
            .server
            .stats()
            .iter()
            .map(|s| s.deliveries_dropped)
            .sum();
        (self.sub.dropped(), server)
    }
}

impl Inbox for Subscription {
    fn next(&mut self, wait: Duration) -> Result<Option<Message>, String> {
        if wait.is_zero() {
            return self.try_next().map_err(|e| format!("subscription: {e}"));
        }
        match self.next_timeout(wait) {
            Ok(message) => Ok(Some(message)),
            Err(PubSubError::Timeout) => Ok(None),
            Err(error) => Err(format!("subscription: {error}")),
        }
    }

    fn dropped(&self) -> (u64, u64) {
        (Subscription::dropped(self), 0)
    }
}

// ---------------------------------------------------------------------------------
// 1. Pub/sub throughput.

#[derive(Debug, Clone, Copy)]
struct FlowCase {
    via: Via,
    payload: usize,
    batch: usize,
}

impl FlowCase {
    fn name(&self) -> String {
        format!(
            "pubsub-{}-{}B-batch{}",
            self.via.tag(),
            self.payload,
            self.batch
        )
    }
}

#[derive(Debug, Clone, Default)]
struct FlowRun {
    published: u64,
    /// Start → every message routed (the engine's count matched the publisher's).
    publish_s: f64,
    received: u64,
    /// Start → the last message received.
    receive_s: f64,
    /// Payload bytes received.
    bytes: u64,
    /// Dropped by the subscription's buffer (client or embedded).
    dropped_buffer: u64,
    /// Dropped by the server: the subscriber connection's output was over its bound.
    dropped_server: u64,
    /// Embedded `publish_batch` calls refused with `Backpressure` (retried).
    refused: u64,
    /// "publisher shard → subscriber shard" of the connections.
    shards: String,
}

impl FlowRun {
    fn published_per_s(&self) -> f64 {
        self.published as f64 / self.publish_s
    }

    fn received_per_s(&self) -> f64 {
        self.received as f64 / self.receive_s
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.receive_s / 1e6
    }
}

fn flow_cases() -> Vec<FlowCase> {
    let mut cases = Vec::new();
    for payload in [64, 1024] {
        for batch in [64, 1] {
            for via in Via::PAIRED {
                cases.push(FlowCase {
                    via,
                    payload,
                    batch,
                });
            }
        }
    }
    cases
}

/// A batch of `case.batch` messages on `PUBSUB_SUBJECT` sharing one payload buffer.
fn message_batch(case: &FlowCase) -> Result<Vec<Message>, String> {
    let subject = subject(PUBSUB_SUBJECT)?;
    let payload = Bytes::from(vec![0xA5u8; case.payload]);
    Ok((0..case.batch)
        .map(|_| Message::new(subject.clone(), payload.clone()))
        .collect())
}

fn run_flow(options: &Options, dir: &Path, case: &FlowCase) -> Result<FlowRun, String> {
    with_node(dir, |broker, server| {
        let batch = message_batch(case)?;
        let run = match case.via {
            Via::Tcp(placement) => {
                let (subscriber, sub_shard) = connect(server)?;
                let sub = subscriber
                    .subscribe(PUBSUB_SUBJECT, None)
                    .map_err(|e| format!("subscribe: {e}"))?;
                let (publisher, pub_shard) = connect_placed(server, sub_shard, placement)?;
                let inbox = TcpInbox {
                    sub,
                    server: server.stats_reader(),
                };
                let publish = |deadline, cap| publish_tcp(&publisher, &batch, deadline, cap);
                let mut run = drive_flow(options, case, broker.pubsub(), inbox, publish)?;
                if run.shards != shard_name(pub_shard) {
                    let on = &run.shards;
                    return Err(format!(
                        "published on shard {on}, connected to {pub_shard:?}"
                    ));
                }
                run.shards = format!("{} → {}", shard_name(pub_shard), shard_name(sub_shard));
                log_server(&case.name(), server);
                run
            }
            Via::Embedded => {
                let pubsub = broker.pubsub();
                let sub = pubsub
                    .subscribe(PUBSUB_SUBJECT, SubscribeOptions::default())
                    .map_err(|e| format!("subscribe: {e}"))?;
                let publish = |deadline, cap| publish_embedded(pubsub, &batch, deadline, cap);
                let mut run = drive_flow(options, case, pubsub, sub, publish)?;
                // `PubSub` numbers subscriptions from 1 and gives each to shard id % shards.
                run.shards = format!("{} → {}", run.shards, 1 % SHARDS);
                run
            }
        };
        Ok(run)
    })
}

/// Publishes `batch` in one frame per call until `deadline` or `cap` messages; then
/// round-trips a `PING` (the server runs a connection's frames in order, so every
/// publish before it has been routed). Returns (published, refused).
fn publish_tcp(
    client: &Client,
    batch: &[Message],
    deadline: Instant,
    cap: u64,
) -> Result<(u64, u64), String> {
    let mut published = 0u64;
    while published < cap && Instant::now() < deadline {
        client
            .publish_batch_nowait(batch)
            .map_err(|e| format!("publish after {published} messages: {e}"))?;
        published += batch.len() as u64;
    }
    client
        .ping()
        .map_err(|e| format!("ping after publishing: {e}"))?;
    Ok((published, 0))
}

/// Publishes `batch` with `PubSub::publish_batch` until `deadline` or `cap` messages,
/// retrying (after a yield) while the shard's queue refuses. Returns (published,
/// refused).
fn publish_embedded(
    pubsub: &PubSub,
    batch: &[Message],
    deadline: Instant,
    cap: u64,
) -> Result<(u64, u64), String> {
    let (mut published, mut refused) = (0u64, 0u64);
    let mut refused_since: Option<Instant> = None;
    while published < cap && Instant::now() < deadline {
        match pubsub.publish_batch(batch.to_vec()) {
            Ok(()) => {
                published += batch.len() as u64;
                refused_since = None;
            }
            Err(PubSubError::Backpressure) => {
                refused += 1;
                if refused_since.get_or_insert_with(Instant::now).elapsed() > STALL {
                    return Err(format!("publish refused for {STALL:?}: stalled"));
                }
                std::thread::yield_now();
            }
            Err(error) => return Err(format!("publish after {published} messages: {error}")),
        }
    }
    Ok((published, refused))
}

/// Messages each shard says was published on it (`PubSubStats::published`). From
/// this thread, the stats task runs after every publish task this thread queued.
fn engine_published(pubsub: &PubSub) -> Result<Vec<u64>, String> {
    let give_up = Instant::now() + STALL;
    loop {
        match pubsub.stats() {
            Ok(stats) => return Ok(stats.iter().map(|s| s.published).collect()),
            Err(PubSubError::Backpressure) if Instant::now() < give_up => {
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(error) => return Err(format!("pub/sub stats: {error}")),
        }
    }
}

/// What a receiving loop counted.
struct Got {
    count: u64,
    bytes: u64,
    last_at: Instant,
}

/// Takes messages from `inbox` until received + dropped reaches `target` (`u64::MAX`
/// until the publisher is done), nothing came for `STALL` (`DRAIN_QUIET` once the
/// target is known), or `hard_stop`. Every payload must be `payload` bytes.
fn receive(
    inbox: &mut impl Inbox,
    target: &AtomicU64,
    payload: usize,
    hard_stop: Instant,
) -> Result<Got, String> {
    let mut got = Got {
        count: 0,
        bytes: 0,
        last_at: Instant::now(),
    };
    // One clock read per burst: `now` is when the last wait or burst ended.
    let mut now = Instant::now();
    let mut progress = now;
    loop {
        let due = target.load(Ordering::Acquire);
        if due != u64::MAX {
            let (buffer, server) = inbox.dropped();
            if got.count + buffer + server >= due {
                return Ok(got);
            }
        }
        let quiet = if due == u64::MAX { STALL } else { DRAIN_QUIET };
        if now.duration_since(progress) > quiet || now > hard_stop {
            return Ok(got);
        }
        let mut next = inbox.next(RECEIVE_WAIT)?;
        if next.is_none() {
            now = Instant::now();
            continue;
        }
        // Take what is buffered (up to the burst bound), then read the clock once.
        let mut taken = 0;
        while let Some(message) = next {
            if message.payload.len() != payload {
                let len = message.payload.len();
                return Err(format!("a message of {len} B, expected {payload} B"));
            }
            got.count += 1;
            got.bytes += payload as u64;
            taken += 1;
            if taken >= BURST_MAX {
                break;
            }
            next = inbox.next(Duration::ZERO)?;
        }
        now = Instant::now();
        progress = now;
        got.last_at = now;
    }
}

/// Runs the receiver on a thread and `publish` on this one; checks that the engine
/// routed every message published and that each was received or counted as dropped.
fn drive_flow<I: Inbox + Send>(
    options: &Options,
    case: &FlowCase,
    pubsub: &PubSub,
    inbox: I,
    publish: impl FnOnce(Instant, u64) -> Result<(u64, u64), String>,
) -> Result<FlowRun, String> {
    let target = AtomicU64::new(u64::MAX);
    let started = Instant::now();
    let hard_stop = started + options.duration() + STALL * 2;
    let (published, publish_s, received) = std::thread::scope(|scope| {
        let target = &target;
        let receiver = scope.spawn(move || {
            let mut inbox = inbox;
            let got = receive(&mut inbox, target, case.payload, hard_stop);
            (got, inbox.dropped())
        });
        let published = publish(started + options.duration(), options.messages_max)
            .and_then(|p| engine_published(pubsub).map(|routed| (p, routed)));
        let publish_s = started.elapsed().as_secs_f64();
        // On a publisher failure, the receiver stops at once (nothing more is due).
        let due = published.as_ref().map_or(0, |((p, _), _)| *p);
        target.store(due, Ordering::Release);
        let received = receiver.join().map_err(|_| "receiver panicked".to_owned());
        (published, publish_s, received)
    });
    let ((published, refused), per_shard) = published?;
    let routed: u64 = per_shard.iter().sum();
    if routed != published {
        return Err(format!("published {published}, the engine routed {routed}"));
    }
    // The shards the messages were published on (the publisher's connection, or the
    // embedded publisher's home shard).
    let on: Vec<String> = (0..per_shard.len())
        .filter(|&s| per_shard[s] > 0)
        .map(|s| s.to_string())
        .collect();
    let (got, (dropped_buffer, dropped_server)) = received?;
    let got = got?;
    let run = FlowRun {
        published,
        publish_s,
        received: got.count,
        receive_s: (got.last_at - started).as_secs_f64(),
        bytes: got.bytes,
        dropped_buffer,
        dropped_server,
        refused,
        shards: on.join(" + "),
    };
    check_flow(&run)?;
    Ok(run)
}

/// Every message published was received or counted as dropped, and no more.
fn check_flow(run: &FlowRun) -> Result<(), String> {
    let accounted = run.received + run.dropped_buffer + run.dropped_server;
    if accounted != run.published {
        return Err(format!(
            "published {}, received {} + dropped {} (subscription buffer) + {} (server \
             output): {} unaccounted for",
            run.published,
            run.received,
            run.dropped_buffer,
            run.dropped_server,
            i128::from(run.published) - i128::from(accounted)
        ));
    }
    Ok(())
}

fn pubsub_section(options: &Options, setup: &mut Setup) -> Vec<(FlowCase, FlowRun)> {
    let cases: Vec<FlowCase> = flow_cases()
        .into_iter()
        .filter(|c| options.wants(&c.name()))
        .collect();
    let mut runs = Vec::new();
    for case in &cases {
        if let Some(run) = setup.run(&case.name(), |dir| run_flow(options, dir, case)) {
            runs.push((*case, run));
        }
    }
    if cases.is_empty() {
        return runs;
    }
    println!("\n## 1. Pub/sub throughput: one publisher → one subscriber\n");
    println!(
        "| path | payload | batch | published msgs/s | received msgs/s | received MB/s | \
         published | dropped: subscription buffer / server output | connections: \
         publisher → subscriber shard | TCP ÷ embedded (received msgs/s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for case in &cases {
        print_flow_row(case, &runs);
    }
    println!(
        "\nTCP: one `Client` publishes with `publish_batch_nowait` (one frame per batch, \
         one `write` each) for {} s or {} messages, then round-trips a `PING`; another \
         `Client` subscribed to `{PUBSUB_SUBJECT}` is drained by one thread. Embedded: one \
         thread calls `PubSub::publish_batch` (one task per batch; refused calls retried \
         after a yield), one thread drains a `Subscription` (buffer 65536 messages). \
         Published msgs/s: messages ÷ time until the engine had routed them all (its \
         `published` count matched); received msgs/s and MB/s (payload bytes): ÷ time \
         to the last message received. Verified: received + dropped = published. \
         Placement: the report reconnects the publisher until the server holds it on the \
         subscriber's shard (one shard) or on the other (across shards); embedded, the \
         publishing thread's tasks run on its home shard and the subscription is owned by \
         one shard (id mod shards; the table shows the shard the engine counted the \
         publishes on → the owner).",
        options.seconds, options.messages_max
    );
    runs
}

/// The run of `case`'s payload and batch by `via`.
fn flow_run<'a>(runs: &'a [(FlowCase, FlowRun)], case: &FlowCase, via: Via) -> Option<&'a FlowRun> {
    let same = |c: &FlowCase| c.via == via && c.payload == case.payload && c.batch == case.batch;
    runs.iter().find(|(c, _)| same(c)).map(|(_, run)| run)
}

fn print_flow_row(case: &FlowCase, runs: &[(FlowCase, FlowRun)]) {
    let head = format!(
        "| {} | {} | {} |",
        case.via.name(),
        size(case.payload),
        case.batch
    );
    let Some(run) = flow_run(runs, case, case.via) else {
        println!("{head} FAILED: see stderr | | | | | | |");
        return;
    };
    let ratio = match case.via {
        Via::Embedded => "(baseline)".to_owned(),
        Via::Tcp(_) => flow_run(runs, case, Via::Embedded).map_or("–".to_owned(), |e| {
            format!(
                "**{}×**",
                fixed(run.received_per_s() / e.received_per_s(), 2)
            )
        }),
    };
    let shards = if run.shards.is_empty() {
        "–"
    } else {
        &run.shards
    };
    println!(
        "{head} {} | {} | {:.0} | {} | {} / {} | {shards} | {ratio} |",
        millions(run.published_per_s()),
        millions(run.received_per_s()),
        run.mb_per_s(),
        run.published,
        run.dropped_buffer,
        run.dropped_server,
    );
    if run.refused > 0 {
        eprintln!(
            "  {}: publish_batch refused {} times (retried)",
            case.name(),
            run.refused
        );
    }
}

// ---------------------------------------------------------------------------------
// 2. Request-reply latency.

struct RpcRun {
    latency_ns: Histogram<u64>,
    /// "requester shard → responder shard" of the connections.
    shards: String,
}

fn run_rpc(options: &Options, dir: &Path, via: Via) -> Result<RpcRun, String> {
    with_node(dir, |broker, server| match via {
        Via::Tcp(placement) => {
            let (responder, responder_shard) = connect(server)?;
            let sub = responder
                .subscribe(RPC_SUBJECT, None)
                .map_err(|e| format!("subscribe: {e}"))?;
            let (requester, requester_shard) = connect_placed(server, responder_shard, placement)?;
            let inbox = TcpInbox {
                sub,
                server: server.stats_reader(),
            };
            let reply = |m: Message| {
                responder
                    .publish(m.subject.as_str(), m.payload)
                    .map_err(|e| format!("reply: {e}"))
            };
            let request = |payload: Bytes| {
                requester
                    .request(RPC_SUBJECT, payload, RPC_TIMEOUT)
                    .map(|m| m.payload)
                    .map_err(|e| format!("request: {e}"))
            };
            let latency_ns = drive_rpc(options, inbox, reply, request)?;
            log_server(&format!("rpc-{}", via.tag()), server);
            let shards = format!(
                "{} → {}",
                shard_name(requester_shard),
                shard_name(responder_shard)
            );
            Ok(RpcRun { latency_ns, shards })
        }
        Via::Embedded => {
            let pubsub = broker.pubsub();
            let sub = pubsub
                .subscribe(RPC_SUBJECT, SubscribeOptions::default())
                .map_err(|e| format!("subscribe: {e}"))?;
            let reply = |m: Message| pubsub.publish_message(m).map_err(|e| format!("reply: {e}"));
            let request = |payload: Bytes| {
                pubsub
                    .request(RPC_SUBJECT, payload, RPC_TIMEOUT)
                    .map(|m| m.payload)
                    .map_err(|e| format!("request: {e}"))
            };
            let latency_ns = drive_rpc(options, sub, reply, request)?;
            Ok(RpcRun {
                latency_ns,
                shards: String::new(),
            })
        }
    })
}

/// Answers each request from `inbox` with `reply` (its payload, to its reply subject:
/// `reply` gets the message with the subject set) until `stop` or `hard_stop`.
fn answer(
    inbox: &mut impl Inbox,
    reply: impl Fn(Message) -> Result<(), String>,
    stop: &AtomicBool,
    hard_stop: Instant,
) -> Result<u64, String> {
    let mut answered = 0u64;
    while !stop.load(Ordering::Acquire) && Instant::now() < hard_stop {
        let Some(request) = inbox.next(RECEIVE_WAIT)? else {
            continue;
        };
        let to = request.reply.ok_or("a request without a reply subject")?;
        reply(Message::new(to, request.payload))?;
        answered += 1;
    }
    Ok(answered)
}

/// Runs the responder on a thread and sequential requests on this one, until the
/// deadline or the count; every reply must echo its request's payload.
fn drive_rpc<I: Inbox + Send>(
    options: &Options,
    inbox: I,
    reply: impl Fn(Message) -> Result<(), String> + Send,
    mut request: impl FnMut(Bytes) -> Result<Bytes, String>,
) -> Result<Histogram<u64>, String> {
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let deadline = started + options.duration();
    let hard_stop = deadline + STALL;
    let mut latency_ns = latency_histogram()?;
    let (requested, answered) = std::thread::scope(|scope| {
        let stop = &stop;
        let responder = scope.spawn(move || {
            let mut inbox = inbox;
            answer(&mut inbox, reply, stop, hard_stop)
        });
        let mut requested = Ok(());
        let payload = Bytes::from(vec![0x5Au8; RPC_PAYLOAD]);
        while latency_ns.len() < options.requests_max && Instant::now() < deadline {
            let at = Instant::now();
            match request(payload.clone()) {
                Ok(echo) if echo == payload => latency_ns.saturating_record(nanos(at.elapsed())),
                Ok(echo) => {
                    requested = Err(format!("a reply of {} B is not the request", echo.len()))
                }
                Err(error) => requested = Err(error),
            }
            if requested.is_err() {
                break;
            }
        }
        stop.store(true, Ordering::Release);
        let answered = responder
            .join()
            .map_err(|_| "responder panicked".to_owned());
        (requested, answered)
    });
    requested?;
    let answered = answered??;
    if answered != latency_ns.len() {
        return Err(format!(
            "{answered} requests answered, {} replies received",
            latency_ns.len()
        ));
    }
    Ok(latency_ns)
}

fn rpc_section(options: &Options, setup: &mut Setup) {
    let vias: Vec<Via> = Via::PAIRED
        .into_iter()
        .filter(|v| options.wants(&format!("rpc-{}", v.tag())))
        .collect();
    if vias.is_empty() {
        return;
    }
    let mut runs = Vec::new();
    for via in &vias {
        let tag = format!("rpc-{}", via.tag());
        if let Some(run) = setup.run(&tag, |dir| run_rpc(options, dir, *via)) {
            runs.push((*via, run));
        }
    }
    println!("\n## 2. Request → reply round trip (sequential, {RPC_PAYLOAD} B)\n");
    println!(
        "| path | requests | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | connections: \
         requester → responder shard | TCP ÷ embedded (p50 / p99) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let embedded = runs
        .iter()
        .find(|(v, _)| *v == Via::Embedded)
        .map(|(_, r)| r);
    for via in &vias {
        let Some(run) = runs.iter().find(|(v, _)| v == via).map(|(_, r)| r) else {
            println!("| {} | FAILED: see stderr | | | | | | | |", via.name());
            continue;
        };
        print_rpc_row(*via, run, embedded);
    }
    println!(
        "\nTCP: a responder `Client` subscribed to `{RPC_SUBJECT}` answers each request from \
         one thread by publishing its payload to the request's reply subject; a requester \
         `Client` sends one `request` after another for {} s or {} requests, each timed \
         from the call to its reply, in an HDR histogram. Embedded: the same with \
         `PubSub::request`, and a responder `Subscription` on a thread answering with \
         `publish_message`. Verified: every reply echoes its request, one answer per \
         request. Placement: the requester's connection on the responder's shard, or on \
         the other.",
        options.seconds, options.requests_max
    );
}

fn print_rpc_row(via: Via, run: &RpcRun, embedded: Option<&RpcRun>) {
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    let h = &run.latency_ns;
    let cells: Vec<String> = LATENCY_QUANTILES
        .iter()
        .map(|&q| format!("{:.1}", us(h, q)))
        .collect();
    let ratio = match (via, embedded) {
        (Via::Embedded, _) => "(baseline)".to_owned(),
        (Via::Tcp(_), Some(e)) => format!(
            "**{}×** / {}×",
            fixed(us(h, 0.5) / us(&e.latency_ns, 0.5), 2),
            fixed(us(h, 0.99) / us(&e.latency_ns, 0.99), 2)
        ),
        (Via::Tcp(_), None) => "–".to_owned(),
    };
    let shards = if run.shards.is_empty() {
        "–"
    } else {
        &run.shards
    };
    println!(
        "| {} | {} | {} | {:.1} | {shards} | {ratio} |",
        via.name(),
        h.len(),
        cells.join(" | "),
        h.max() as f64 / 1e3
    );
}

// ---------------------------------------------------------------------------------
// 3. Durable stream publish.

#[derive(Debug, Clone, Copy)]
struct StreamCase {
    via: Via,
    policy: Policy,
    connections: usize,
}

impl StreamCase {
    fn name(&self) -> String {
        format!(
            "stream-{}-{}-{}",
            self.via.tag(),
            self.policy.name(),
            self.connections
        )
    }
}

struct StreamRun {
    records: u64,
    seconds: f64,
    batch_ns: Histogram<u64>,
    /// Connections per shard ("4 + 4").
    shards: String,
}

impl StreamRun {
    fn records_per_s(&self) -> f64 {
        self.records as f64 / self.seconds
    }
}

/// What one publishing thread was told.
struct Published {
    /// Records acknowledged as stored, per partition.
    per_partition: Vec<u64>,
    batch_ns: Histogram<u64>,
    last_at: Instant,
}

type RecordResults = Vec<Result<PublishAck, String>>;

fn stream_config(policy: Policy) -> StreamConfig {
    StreamConfig {
        partitions: STREAM_PARTITIONS,
        durability: policy.durability(),
        // No record carries a Msg-Id: deduplication would only cost.
        dedup_window: Duration::ZERO,
        ..StreamConfig::new(STREAM, &[STREAM_PATTERN])
    }
}

/// `STREAM_BATCH` keyless records sharing one payload buffer.
fn record_batch() -> Vec<Publish> {
    let payload = Bytes::from(vec![0xA5u8; STREAM_PAYLOAD]);
    (0..STREAM_BATCH)
        .map(|_| Publish::new(STREAM_SUBJECT, payload.clone()))
        .collect()
}

/// Publishes batches with `publish` until `deadline` or `cap` records; every record
/// must be acknowledged as stored (new, in `STREAM`).
fn publish_records(
    mut publish: impl FnMut(&[Publish]) -> Result<RecordResults, String>,
    deadline: Instant,
    cap: u64,
) -> Result<Published, String> {
    let batch = record_batch();
    let mut out = Published {
        per_partition: vec![0; STREAM_PARTITIONS as usize],
        batch_ns: latency_histogram()?,
        last_at: Instant::now(),
    };
    let mut sent = 0u64;
    while sent < cap && Instant::now() < deadline {
        let at = Instant::now();
        let results = publish(&batch)?;
        out.last_at = Instant::now();
        out.batch_ns.saturating_record(nanos(out.last_at - at));
        if results.len() != batch.len() {
            return Err(format!(
                "{} answers to {} records",
                results.len(),
                batch.len()
            ));
        }
        for result in results {
            let ack = result.map_err(|e| format!("a record was not stored: {e}"))?;
            if ack.duplicate || &*ack.stream != STREAM {
                return Err(format!("unexpected acknowledgement {ack:?}"));
            }
            let count = usize::try_from(ack.partition)
                .ok()
                .and_then(|p| out.per_partition.get_mut(p))
                .ok_or_else(|| format!("acknowledged in partition {}", ack.partition))?;
            *count += 1;
        }
        sent += batch.len() as u64;
    }
    Ok(out)
}

/// Runs `connections` publishing threads (`make(i)` gives thread `i` its publish
/// call); returns what each was told and the start.
fn drive_stream<F>(
    options: &Options,
    connections: usize,
    make: impl Fn(usize) -> F + Sync,
) -> Result<(Vec<Published>, Instant), String>
where
    F: FnMut(&[Publish]) -> Result<RecordResults, String>,
{
    let started = Instant::now();
    let deadline = started + options.duration();
    let cap = (options.records_max / connections as u64).max(STREAM_BATCH as u64);
    let results: Vec<Result<Published, String>> = std::thread::scope(|scope| {
        let make = &make;
        let threads: Vec<_> = (0..connections)
            .map(|i| scope.spawn(move || publish_records(make(i), deadline, cap)))
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("publisher panicked".into()))
            })
            .collect()
    });
    let published = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok((published, started))
}

/// Sums the threads' acknowledgements and checks them against what the stream stores,
/// partition by partition.
fn stream_totals(
    published: &[Published],
    started: Instant,
    info: &StreamInfo,
) -> Result<StreamRun, String> {
    let mut per_partition = vec![0u64; STREAM_PARTITIONS as usize];
    let mut batch_ns = latency_histogram()?;
    let mut last_at = started;
    for p in published {
        for (total, n) in per_partition.iter_mut().zip(&p.per_partition) {
            *total += n;
        }
        batch_ns.add(&p.batch_ns).map_err(|e| e.to_string())?;
        last_at = last_at.max(p.last_at);
    }
    let stored: Vec<u64> = info.partitions.iter().map(|p| p.records).collect();
    if stored != per_partition {
        return Err(format!(
            "the stream stores {stored:?} records per partition, {per_partition:?} were \
             acknowledged"
        ));
    }
    Ok(StreamRun {
        records: per_partition.iter().sum(),
        seconds: (last_at - started).as_secs_f64(),
        batch_ns,
        shards: String::new(),
    })
}

fn run_stream(options: &Options, dir: &Path, case: &StreamCase) -> Result<StreamRun, String> {
    with_node(dir, |broker, server| match case.via {
        Via::Tcp(_) => {
            let clients = (0..case.connections)
                .map(|_| connect(server).map(|(client, _)| client))
                .collect::<Result<Vec<_>, _>>()?;
            let open: Vec<String> = server
                .stats()
                .iter()
                .map(|s| s.connections_open.to_string())
                .collect();
            let first = clients.first().ok_or("no connection")?;
            first
                .create_stream(&stream_config(case.policy))
                .map_err(|e| format!("create stream: {e}"))?;
            let all = &clients;
            let make = move |i: usize| {
                let client = &all[i];
                move |batch: &[Publish]| match client.publish_records(batch) {
                    Ok(results) => Ok(results
                        .into_iter()
                        .map(|r| r.map_err(|e| e.to_string()))
                        .collect()),
                    Err(error) => Err(format!("publish_records: {error}")),
                }
            };
            let (published, started) = drive_stream(options, case.connections, make)?;
            let info = first
                .stream_info(STREAM)
                .map_err(|e| format!("stream info: {e}"))?;
            log_server(&case.name(), server);
            let mut run = stream_totals(&published, started, &info)?;
            run.shards = open.join(" + ");
            Ok(run)
        }
        Via::Embedded => {
            let streams = broker.streams();
            streams
                .create(stream_config(case.policy))
                .map_err(|e| format!("create stream: {e}"))?;
            let make = move |_| {
                move |batch: &[Publish]| match streams.publish_batch(batch.to_vec()) {
                    Ok(results) => Ok(results
                        .into_iter()
                        .map(|r| r.map_err(|e| e.to_string()))
                        .collect()),
                    Err(error) => Err(format!("publish_batch: {error}")),
                }
            };
            let (published, started) = drive_stream(options, case.connections, make)?;
            let info = streams
                .info(STREAM)
                .map_err(|e| format!("stream info: {e}"))?;
            stream_totals(&published, started, &info)
        }
    })
}

fn stream_cases() -> Vec<StreamCase> {
    let mut cases = Vec::new();
    for policy in [Policy::Always, Policy::None] {
        for connections in STREAM_CONNECTIONS {
            for via in Via::STREAM {
                cases.push(StreamCase {
                    via,
                    policy,
                    connections,
                });
            }
        }
    }
    cases
}

fn stream_section(options: &Options, setup: &mut Setup) {
    let cases: Vec<StreamCase> = stream_cases()
        .into_iter()
        .filter(|c| options.wants(&c.name()))
        .collect();
    if cases.is_empty() {
        return;
    }
    let mut runs = Vec::new();
    for case in &cases {
        if let Some(run) = setup.run(&case.name(), |dir| run_stream(options, dir, case)) {
            runs.push((case.name(), run));
        }
    }
    println!(
        "\n## 3. Durable stream publish: batches of {STREAM_BATCH} records of \
         {STREAM_PAYLOAD} B, {STREAM_PARTITIONS} partitions\n"
    );
    println!(
        "| path | durability | connections (TCP) / threads (embedded) | records/s | records \
         | batch round trip p50 µs | p99 µs | connections per shard | TCP ÷ embedded \
         (records/s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for case in &cases {
        print_stream_row(case, &runs);
    }
    println!(
        "\nEach connection (TCP: one `Client` each) or thread (embedded) has one batch in \
         flight: it calls `publish_records` / `Streams::publish_batch` and waits until \
         every record of the batch is stored under the durability policy, for {} s or \
         {} records in all. Records/s: records acknowledged ÷ time to the last answer. \
         Round trip: one call, timed by its caller. Verified: every record acknowledged \
         as stored, none a duplicate, and `stream_info` stores per partition exactly as \
         many as were acknowledged there.",
        options.seconds, options.records_max
    );
}

fn print_stream_row(case: &StreamCase, runs: &[(String, StreamRun)]) {
    let head = format!(
        "| {} | {} | {} |",
        case.via.name(),
        case.policy.name(),
        case.connections
    );
    let find = |name: String| runs.iter().find(|(n, _)| *n == name).map(|(_, r)| r);
    let Some(run) = find(case.name()) else {
        println!("{head} FAILED: see stderr | | | | | |");
        return;
    };
    let ratio = match case.via {
        Via::Embedded => "(baseline)".to_owned(),
        Via::Tcp(_) => find(
            StreamCase {
                via: Via::Embedded,
                ..*case
            }
            .name(),
        )
        .map_or("–".to_owned(), |e| {
            format!("**{}×**", fixed(run.records_per_s() / e.records_per_s(), 2))
        }),
    };
    let shards = if run.shards.is_empty() {
        "–"
    } else {
        &run.shards
    };
    println!(
        "{head} {} | {} | {:.1} | {:.1} | {shards} | {ratio} |",
        millions(run.records_per_s()),
        run.records,
        run.batch_ns.value_at_quantile(0.5) as f64 / 1e3,
        run.batch_ns.value_at_quantile(0.99) as f64 / 1e3,
    );
}

// ---------------------------------------------------------------------------------
// 4. iperf3.

/// iperf3's version line, or `None` if it is not installed.
fn iperf_version() -> Option<String> {
    let out = Command::new("iperf3").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status
        .success()
        .then(|| text.lines().next().unwrap_or_default().trim().to_owned())
}

/// A loopback port nobody listens on now (the kernel's pick for port 0).
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|e| format!("bind: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    Ok(port)
}

/// Waits for `child` at most `limit`; kills it (by its pid) past that.
fn wait_bounded(child: &mut Child, limit: Duration) -> Result<ExitStatus, String> {
    let give_up = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < give_up => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "pid {} still running after {limit:?}: killed",
                    child.id()
                ));
            }
            Err(error) => return Err(format!("waiting for pid {}: {error}", child.id())),
        }
    }
}

/// Kills `child` (by its pid) if it is still running, and reaps it.
fn stop_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        if let Err(error) = child.kill() {
            eprintln!("cannot kill iperf3 pid {}: {error}", child.id());
        }
    }
    let _ = child.wait();
}

/// Runs `iperf3 -s -1` on a free loopback port and one `iperf3 -c` against it for
/// `seconds`; returns the received bits/s. The server is killed if still running.
fn run_iperf(seconds: u64, dir: &Path) -> Result<f64, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let port = free_port()?.to_string();
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start iperf3 -s: {e}"))?;
    let result = iperf_client(&port, seconds, dir);
    stop_child(&mut server);
    let _ = std::fs::remove_dir_all(dir);
    result
}

/// `iperf3 -c 127.0.0.1 -p port -t seconds -J`, retried while the server is not up
/// yet; its JSON goes to a file (no pipe to fill).
fn iperf_client(port: &str, seconds: u64, dir: &Path) -> Result<f64, String> {
    let out_path = dir.join("iperf3-client.json");
    let secs = seconds.to_string();
    for _ in 0..IPERF_CONNECT_TRIES {
        let out = std::fs::File::create(&out_path).map_err(|e| format!("{e}"))?;
        let mut child = Command::new("iperf3")
            .args(["-c", "127.0.0.1", "-p", port, "-t", &secs, "-J"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start iperf3 -c: {e}"))?;
        let status = wait_bounded(&mut child, Duration::from_secs(seconds) + IPERF_SLACK)?;
        let text = std::fs::read_to_string(&out_path).map_err(|e| format!("{e}"))?;
        // iperf3 3.12 with -J exits 0 even when it could not connect: read the JSON.
        if text.contains("unable to connect") {
            std::thread::sleep(IPERF_RETRY);
            continue;
        }
        if !status.success() || text.contains("\"error\"") {
            return Err(format!("iperf3 -c failed ({status}): {}", text.trim()));
        }
        return received_bits_per_second(&text);
    }
    Err(format!(
        "iperf3 server not reachable after {IPERF_CONNECT_TRIES} tries"
    ))
}

/// `end.sum_received.bits_per_second` of iperf3's JSON: the first `bits_per_second`
/// after the `sum_received` key (only `end` has one).
fn received_bits_per_second(json: &str) -> Result<f64, String> {
    let at = json
        .find("\"sum_received\"")
        .ok_or("iperf3 output has no end.sum_received")?;
    let key = "\"bits_per_second\"";
    let rest = &json[at..];
    let k = rest
        .find(key)
        .ok_or("iperf3 output has no end.sum_received.bits_per_second")?;
    let value = rest[k + key.len()..]
        .trim_start()
        .strip_prefix(':')
        .ok_or("iperf3 output: no ':' after bits_per_second")?
        .trim_start();
    let end = value
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')))
        .unwrap_or(value.len());
    let bits: f64 = value[..end]
        .parse()
        .map_err(|e| format!("iperf3 bits_per_second {:?}: {e}", &value[..end]))?;
    if !(bits.is_finite() && bits > 0.0) {
        return Err(format!("iperf3 bits_per_second {bits}"));
    }
    Ok(bits)
}

fn iperf_section(options: &Options, setup: &mut Setup, flows: &[(FlowCase, FlowRun)]) {
    if !options.wants("iperf3") {
        return;
    }
    println!("\n## 4. Loopback bandwidth baseline: iperf3\n");
    let Some(version) = iperf_version() else {
        println!(
            "iperf3 is not installed (not on PATH): no baseline this run. Install it with \
             `apt-get install -y iperf3` and run again."
        );
        return;
    };
    let seconds = options.iperf_seconds;
    let Some(bits) = setup.run("iperf3", |dir| run_iperf(seconds, dir)) else {
        println!("iperf3 FAILED: see stderr");
        return;
    };
    let iperf_mb = bits / 8.0 / 1e6;
    println!("| bytes over loopback TCP | MB/s | Gbit/s | ÷ iperf3 |");
    println!("|---|---|---|---|");
    println!(
        "| iperf3: one TCP stream, received (baseline) | {iperf_mb:.0} | {:.2} | 1.000 |",
        bits / 1e9
    );
    for (case, run) in flows {
        if case.via.is_tcp() && case.payload == 1024 {
            println!(
                "| pub/sub {}, 1 KiB, batch {}: payload received | {:.0} | {:.2} | {} |",
                case.via.name(),
                case.batch,
                run.mb_per_s(),
                run.mb_per_s() * 8.0 / 1e3,
                fixed(run.mb_per_s() / iperf_mb, 3)
            );
        }
    }
    println!(
        "\n`{version}`: `iperf3 -s -1 -B 127.0.0.1 -p <free port>` as a child, then \
         `iperf3 -c 127.0.0.1 -p <port> -t {seconds} -J`; `end.sum_received.bits_per_second`. \
         The pub/sub rows count payload bytes only; each message carries its subject and \
         frame headers too, and crosses loopback twice (publisher → server → subscriber)."
    );
}

fn print_reading_notes() {
    println!(
        "\n## How to read this\n\n\
         - Ratios compare the same workload over TCP and embedded, measured in this run \
           on the same build: below 1× for throughput (above 1× for latency) is the \
           network tax.\n\
         - Client and server share the machine: both shards, the server's io_uring work, \
           each `Client`'s reader thread and the application threads all compete for the \
           same cores; on a machine with few cores the figures measure that contention \
           as much as the protocol.\n\
         - The `Client` writes one frame per call with one `write` under a lock: at \
           batch 1 every message is a syscall on the publisher's side, and each \
           delivered message is one `MESSAGE` frame the subscriber's reader decodes and \
           hands over a channel.\n\
         - Which shard a connection lands on is the kernel's `SO_REUSEPORT` hash: the \
           publisher and subscriber (requester and responder) may share a shard or not, \
           which moves single runs; compare medians of several runs.\n\
         - Subjects are at most once: a row with drops is verified (every message \
           accounted for) but its received rate is what the subscriber kept up with."
    );
}

// ---------------------------------------------------------------------------------
// Formatting.

fn millions(per_s: f64) -> String {
    if per_s.is_finite() {
        format!("{:.3} M", per_s / 1e6)
    } else {
        "–".to_owned()
    }
}

fn fixed(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "–".to_owned()
    }
}

fn size(bytes: usize) -> String {
    if bytes >= 1024 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPERF_JSON: &str = r#"{
	"intervals":	[{"sum": {"end": 1.0, "bits_per_second": 1.5e9}}],
	"end":	{
		"sum_sent":	{ "bytes": 100, "bits_per_second":	18988799897.604916 },
		"sum_received":	{
			"start":	0,
			"bits_per_second":	18943966211.041008,
			"sender":	true
		}
	}
}"#;

    #[test]
    fn iperf_received_rate_is_read_from_end_sum_received() {
        let bits = received_bits_per_second(IPERF_JSON).unwrap();
        assert!((bits - 18_943_966_211.041_008).abs() < 1.0, "{bits}");
    }

    #[test]
    fn iperf_output_without_the_figure_is_an_error() {
        assert!(received_bits_per_second("{}").is_err());
        assert!(received_bits_per_second(r#"{"sum_received": {}}"#).is_err());
        let bad = r#"{"sum_received": {"bits_per_second": "x"}}"#;
        assert!(received_bits_per_second(bad).is_err());
        let zero = r#"{"sum_received": {"bits_per_second": 0}}"#;
        assert!(received_bits_per_second(zero).is_err());
    }

    #[test]
    fn an_unaccounted_message_fails_the_flow() {
        let mut run = FlowRun {
            published: 100,
            received: 90,
            dropped_buffer: 6,
            dropped_server: 4,
            ..FlowRun::default()
        };
        check_flow(&run).unwrap();
        run.received = 89;
        assert!(check_flow(&run).is_err(), "one lost");
        run.received = 91;
        assert!(check_flow(&run).is_err(), "one extra");
    }
}
