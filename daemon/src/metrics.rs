//! `/metrics`: a `Snapshot` in the Prometheus text exposition format (version 0.0.4).
//!
//! Owns: every metric's name, help text, type and labels. Never: reads the engine (it
//! is handed a `Snapshot`), or shows a figure the engine does not give: the one derived
//! figure, consumer lag, is the difference of two figures the engine gives.
//!
//! Names follow Prometheus habits: `ringbroker_` first, the unit or `_total` last.
//! Every family has its `# HELP` and `# TYPE` lines even when it has no samples (no
//! streams yet), so a scrape's shape does not depend on the data.

use ringbroker::net::NetStats;
use ringbroker::pubsub::PubSubStats;
use ringbroker::runtime::ShardStats;

use crate::snapshot::{Snapshot, StreamsSnapshot};

/// The `Content-Type` of the rendering.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
        }
    }
}

type ShardField = fn(&ShardStats) -> u64;
type PubSubField = fn(&PubSubStats) -> u64;

/// The runtime's per-shard gauges and the sync count.
const SHARD_GAUGES: [(&str, Kind, &str, ShardField); 3] = [
    (
        "ringbroker_shard_ring_occupancy",
        Kind::Gauge,
        "Tasks the shard pushed into other shards' rings not yet taken (as last seen).",
        |s| s.ring_occupancy,
    ),
    (
        "ringbroker_shard_outbound_backlog",
        Kind::Gauge,
        "Tasks waiting in the shard for room in full rings.",
        |s| s.outbound_backlog,
    ),
    (
        "ringbroker_shard_fsyncs_total",
        Kind::Counter,
        "fdatasync calls the shard completed.",
        |s| s.fsyncs,
    ),
];

/// The runtime's per-shard counters (`RuntimeHandle::stats`), one family each.
const SHARD_COUNTERS: [(&str, &str, ShardField); 10] = [
    (
        "ringbroker_shard_tasks_run_total",
        "Tasks the shard ran (from rings, the external queue, its local queue and timers).",
        |s| s.tasks_run,
    ),
    (
        "ringbroker_shard_tasks_panicked_total",
        "Tasks that panicked on the shard (caught; the shard carried on).",
        |s| s.tasks_panicked,
    ),
    (
        "ringbroker_shard_tasks_sent_total",
        "Tasks the shard sent to shards, itself included.",
        |s| s.tasks_sent,
    ),
    (
        "ringbroker_shard_ops_completed_total",
        "I/O completions the shard dispatched to their handlers.",
        |s| s.ops_completed,
    ),
    (
        "ringbroker_shard_parks_total",
        "Times the shard parked in io_uring_enter with nothing to do.",
        |s| s.parks,
    ),
    (
        "ringbroker_shard_uring_enters_total",
        "io_uring_enter calls the shard made (parks plus plain submits).",
        |s| s.uring_enters,
    ),
    (
        "ringbroker_shard_wakeups_sent_total",
        "Eventfd writes the shard made to wake parked shards.",
        |s| s.wakeups_sent,
    ),
    (
        "ringbroker_shard_external_wakeups_total",
        "Eventfd writes non-shard threads made to wake the shard.",
        |s| s.external_wakeups,
    ),
    (
        "ringbroker_shard_timers_fired_total",
        "Timer tasks the shard fired.",
        |s| s.timers_fired,
    ),
    (
        "ringbroker_shard_syscalls_total",
        "Syscalls the shard caused: its io_uring_enter calls plus the wake-ups it sent.",
        ShardStats::syscalls,
    ),
];

/// The pub/sub model's per-shard counters (`PubSub::stats`), one family each.
const PUBSUB_COUNTERS: [(&str, &str, PubSubField); 6] = [
    (
        "ringbroker_pubsub_published_total",
        "Messages published on the shard.",
        |s| s.published,
    ),
    (
        "ringbroker_pubsub_routed_total",
        "Deliveries routed from the shard (one per receiving subscription).",
        |s| s.routed,
    ),
    (
        "ringbroker_pubsub_no_interest_total",
        "Messages published on the shard that matched no subscription.",
        |s| s.no_interest,
    ),
    (
        "ringbroker_pubsub_unknown_target_total",
        "Deliveries that arrived on the shard for a subscription already gone.",
        |s| s.unknown_target,
    ),
    (
        "ringbroker_pubsub_dropped_slow_total",
        "Deliveries dropped by full subscription buffers on the shard.",
        |s| s.dropped_slow,
    ),
    (
        "ringbroker_pubsub_dropped_outbox_total",
        "Fire-and-forget publishes dropped because the shard's outbox was full.",
        |s| s.dropped_outbox,
    ),
];

