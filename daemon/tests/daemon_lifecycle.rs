//! The `ringbrokerd` binary as a process: it announces its listen and admin addresses,
//! serves `/healthz` and `/metrics`, stops cleanly on SIGTERM (every publish it
//! acknowledged before the stop is there after a restart), closes connections that send
//! bad input with an error while another client publishes undisturbed, refuses a bad
//! config file, refuses a data directory another daemon holds, and serves the NATS
//! client protocol with `--nats`.
//!
//! Every wait has a deadline, and every child is killed (by pid) when its guard drops,
//! so a failing assertion never leaves a daemon running.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a daemon may take to start, answer, or stop.
const STEP_DEADLINE: Duration = Duration::from_secs(30);
/// The pause between two polls of a child's exit status.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A running `ringbrokerd`; killed by pid on drop unless it has exited.
struct Daemon {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Daemon {
    /// Starts the binary with `args`, stdout and stderr piped.
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringbrokerd"))
            .args(args)
            .env_remove("RINGBROKER_AUTH_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringbrokerd");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (lines, stdout_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            stdout: stdout_rx,
            stderr: Some(std::thread::spawn(move || read_all(stderr))),
        }
    }

    /// Starts a daemon on `data_dir` with one shard and an ephemeral admin port, and
    /// waits for it to say where its admin endpoint is.
    fn start(data_dir: &Path) -> (Self, SocketAddr) {
        let (daemon, _, admin) = Self::start_listening(data_dir);
        (daemon, admin)
    }

    /// As `start`, also on an ephemeral native-protocol port; returns both addresses.
    fn start_listening(data_dir: &Path) -> (Self, SocketAddr, SocketAddr) {
        let data_dir = data_dir.to_str().expect("utf-8 temp path");
        let mut daemon = Self::spawn(&[
            "--data-dir",
            data_dir,
            "--shards",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ]);
        let listen = daemon
            .line_starting("listening on: ringbroker://")
            .trim_start_matches("listening on: ringbroker://")
            .parse()
            .expect("listen address");
        let line = daemon.line_starting("admin endpoint: http://");
        let addr = line
            .trim_start_matches("admin endpoint: http://")
            .parse()
            .expect("admin address");
        (daemon, listen, addr)
    }

    /// The first stdout line starting with `prefix`, within the deadline.
    fn line_starting(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => continue,
                Err(_) => panic!(
                    "no stdout line starting with {prefix:?}; stderr: {}",
                    self.stderr_after_kill()
                ),
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: `kill` only sends a signal; `pid` is our child, not yet reaped (we
        // hold its `Child` and have not waited for it), so the pid is not reused.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits for the child to exit within the deadline; returns its status and stderr.
    fn wait_exit(&mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status, self.take_stderr());
            }
            assert!(
                Instant::now() < deadline,
                "ringbrokerd did not exit within {STEP_DEADLINE:?}"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn take_stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|reader| reader.join().unwrap_or_default())
            .unwrap_or_default()
    }

    /// For a failure message: kills the child (so its stderr ends) and returns stderr.
    fn stderr_after_kill(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.take_stderr()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGKILL by pid; the child has not been reaped, so the pid is still ours.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_all(mut stderr: ChildStderr) -> String {
    let mut text = String::new();
    let _ = stderr.read_to_string(&mut text);
    text
}

/// Sends one request and reads the whole response (the server closes after it).
fn http(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, STEP_DEADLINE).expect("connect");
    stream
        .set_read_timeout(Some(STEP_DEADLINE))
        .expect("timeout");
    stream
        .set_write_timeout(Some(STEP_DEADLINE))
        .expect("timeout");
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

#[test]
fn admin_endpoint_serves_health_and_metrics_then_sigterm_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut daemon, admin) = Daemon::start(dir.path());

    let health = http(admin, "GET", "/healthz");
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
    assert!(health.contains("Connection: close\r\n"), "{health}");
    assert_eq!(body(&health), "ok\n");

    let metrics = http(admin, "GET", "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
    let text = body(&metrics);
    assert!(text.contains("# TYPE ringbroker_shard_tasks_run_total counter\n"));
    assert!(text.contains("# HELP ringbroker_pubsub_published_total "));
    assert!(text.contains("\nringbroker_shards 1\n"), "{text}");
    assert!(text.contains("\nringbroker_shard_tasks_run_total{shard=\"0\"} "));
    assert!(text.contains("\nringbroker_pubsub_published_total{shard=\"0\"} 0\n"));
    assert!(
        text.contains("\nringbroker_net_connections_open{shard=\"0\"} 0\n"),
        "{text}"
    );

    let streams = http(admin, "GET", "/v1/streams");
    assert!(streams.starts_with("HTTP/1.1 200 OK\r\n"), "{streams}");
    for listing in ["/v1/queues", "/v1/exchanges"] {
        let response = http(admin, "GET", listing);
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    }
    let post = http(admin, "POST", "/metrics");
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    let missing = http(admin, "GET", "/nowhere");
    assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");

    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
}

#[test]
fn config_file_with_an_unknown_field_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("ringbrokerd.toml");
    std::fs::write(&config, "shards = 1\nshardz = 2\n").expect("write config");
    let mut daemon = Daemon::spawn(&["--config", config.to_str().expect("utf-8 path")]);
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("unknown field `shardz`"),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("ringbrokerd.toml"), "stderr: {stderr}");
}

