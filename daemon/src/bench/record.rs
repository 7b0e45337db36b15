//! Latency and throughput as a run goes: each measuring thread's `Recorder`, the
//! per-interval figures they hand to the collector, and the process's CPU time.
//!
//! Owns: the HDR histograms (3 significant digits for the totals, 2 per interval), the
//! interval length (at least `INTERVAL_MIN`, at most `INTERVALS_MAX` intervals per run)
//! and `getrusage`. Never: decides whether a run passed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The shortest timeline interval.
pub const INTERVAL_MIN: Duration = Duration::from_millis(100);
/// Most timeline intervals of a run (longer runs get longer intervals).
pub const INTERVALS_MAX: u64 = 300;
/// The largest latency recorded; longer ones are clamped to it.
const LATENCY_MAX_NS: u64 = 3_600_000_000_000;
/// Receipts a recorder counts before it publishes them to the progress counter.
const PROGRESS_EVERY: u64 = 1024;

/// A latency histogram with `digits` significant digits, 1 ns to an hour.
pub fn histogram(digits: u8) -> Histogram<u64> {
    match Histogram::new_with_bounds(1, LATENCY_MAX_NS, digits) {
        Ok(h) => h,
        Err(_) => unreachable!("1 ns to 1 h with 2 or 3 digits is a valid histogram"),
    }
}

/// One recorder's figures for one interval.
pub struct Interval {
    /// Interval index from the run's origin.
    pub index: u64,
    /// Completions in it.
    pub count: u64,
    /// Their latencies.
    pub latency: Histogram<u64>,
}

/// The interval length for a run of `duration`.
pub fn interval_for(duration: Duration) -> Duration {
    let even = duration.div_f64(INTERVALS_MAX as f64);
    even.max(INTERVAL_MIN)
}

/// Records one thread's completions: latency, count, bytes, per interval.
pub struct Recorder {
    origin: Instant,
    interval_ns: u64,
    total: Histogram<u64>,
    current: Interval,
    count: u64,
    bytes: u64,
    unpublished: u64,
    last_ns: u64,
    progress: Arc<AtomicU64>,
    intervals: mpsc::Sender<Interval>,
}

impl Recorder {
    /// A recorder sending its intervals to `intervals` and counting into `progress`.
    pub fn new(
        origin: Instant,
        interval: Duration,
        progress: Arc<AtomicU64>,
        intervals: mpsc::Sender<Interval>,
    ) -> Self {
        Self {
            origin,
            interval_ns: interval.as_nanos().max(1) as u64,
            total: histogram(3),
            current: Interval {
                index: 0,
                count: 0,
                latency: histogram(2),
            },
            count: 0,
            bytes: 0,
            unpublished: 0,
            last_ns: 0,
            progress,
            intervals,
        }
    }

    /// Nanoseconds since the run's origin.
    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// One completion of `bytes` at `now_ns`, with its latency if it has one.
    pub fn record(&mut self, now_ns: u64, latency_ns: Option<u64>, bytes: usize) {
        let index = now_ns / self.interval_ns;
        if index != self.current.index {
            self.flush(index);
        }
        if let Some(ns) = latency_ns {
            let ns = ns.clamp(1, LATENCY_MAX_NS);
            self.total.saturating_record(ns);
            self.current.latency.saturating_record(ns);
        }
        self.current.count += 1;
        self.count += 1;
        self.bytes += bytes as u64;
        self.last_ns = self.last_ns.max(now_ns);
        self.unpublished += 1;
        if self.unpublished >= PROGRESS_EVERY {
            self.progress.fetch_add(self.unpublished, Ordering::Relaxed);
            self.unpublished = 0;
        }
    }

    /// Adds the completions not yet counted to the progress counter (call when idle,
    /// so the watch loop sees the last ones).
    pub fn publish_progress(&mut self) {
        if self.unpublished > 0 {
            self.progress.fetch_add(self.unpublished, Ordering::Relaxed);
            self.unpublished = 0;
        }
    }