type NetField = fn(&NetStats) -> u64;

/// The native-protocol server's per-shard counters (`Server::stats`), one family each.
const NET_FAMILIES: [(&str, Kind, &str, NetField); 12] = [
    (
        "ringbroker_net_connections_open",
        Kind::Gauge,
        "Connections open on the shard.",
        |s| s.connections_open,
    ),
    (
        "ringbroker_net_connections_accepted_total",
        Kind::Counter,
        "Connections the shard accepted.",
        |s| s.connections_accepted,
    ),
    (
        "ringbroker_net_connections_refused_total",
        Kind::Counter,
        "Connections closed at once because the shard held its maximum.",
        |s| s.connections_refused,
    ),
    (
        "ringbroker_net_connections_closed_total",
        Kind::Counter,
        "Connections the shard closed.",
        |s| s.connections_closed,
    ),
    (
        "ringbroker_net_frames_in_total",
        Kind::Counter,
        "Whole frames the shard received.",
        |s| s.frames_in,
    ),
    (
        "ringbroker_net_frames_out_total",
        Kind::Counter,
        "Frames the shard queued for sending.",
        |s| s.frames_out,
    ),
    (
        "ringbroker_net_bytes_in_total",
        Kind::Counter,
        "Bytes the shard received.",
        |s| s.bytes_in,
    ),
    (
        "ringbroker_net_bytes_out_total",
        Kind::Counter,
        "Bytes the shard sent.",
        |s| s.bytes_out,
    ),
    (
        "ringbroker_net_errors_sent_total",
        Kind::Counter,
        "ERROR frames the shard sent.",
        |s| s.errors_sent,
    ),
    (
        "ringbroker_net_reads_paused_total",
        Kind::Counter,
        "Times a connection stopped being read because its output was over the bound.",
        |s| s.reads_paused,
    ),
    (
        "ringbroker_net_deliveries_dropped_total",
        Kind::Counter,
        "Subject messages dropped for connections whose output was over the bound.",
        |s| s.deliveries_dropped,
    ),
    (
        "ringbroker_net_publishers_stalled_total",
        Kind::Counter,
        "Times a publishing connection stopped being read (until the backlog cleared, at most 100 ms) because its messages reached a connection with more than half its output bound unsent.",
        |s| s.publishers_stalled,
    ),
];

/// Renders `snapshot`.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    family(
        &mut out,
        ("ringbroker_shards", Kind::Gauge, "Shards the runtime runs."),
        [(String::new(), snapshot.shards.len() as u64)],
    );
    for (name, help, field) in SHARD_COUNTERS {
        let samples = snapshot
            .shards
            .iter()
            .map(|s| (labels(&[("shard", &s.shard.to_string())]), field(s)));
        family(&mut out, (name, Kind::Counter, help), samples);
    }
    for (name, kind, help, field) in SHARD_GAUGES {
        let samples = snapshot
            .shards
            .iter()
            .map(|s| (labels(&[("shard", &s.shard.to_string())]), field(s)));
        family(&mut out, (name, kind, help), samples);
    }
    render_fsync_histogram(&mut out, &snapshot.shards);
    for (name, help, field) in PUBSUB_COUNTERS {
        // `PubSub::stats` is in shard order: the index is the shard.
        let samples = snapshot
            .pubsub
            .iter()
            .enumerate()
            .map(|(shard, s)| (labels(&[("shard", &shard.to_string())]), field(s)));
        family(&mut out, (name, Kind::Counter, help), samples);
    }
    for (name, kind, help, field) in NET_FAMILIES {
        // `Server::stats` is in shard order: the index is the shard.
        let samples = snapshot
            .net
            .iter()
            .enumerate()
            .map(|(shard, s)| (labels(&[("shard", &shard.to_string())]), field(s)));
        family(&mut out, (name, kind, help), samples);
    }
    render_partitions(&mut out, &snapshot.streams);
    render_consumers(&mut out, &snapshot.streams);
    render_queues(&mut out, &snapshot.queues);
    out
}