#[test]
fn second_daemon_on_one_data_dir_fails_with_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut first, _) = Daemon::start(dir.path());

    let data_dir = dir.path().to_str().expect("utf-8 temp path");
    let mut second = Daemon::spawn(&["--data-dir", data_dir, "--shards", "1", "--admin", "off"]);
    let (status, stderr) = second.wait_exit();
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("in use"), "stderr: {stderr}");

    first.signal(libc::SIGTERM);
    let (status, stderr) = first.wait_exit();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
}

/// Publishes batches of records to `orders` until the connection ends; returns every
/// (partition, offset) the server acknowledged as stored.
fn publish_until_cut_off(url: &str) -> Vec<(u32, u64)> {
    use ringbroker::client::{Client, ClientConfig};
    use ringbroker::stream::Publish;
    let client = Client::connect(ClientConfig::new(url)).expect("connect");
    let mut acked = Vec::new();
    for round in 0..100_000u32 {
        let batch: Vec<Publish> = (0..16u32)
            .map(|i| Publish::new("orders.eu", (round * 16 + i).to_le_bytes().to_vec()))
            .collect();
        match client.publish_records(&batch) {
            Ok(results) => acked.extend(
                results
                    .into_iter()
                    .filter_map(Result::ok)
                    .map(|ack| (ack.partition, ack.offset)),
            ),
            Err(_) => break,
        }
    }
    acked
}

#[test]
fn sigterm_under_load_keeps_every_acknowledged_publish() {
    use ringbroker::client::{Client, ClientConfig};
    use ringbroker::stream::StreamConfig;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut daemon, listen, _) = Daemon::start_listening(dir.path());
    let url = format!("ringbroker://{listen}");
    let admin = Client::connect(ClientConfig::new(&url)).expect("connect");
    admin
        .create_stream(&StreamConfig {
            partitions: 2,
            ..StreamConfig::new("orders", &["orders.>"])
        })
        .expect("create stream");
    drop(admin);
    let publisher = {
        let url = url.clone();
        std::thread::spawn(move || publish_until_cut_off(&url))
    };
    std::thread::sleep(Duration::from_millis(300));
    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    let acked = publisher.join().expect("publisher thread");
    assert!(!acked.is_empty(), "the load ran before the stop");

    let (mut again, listen, _) = Daemon::start_listening(dir.path());
    let client =
        Client::connect(ClientConfig::new(format!("ringbroker://{listen}"))).expect("reconnect");
    let info = client.stream_info("orders").expect("stream survived");
    for (partition, offset) in &acked {
        let p = &info.partitions[*partition as usize];
        assert!(
            *offset < p.next_offset,
            "acknowledged record {partition}/{offset} lost (next offset {})",
            p.next_offset
        );
    }
    drop(client);
    again.signal(libc::SIGTERM);
    let (status, stderr) = again.wait_exit();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
}