    fn flush(&mut self, next: u64) {
        let fresh = Interval {
            index: next,
            count: 0,
            latency: histogram(2),
        };
        let done = std::mem::replace(&mut self.current, fresh);
        if done.count > 0 {
            // The collector outlives every recorder; if it is gone the timeline is too.
            let _ = self.intervals.send(done);
        }
    }

    /// Hands over the last interval; returns the totals.
    pub fn finish(mut self) -> Recorded {
        self.flush(u64::MAX);
        self.progress.fetch_add(self.unpublished, Ordering::Relaxed);
        Recorded {
            latency: self.total,
            count: self.count,
            bytes: self.bytes,
            last_ns: self.last_ns,
        }
    }
}

/// A recorder's totals.
pub struct Recorded {
    /// Every latency it recorded.
    pub latency: Histogram<u64>,
    /// Completions.
    pub count: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// When the last completion was recorded (ns since the origin).
    pub last_ns: u64,
}

impl Recorded {
    /// Nothing recorded.
    pub fn empty() -> Self {
        Self {
            latency: histogram(3),
            count: 0,
            bytes: 0,
            last_ns: 0,
        }
    }

    /// Adds `other`'s totals.
    pub fn add(&mut self, other: &Recorded) {
        // Same bounds and precision: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.count += other.count;
        self.bytes += other.bytes;
        self.last_ns = self.last_ns.max(other.last_ns);
    }
}

/// One point of the timeline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Point {
    /// End of the interval, seconds since the run's origin.
    pub t_s: f64,
    /// Completions per second in it.
    pub msgs_per_s: f64,
    /// Median latency in it (µs), if it had latencies.
    pub p50_us: Option<f64>,
    /// 99th percentile (µs).
    pub p99_us: Option<f64>,
    /// Largest (µs).
    pub max_us: Option<f64>,
}

/// Merges every recorder's intervals into the timeline, in interval order.
pub fn timeline(intervals: &mpsc::Receiver<Interval>, interval: Duration) -> Vec<Point> {
    let mut merged: std::collections::BTreeMap<u64, Interval> = Default::default();
    for part in intervals.try_iter() {
        match merged.get_mut(&part.index) {
            Some(into) => {
                into.count += part.count;
                let _ = into.latency.add(&part.latency);
            }
            None => {
                merged.insert(part.index, part);
            }
        }
    }
    let seconds = interval.as_secs_f64();
    let us =
        |h: &Histogram<u64>, q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1e3);
    merged
        .values()
        .map(|i| Point {
            t_s: (i.index + 1) as f64 * seconds,
            msgs_per_s: i.count as f64 / seconds,
            p50_us: us(&i.latency, 0.5),
            p99_us: us(&i.latency, 0.99),
            max_us: (!i.latency.is_empty()).then(|| i.latency.max() as f64 / 1e3),
        })
        .collect()
}

/// User and system CPU time of the whole process so far.
pub fn cpu_time() -> (Duration, Duration) {
    // SAFETY: `usage` is a plain C struct; zeroed is a valid value for it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let of = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    (of(usage.ru_utime), of(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_merge_into_one_point_each() {
        let (tx, rx) = mpsc::channel();
        let progress = Arc::new(AtomicU64::new(0));
        let origin = Instant::now();
        let interval = Duration::from_millis(100);
        let mut a = Recorder::new(origin, interval, progress.clone(), tx.clone());
        let mut b = Recorder::new(origin, interval, progress.clone(), tx);
        a.record(10, Some(1_000), 8);
        b.record(20, Some(3_000), 8);
        a.record(150_000_000, Some(2_000), 8);
        let (ra, rb) = (a.finish(), b.finish());
        assert_eq!(ra.count + rb.count, 3);
        assert_eq!(progress.load(Ordering::Relaxed), 3);
        let points = timeline(&rx, interval);
        assert_eq!(points.len(), 2);
        assert!((points[0].msgs_per_s - 20.0).abs() < 1e-9);
        assert_eq!(points[1].max_us.map(|m| m.round()), Some(2.0));
    }

    #[test]
    fn cpu_time_is_counted() {
        let (user, system) = cpu_time();
        assert!(user + system > Duration::ZERO);
    }
}