/// Each queue's ready messages, unacknowledged deliveries and consumers.
fn render_queues(out: &mut String, queues: &[ringbroker::queue::QueueInfo]) {
    type Field = fn(&ringbroker::queue::QueueInfo) -> u64;
    let families: [(&str, &str, Field); 3] = [
        (
            "ringbroker_queue_messages",
            "Ready messages in the queue.",
            |q| q.messages,
        ),
        (
            "ringbroker_queue_unacked",
            "Deliveries of the queue not yet acknowledged.",
            |q| q.unacked as u64,
        ),
        (
            "ringbroker_queue_consumers",
            "Consumers of the queue.",
            |q| q.consumers as u64,
        ),
    ];
    for (name, help, field) in families {
        let samples = queues
            .iter()
            .map(|q| (labels(&[("queue", &q.name)]), field(q)));
        family(out, (name, Kind::Gauge, help), samples);
    }
}

/// Each shard's fsync latency as a Prometheus histogram: cumulative `le` buckets at
/// powers of two microseconds (in seconds), `+Inf`, `_sum` and `_count`.
fn render_fsync_histogram(out: &mut String, shards: &[ShardStats]) {
    let name = "ringbroker_shard_fsync_latency_seconds";
    out.push_str(&format!(
        "# HELP {name} fdatasync latency on the shard, submit to completion.\n"
    ));
    out.push_str(&format!("# TYPE {name} histogram\n"));
    for s in shards {
        let shard = s.shard.to_string();
        let mut cumulative = 0u64;
        let last = s.fsync_latency_us.len() - 1;
        for (i, &n) in s.fsync_latency_us.iter().enumerate() {
            cumulative += n;
            let le = if i == last {
                "+Inf".to_owned()
            } else {
                // Bucket i holds syncs under 2^i µs.
                format!("{}", (1u64 << i) as f64 / 1e6)
            };
            let l = labels(&[("shard", &shard), ("le", &le)]);
            out.push_str(&format!("{name}_bucket{l} {cumulative}\n"));
        }
        let l = labels(&[("shard", &shard)]);
        out.push_str(&format!(
            "{name}_sum{l} {}\n",
            s.fsync_us_total as f64 / 1e6
        ));
        out.push_str(&format!("{name}_count{l} {}\n", s.fsyncs));
    }
}

fn render_partitions(out: &mut String, streams: &StreamsSnapshot) {
    type Field = fn(&ringbroker::stream::PartitionInfo) -> u64;
    let families: [(&str, &str, Field); 4] = [
        (
            "ringbroker_stream_partition_records",
            "Records the partition stores.",
            |p| p.records,
        ),
        (
            "ringbroker_stream_partition_bytes",
            "Bytes of the partition's segments.",
            |p| p.bytes,
        ),
        (
            "ringbroker_stream_partition_first_offset",
            "The first offset the partition still stores.",
            |p| p.first_offset,
        ),
        (
            "ringbroker_stream_partition_next_offset",
            "The offset the partition's next record will get.",
            |p| p.next_offset,
        ),
    ];
    for (name, help, field) in families {
        let samples = streams.streams.iter().flat_map(|stream| {
            stream.partitions.iter().map(move |p| {
                let labels = labels(&[
                    ("stream", &stream.config.name),
                    ("partition", &p.partition.to_string()),
                    ("shard", &p.shard.to_string()),
                ]);
                (labels, field(p))
            })
        });
        family(out, (name, Kind::Gauge, help), samples);
    }
}

fn render_consumers(out: &mut String, streams: &StreamsSnapshot) {
    let consumer_labels = |stream: &str, consumer: &str, partition: u32| {
        labels(&[
            ("stream", stream),
            ("consumer", consumer),
            ("partition", &partition.to_string()),
        ])
    };
    let positions = || {
        streams.consumers.iter().flat_map(|c| {
            let labels = move |p: u32| consumer_labels(&c.stream, &c.name, p);
            c.info
                .partitions
                .iter()
                .map(move |p| (c, labels(p.partition), p))
        })
    };
    family(
        out,
        (
            "ringbroker_consumer_partition_next_offset",
            Kind::Gauge,
            "The next offset the durable consumer reads in the partition.",
        ),
        positions().map(|(_, labels, p)| (labels, p.next_offset)),
    );
    family(
        out,
        (
            "ringbroker_consumer_partition_pending",
            Kind::Gauge,
            "Records delivered to the durable consumer in the partition and not yet acknowledged.",
        ),
        positions().map(|(_, labels, p)| (labels, p.pending as u64)),
    );
    family(
        out,
        ("ringbroker_consumer_partition_lag", Kind::Gauge, "Records stored in the partition and not yet delivered to the durable consumer (the partition's next offset less the consumer's)."),
        positions().filter_map(|(c, labels, p)| Some((labels, streams.lag(c, p.partition)?))),
    );
}