/// Reads from `stream` until the peer closes it; returns the error code of the last
/// `ERROR` frame seen.
fn error_before_close(stream: &mut TcpStream) -> Option<ringbroker::protocol::ErrorCode> {
    use ringbroker::protocol::session::ErrorBody;
    use ringbroker::protocol::{split_frame, Op, HEADER_BYTES};
    stream
        .set_read_timeout(Some(STEP_DEADLINE))
        .expect("read timeout");
    let mut buf = bytes::BytesMut::new();
    let mut code = None;
    loop {
        while let Ok(Some((header, total))) = split_frame(&buf, u32::MAX) {
            let frame = buf.split_to(total).freeze();
            if header.op == Op::Error {
                code = ErrorBody::decode(frame.slice(HEADER_BYTES..))
                    .ok()
                    .map(|e| e.code);
            }
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return code,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn hello_bytes() -> bytes::BytesMut {
    use ringbroker::protocol::session::Hello;
    use ringbroker::protocol::{encode_frame, Op, VERSION};
    let mut out = bytes::BytesMut::new();
    let hello = Hello {
        version_min: VERSION,
        version_max: VERSION,
        token: String::new(),
        client_name: "bad-input".into(),
    };
    encode_frame(&mut out, Op::Hello, 0, 0, |b| hello.encode(b));
    out
}

/// Publishes batches of acknowledged records to `orders` until `stop`; every publish
/// must succeed. Returns how many records were acknowledged.
fn publish_until_stopped(url: &str, stop: &std::sync::atomic::AtomicBool) -> u64 {
    use ringbroker::client::{Client, ClientConfig};
    use ringbroker::stream::Publish;
    let client = Client::connect(ClientConfig::new(url)).expect("connect");
    let mut acked = 0u64;
    for round in 0..1_000_000u32 {
        if stop.load(std::sync::atomic::Ordering::Acquire) {
            break;
        }
        let batch: Vec<Publish> = (0..8u32)
            .map(|i| Publish::new("orders.eu", (round * 8 + i).to_le_bytes().to_vec()))
            .collect();
        for ack in client
            .publish_records(&batch)
            .expect("publishing is unaffected")
        {
            ack.expect("stored");
            acked += 1;
        }
    }
    acked
}

#[test]
fn bad_input_against_a_live_daemon_costs_other_clients_nothing() {
    use ringbroker::client::{Client, ClientConfig};
    use ringbroker::protocol::ErrorCode;
    use ringbroker::stream::StreamConfig;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut daemon, listen, _) = Daemon::start_listening(dir.path());
    let url = format!("ringbroker://{listen}");
    let admin = Client::connect(ClientConfig::new(&url)).expect("connect");
    admin
        .create_stream(&StreamConfig::new("orders", &["orders.>"]))
        .expect("create stream");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || publish_until_stopped(&url, &stop))
    };
    // Random bytes after a HELLO: an unknown op.
    let mut raw = TcpStream::connect(listen).expect("connect");
    raw.write_all(&hello_bytes()).expect("hello");
    raw.write_all(&[0x0c, 0, 0, 0, 0xee, 0xee, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9])
        .expect("garbage");
    assert_eq!(error_before_close(&mut raw), Some(ErrorCode::UnknownOp));
    // A 4 GiB length prefix.
    let mut raw = TcpStream::connect(listen).expect("connect");
    raw.write_all(&hello_bytes()).expect("hello");
    raw.write_all(&u32::MAX.to_le_bytes()).expect("prefix");
    assert_eq!(error_before_close(&mut raw), Some(ErrorCode::FrameTooLarge));
    // No HELLO at all: a frame before the handshake.
    let mut raw = TcpStream::connect(listen).expect("connect");
    raw.write_all(&[0x0c, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
        .expect("ping before hello");
    assert_eq!(error_before_close(&mut raw), Some(ErrorCode::OutOfState));
    // Half a frame, then close; and a slowloris left trickling.
    let mut half = TcpStream::connect(listen).expect("connect");
    half.write_all(&hello_bytes()[..7]).expect("half");
    drop(half);
    let mut slow = TcpStream::connect(listen).expect("connect");
    slow.write_all(&hello_bytes()).expect("hello");
    slow.write_all(&[0x40]).expect("one byte of a frame");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Release);
    let acked = publisher.join().expect("publisher");
    assert!(acked > 0);
    let stored: u64 = admin
        .stream_info("orders")
        .expect("info")
        .partitions
        .iter()
        .map(|p| p.records)
        .sum();
    assert_eq!(
        stored, acked,
        "every acknowledged record is stored, no more"
    );
    drop((admin, slow));
    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
}

/// `--nats` serves the NATS client protocol next to the native one: the address is
/// announced, a client gets `INFO`, publishes to its own subscription, and SIGTERM
/// still stops the daemon cleanly.
#[test]
fn nats_flag_serves_the_nats_protocol_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_str().expect("utf-8 temp path");
    let mut daemon = Daemon::spawn(&[
        "--data-dir",
        data_dir,
        "--shards",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "off",
        "--nats",
        "127.0.0.1:0",
    ]);
    let addr: SocketAddr = daemon
        .line_starting("listening on: nats://")
        .trim_start_matches("listening on: nats://")
        .parse()
        .expect("nats address");
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(STEP_DEADLINE))
        .expect("timeout");
    stream
        .write_all(b"CONNECT {}\r\nSUB d 1\r\nPUB d 2\r\nhi\r\nPING\r\n")
        .expect("write");
    let mut seen = String::new();
    let deadline = Instant::now() + STEP_DEADLINE;
    while !seen.contains("PONG\r\n") && Instant::now() < deadline {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "closed early: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(seen.starts_with("INFO {"), "{seen:?}");
    assert!(seen.ends_with("MSG d 1 2\r\nhi\r\nPONG\r\n"), "{seen:?}");
    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert!(status.success(), "exit {status:?}: {stderr}");
}
