//! `ringbrokerd bench` as a process: every scenario runs briefly on an embedded broker
//! and its verification passes; pubsub and work-queue also run against a daemon this
//! test starts on 127.0.0.1:0 and stops by pid; a subscriber that falls behind (its
//! pending buffer overflows) makes the run fail with exit status 1; `--json` parses
//! and holds exactly the fields `--help` documents; a bad flag exits with 2.
//!
//! Runs are tiny (a fraction of a second, a few thousand messages, one shard): the
//! machines are shared. Every child is killed by pid if a test fails before it exits.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a daemon may take to start or stop.
const STEP_DEADLINE: Duration = Duration::from_secs(30);

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringbrokerd"))
        .arg("bench")
        .args(args)
        .env_remove("RINGBROKER_AUTH_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run ringbrokerd bench")
}

/// Runs `scenario` with `extra` flags and `--json`; returns the parsed report after
/// checking the exit status matches it.
fn bench_json(scenario: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![scenario, "--json", "-d", "0.5", "-n", "3000"];
    args.extend_from_slice(extra);
    let out = bench(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{scenario}: not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let passed = report["passed"].as_bool().expect("passed is a bool");
    assert_eq!(
        out.status.success(),
        passed,
        "{scenario}: exit status vs passed: {report}"
    );
    report
}

fn assert_verified(report: &serde_json::Value) {
    let scenario = &report["scenario"];
    assert_eq!(report["passed"], true, "{scenario} failed: {report}");
    let expected = report["expected"].as_u64().expect("expected");
    assert!(expected > 0, "{scenario} expected nothing: {report}");
    assert_eq!(report["received"].as_u64(), Some(expected), "{report}");
    for zero in ["lost", "duplicates", "out_of_order", "misrouted"] {
        assert_eq!(report[zero], 0, "{scenario}: {zero}: {report}");
    }
}

#[test]
fn every_scenario_runs_embedded_and_verifies() {
    let scenarios = [
        ("pubsub", &["-c", "2"][..]),
        ("request-reply", &[][..]),
        ("work-queue", &["-c", "2", "--prefetch", "10"][..]),
        ("fanout-exchange", &[][..]),
        ("topic-routing", &["-p", "2"][..]),
        ("stream-publish", &["--durability", "batch"][..]),
        ("stream-replay", &["-c", "2", "--partitions", "2"][..]),
        ("ordered-keys", &["-p", "2", "-c", "2", "--keys", "8"][..]),
    ];
    for (scenario, extra) in scenarios {
        let mut args = vec!["--shards", "1"];
        args.extend_from_slice(extra);
        let report = bench_json(scenario, &args);
        assert_eq!(report["target"], "embedded");
        assert_verified(&report);
    }
}

#[test]
fn latency_and_throughput_are_reported_for_a_passing_run() {
    let report = bench_json("work-queue", &["--shards", "1"]);
    assert_verified(&report);
    assert_eq!(report["latency_kind"], "publish_to_delivery");
    let latency = &report["latency_us"];
    let p50 = latency["p50"].as_f64().expect("p50");
    let p99 = latency["p99"].as_f64().expect("p99");
    let max = latency["max"].as_f64().expect("max");
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{latency}");
    assert!(report["msgs_per_s"].as_f64().expect("msgs_per_s") > 0.0);
    assert!(!report["timeline"].as_array().expect("timeline").is_empty());
}

#[test]
fn a_subscriber_that_falls_behind_fails_the_run() {
    // 70,000 messages into a subscription that holds 65,536 and takes one per
    // millisecond: the buffer overflows and drops, and the run must say so.
    let out = bench(&[
        "pubsub",
        "--shards",
        "1",
        "-s",
        "16",
        "-n",
        "70000",
        "-d",
        "5",
        "--consumer-delay-us",
        "1000",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAILED"), "{stdout}");
    assert!(stdout.contains("at-most-once loss"), "{stdout}");
    assert!(
        stdout.contains("not reported: verification failed"),
        "{stdout}"
    );
}

#[test]
fn json_holds_exactly_the_fields_help_documents() {
    let help = bench(&["--help"]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    let section = help
        .split("--json prints one object on stdout with these fields:")
        .nth(1)
        .expect("the JSON section of --help");
    let documented: BTreeSet<String> = section
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    let report = bench_json("stream-publish", &["--shards", "1", "--durability", "none"]);
    let present: BTreeSet<String> = report
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    assert_eq!(present, documented);
}

#[test]
fn bad_flags_exit_with_usage_status() {
    assert_eq!(bench(&["pubsub", "--size", "8"]).status.code(), Some(2));
    assert_eq!(bench(&["no-such-scenario"]).status.code(), Some(2));
    let keys = bench(&["ordered-keys", "-p", "4", "--keys", "2"]);
    assert_eq!(keys.status.code(), Some(2));
}

#[test]
fn plot_writes_an_svg() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("run.svg");
    let path_arg = path.to_str().expect("utf-8 temp path");
    let report = bench_json("pubsub", &["--shards", "1", "--plot", path_arg]);
    assert_verified(&report);
    let svg = std::fs::read_to_string(&path).expect("the chart");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("throughput") && svg.contains("latency"));
}

/// A daemon on 127.0.0.1:0; killed by pid on drop unless stopped.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(data_dir: &Path) -> (Self, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringbrokerd"))
            .args(["--data-dir", data_dir.to_str().expect("utf-8 temp path")])
            .args(["--shards", "1", "--listen", "127.0.0.1:0", "--admin", "off"])
            .env_remove("RINGBROKER_AUTH_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ringbrokerd");
        let stdout = child.stdout.take().expect("piped stdout");
        let daemon = Self { child };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on: ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(STEP_DEADLINE)
            .expect("the daemon's listen line");
        (daemon, url)
    }

    /// SIGTERM by pid, then waits (bounded) for a clean exit.
    fn stop(mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: `kill` only sends a signal; `pid` is our child, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "daemon exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "daemon did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn pubsub_and_work_queue_run_against_a_remote_daemon() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (daemon, url) = Daemon::start(&dir.path().join("data"));
    // Paced: a remote subscriber at full speed may lose deliveries (at most once),
    // which is a failure here, and what this test checks is the remote path.
    let pubsub = bench_json("pubsub", &["--url", &url, "-c", "2", "--rate", "20000"]);
    assert_eq!(pubsub["target"], "remote");
    assert_verified(&pubsub);
    let work = bench_json("work-queue", &["--url", &url, "-p", "2", "-c", "2"]);
    assert_eq!(work["target"], "remote");
    assert_verified(&work);
    daemon.stop();
}