/// Writes one family: its `# HELP` and `# TYPE` lines, then its samples (each a
/// rendered label set, empty for none, and a value).
fn family(
    out: &mut String,
    (name, kind, help): (&str, Kind, &str),
    samples: impl IntoIterator<Item = (String, u64)>,
) {
    out.push_str(&format!("# HELP {name} {help}\n"));
    out.push_str(&format!("# TYPE {name} {}\n", kind.as_str()));
    for (labels, value) in samples {
        out.push_str(&format!("{name}{labels} {value}\n"));
    }
}

/// `{a="x",b="y"}`, values escaped as the format requires.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(name, value)| format!("{name}=\"{}\"", escape_label_value(value)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Backslash, double quote and line feed are the three characters a label value
/// escapes.
fn escape_label_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tests::orders_and_billing;

    fn known_snapshot() -> Snapshot {
        let shard = |shard, base: u64| ShardStats {
            shard,
            tasks_run: base + 1,
            tasks_panicked: base + 2,
            tasks_sent: base + 3,
            ops_completed: base + 4,
            parks: base + 5,
            uring_enters: base + 6,
            wakeups_sent: base + 7,
            external_wakeups: base + 8,
            timers_fired: base + 9,
            ..ShardStats::default()
        };
        let pubsub = |base: u64| PubSubStats {
            published: base + 1,
            routed: base + 2,
            no_interest: base + 3,
            unknown_target: base + 4,
            dropped_slow: base + 5,
            dropped_outbox: base + 6,
        };
        Snapshot {
            shards: vec![shard(0, 0), shard(1, 100)],
            pubsub: vec![pubsub(0), pubsub(200)],
            streams: orders_and_billing(),
            net: vec![NetStats {
                connections_open: 3,
                bytes_in: 4096,
                ..NetStats::default()
            }],
            queues: Vec::new(),
        }
    }

    /// The lines of `text` from `# HELP {name}` through the family's last sample.
    fn family_block<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        let help = format!("# HELP {name} ");
        let lines: Vec<&str> = text.lines().collect();
        let start = lines
            .iter()
            .position(|l| l.starts_with(&help))
            .unwrap_or_else(|| panic!("no family {name}"));
        let len = lines[start + 2..]
            .iter()
            .take_while(|l| !l.starts_with('#'))
            .count();
        lines[start..start + 2 + len].to_vec()
    }

    #[test]
    fn shard_counters_render_exactly() {
        let text = render(&known_snapshot());
        assert_eq!(
            family_block(&text, "ringbroker_shard_tasks_run_total"),
            [
                "# HELP ringbroker_shard_tasks_run_total Tasks the shard ran (from rings, the external queue, its local queue and timers).",
                "# TYPE ringbroker_shard_tasks_run_total counter",
                "ringbroker_shard_tasks_run_total{shard=\"0\"} 1",
                "ringbroker_shard_tasks_run_total{shard=\"1\"} 101",
            ]
        );
        assert_eq!(
            family_block(&text, "ringbroker_shard_syscalls_total")[2..],
            [
                "ringbroker_shard_syscalls_total{shard=\"0\"} 13",
                "ringbroker_shard_syscalls_total{shard=\"1\"} 213",
            ]
        );
        assert_eq!(
            family_block(&text, "ringbroker_shards"),
            [
                "# HELP ringbroker_shards Shards the runtime runs.",
                "# TYPE ringbroker_shards gauge",
                "ringbroker_shards 2",
            ]
        );
    }

    #[test]
    fn fsync_latency_renders_as_a_cumulative_histogram() {
        let mut shard = ShardStats {
            fsyncs: 3,
            fsync_us_total: 3000,
            ..ShardStats::default()
        };
        shard.fsync_latency_us[10] = 2; // under 1024 µs
        shard.fsync_latency_us[12] = 1; // under 4096 µs
        let text = render(&Snapshot {
            shards: vec![shard],
            ..Snapshot::default()
        });
        let name = "ringbroker_shard_fsync_latency_seconds";
        for line in [
            format!("# TYPE {name} histogram"),
            format!("{name}_bucket{{shard=\"0\",le=\"0.000512\"}} 0"),
            format!("{name}_bucket{{shard=\"0\",le=\"0.001024\"}} 2"),
            format!("{name}_bucket{{shard=\"0\",le=\"0.002048\"}} 2"),
            format!("{name}_bucket{{shard=\"0\",le=\"0.004096\"}} 3"),
            format!("{name}_bucket{{shard=\"0\",le=\"+Inf\"}} 3"),
            format!("{name}_sum{{shard=\"0\"}} 0.003"),
            format!("{name}_count{{shard=\"0\"}} 3"),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn queue_figures_render_by_queue() {
        let text = render(&Snapshot {
            queues: vec![ringbroker::queue::QueueInfo {
                name: "jobs".into(),
                messages: 7,
                unacked: 2,
                consumers: 1,
            }],
            ..Snapshot::default()
        });
        for line in [
            "ringbroker_queue_messages{queue=\"jobs\"} 7",
            "ringbroker_queue_unacked{queue=\"jobs\"} 2",
            "ringbroker_queue_consumers{queue=\"jobs\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
    }

    #[test]
    fn network_counters_render_by_shard() {
        let text = render(&known_snapshot());
        assert_eq!(
            family_block(&text, "ringbroker_net_connections_open"),
            vec![
                "# HELP ringbroker_net_connections_open Connections open on the shard.",
                "# TYPE ringbroker_net_connections_open gauge",
                "ringbroker_net_connections_open{shard=\"0\"} 3",
            ]
        );
        assert!(text.contains("\nringbroker_net_bytes_in_total{shard=\"0\"} 4096\n"));
    }

    #[test]
    fn pubsub_counters_are_labelled_by_shard_index() {
        let text = render(&known_snapshot());
        assert_eq!(
            family_block(&text, "ringbroker_pubsub_dropped_slow_total"),
            [
                "# HELP ringbroker_pubsub_dropped_slow_total Deliveries dropped by full subscription buffers on the shard.",
                "# TYPE ringbroker_pubsub_dropped_slow_total counter",
                "ringbroker_pubsub_dropped_slow_total{shard=\"0\"} 5",
                "ringbroker_pubsub_dropped_slow_total{shard=\"1\"} 205",
            ]
        );
    }

    #[test]
    fn stream_partitions_and_consumer_lag_render_exactly() {
        let text = render(&known_snapshot());
        assert_eq!(
            family_block(&text, "ringbroker_stream_partition_records")[1..],
            [
                "# TYPE ringbroker_stream_partition_records gauge",
                "ringbroker_stream_partition_records{stream=\"orders\",partition=\"0\",shard=\"1\"} 10",
                "ringbroker_stream_partition_records{stream=\"orders\",partition=\"1\",shard=\"0\"} 5",
            ]
        );
        assert_eq!(
            family_block(&text, "ringbroker_stream_partition_bytes")[2..],
            [
                "ringbroker_stream_partition_bytes{stream=\"orders\",partition=\"0\",shard=\"1\"} 4096",
                "ringbroker_stream_partition_bytes{stream=\"orders\",partition=\"1\",shard=\"0\"} 2048",
            ]
        );
        assert_eq!(
            family_block(&text, "ringbroker_consumer_partition_lag")[1..],
            [
                "# TYPE ringbroker_consumer_partition_lag gauge",
                "ringbroker_consumer_partition_lag{stream=\"orders\",consumer=\"billing\",partition=\"0\"} 6",
                "ringbroker_consumer_partition_lag{stream=\"orders\",consumer=\"billing\",partition=\"1\"} 0",
            ]
        );
        assert_eq!(
            family_block(&text, "ringbroker_consumer_partition_pending")[2..],
            [
                "ringbroker_consumer_partition_pending{stream=\"orders\",consumer=\"billing\",partition=\"0\"} 2",
                "ringbroker_consumer_partition_pending{stream=\"orders\",consumer=\"billing\",partition=\"1\"} 0",
            ]
        );
    }

    #[test]
    fn every_family_has_help_and_type_even_without_samples() {
        let text = render(&Snapshot::default());
        let families = 1
            + SHARD_COUNTERS.len()
            + SHARD_GAUGES.len()
            + 1
            + PUBSUB_COUNTERS.len()
            + NET_FAMILIES.len()
            + 4
            + 3
            + 3;
        assert_eq!(
            text.lines().filter(|l| l.starts_with("# HELP ")).count(),
            families
        );
        assert_eq!(
            text.lines().filter(|l| l.starts_with("# TYPE ")).count(),
            families
        );
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(samples, ["ringbroker_shards 0"]);
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(
            labels(&[("stream", "a\\b\"c\nd")]),
            "{stream=\"a\\\\b\\\"c\\nd\"}"
        );
    }
}
