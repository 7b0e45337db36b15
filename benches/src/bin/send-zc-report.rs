//! Measures where `SEND_ZC` starts to pay: the server's sends to a subscriber with
//! zero-copy sends off (`send_zc_min_bytes = usize::MAX`) and on for every send (0),
//! per payload size, over loopback TCP.
//!
//! ```sh
//! cargo run --release -p ringbroker-benches --bin send-zc-report -- [--seconds 1] [--quick]
//! ```
//!
//! One publisher connection publishes batches of one payload size (each batch about
//! 256 KiB, followed by a PING round trip so at most one batch is in flight); one
//! subscriber connection receives them. The figure is the subscriber's received MB/s,
//! the median of `--repeat` runs (default 3) per cell; the ratio is zero-copy / copy.
//! On loopback the kernel still copies zero-copy sends into the receiver (the pages
//! cannot be lent to another socket), so this shows the cost of the notification and
//! page pinning against the copy it saves on the sending side.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringbroker::broker::{Broker, BrokerConfig};
use ringbroker::client::{Client, ClientConfig};
use ringbroker::net::{Server, ServerConfig};
use ringbroker::pubsub::{Message, Subject};
use ringbroker_benches::report;

const SIZES: [usize; 6] = [1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20];
const BATCH_BYTES: usize = 256 << 10;

fn main() {
    let mut seconds = 1.0f64;
    let mut repeat = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--seconds" => seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(1.0),
            "--repeat" => repeat = args.next().and_then(|v| v.parse().ok()).unwrap_or(3),
            "--quick" => {
                seconds = 0.1;
                repeat = 1;
            }
            other => {
                eprintln!("send-zc-report: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let started = Instant::now();
    let root = match report::run_dir(None, "send-zc-report") {
        Ok(root) => root,
        Err(error) => {
            eprintln!("send-zc-report: {error}");
            std::process::exit(1);
        }
    };
    report::print_machine(&root);
    println!("\n## SEND_ZC threshold: subscriber MB/s by payload size (loopback)\n");
    println!("| payload | copy MB/s | zero-copy MB/s | zero-copy / copy |");
    println!("|---|---|---|---|");
    let mut failures = Vec::new();
    for size in SIZES {
        let mut cells = Vec::new();
        for zc_min in [usize::MAX, 0] {
            let mut runs = Vec::new();
            for run in 0..repeat {
                match measure(
                    &root.join(format!("{size}-{zc_min}-{run}")),
                    size,
                    zc_min,
                    seconds,
                ) {
                    Ok(mbps) => runs.push(mbps),
                    Err(error) => failures.push(format!("{size} B, zc_min {zc_min}: {error}")),
                }
            }
            runs.sort_by(f64::total_cmp);
            cells.push(runs.get(runs.len() / 2).copied().unwrap_or(0.0));
        }
        let ratio = if cells[0] > 0.0 {
            cells[1] / cells[0]
        } else {
            0.0
        };
        println!(
            "| {} KiB | {:.0} | {:.0} | {ratio:.2} |",
            size >> 10,
            cells[0],
            cells[1]
        );
    }
    report::finish("send-zc-report", &root, started, &failures);
}

/// One run: the subscriber's received MB/s.
fn measure(dir: &std::path::Path, size: usize, zc_min: usize, seconds: f64) -> Result<f64, String> {
    let mut config = BrokerConfig::new(dir);
    config.runtime.shards = Some(1);
    let broker = Broker::open(config).map_err(|e| e.to_string())?;
    let server = Server::start(
        &broker,
        ServerConfig {
            listen: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
            send_zc_min_bytes: zc_min,
            outbound_bytes_max: 64 << 20,
            ..ServerConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let url = format!("ringbroker://{}", server.local_addr());
    let connect = || Client::connect(ClientConfig::new(url.clone())).map_err(|e| e.to_string());
    let (publisher, subscriber) = (connect()?, connect()?);
    let sub = subscriber
        .subscribe("zc.bench", None)
        .map_err(|e| e.to_string())?;
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (received, done) = (received.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                if let Ok(m) = sub.next_timeout(Duration::from_millis(20)) {
                    received.fetch_add(m.payload.len() as u64, Ordering::Relaxed);
                }
            }
        })
    };
    let subject = Subject::new("zc.bench").map_err(|e| e.to_string())?;
    let payload = Bytes::from(vec![0xA5u8; size]);
    let batch: Vec<Message> = (0..(BATCH_BYTES / size).max(1))
        .map(|_| Message::new(subject.clone(), payload.clone()))
        .collect();
    let length = Duration::from_secs_f64(seconds);
    let start_bytes = received.load(Ordering::Relaxed);
    let t = Instant::now();
    let mut batches = 0u64;
    while t.elapsed() < length && batches < 10_000_000 {
        publisher
            .publish_batch_nowait(&batch)
            .map_err(|e| e.to_string())?;
        publisher.ping().map_err(|e| e.to_string())?;
        batches += 1;
    }
    let elapsed = t.elapsed().as_secs_f64();
    let bytes = received.load(Ordering::Relaxed) - start_bytes;
    done.store(true, Ordering::Release);
    let _ = reader.join();
    drop((publisher, subscriber));
    server.stop(Duration::from_secs(5));
    broker.shutdown().map_err(|e| e.to_string())?;
    if bytes == 0 {
        return Err("nothing received".into());
    }
    Ok(bytes as f64 / elapsed / 1e6)
}
