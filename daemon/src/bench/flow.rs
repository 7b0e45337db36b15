//! A run's shared state: the bounds producers claim messages against, the pace they
//! keep, the counters the progress line reads, and the watch loop that decides when the
//! run is over (publishing done and every expected completion in, or the drain timed
//! out, or a thread failed).
//!
//! Owns: when producers stop (the duration and the count bound), when consumers stop,
//! and the first fatal failure. Never: checks what was received (`verify` does).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::options::Plan;
use super::record::{interval_for, Interval, Recorder};

/// How often the watch loop looks at the counters (and redraws the progress line).
const WATCH_PERIOD: Duration = Duration::from_millis(50);
/// How often the progress line is redrawn.
const PROGRESS_PERIOD: Duration = Duration::from_millis(250);
/// A drain never lasts longer than this many `--drain-timeout`s, progress or not.
const DRAIN_SPANS_MAX: u32 = 10;
/// The longest single sleep of a paced producer (so it notices a stop).
const PACE_SLEEP_MAX: Duration = Duration::from_millis(50);

/// What every thread of a run shares.
pub struct Flow {
    /// Time zero of the run: payload stamps and the timeline count from here.
    pub origin: Instant,
    publish_until: Instant,
    count_max: u64,
    claimed: AtomicU64,
    /// Messages the broker accepted (published, confirmed or acknowledged).
    pub sent: AtomicU64,
    /// Completions recorded so far (published by recorders in small steps).
    pub completed: Arc<AtomicU64>,
    producers_running: AtomicUsize,
    stop: AtomicBool,
    failure: Mutex<Option<String>>,
    interval: Duration,
    intervals: Mutex<mpsc::Sender<Interval>>,
    drain_timeout: Duration,
    /// Completions expected per message sent (subscribers or queues each message
    /// reaches).
    per_sent: u64,
    label: &'static str,
}

impl Flow {
    /// A run of `plan` with `producers` producer threads, expecting `per_sent`
    /// completions per message sent; the receiver gets every recorder's intervals.
    pub fn new(plan: &Plan, producers: usize, per_sent: u64) -> (Self, mpsc::Receiver<Interval>) {
        let (tx, rx) = mpsc::channel();
        let origin = Instant::now();
        let flow = Self {
            origin,
            publish_until: origin + plan.duration,
            count_max: plan.count_max,
            claimed: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            completed: Arc::new(AtomicU64::new(0)),
            producers_running: AtomicUsize::new(producers),
            stop: AtomicBool::new(false),
            failure: Mutex::new(None),
            interval: interval_for(plan.duration),
            intervals: Mutex::new(tx),
            drain_timeout: plan.drain_timeout,
            per_sent,
            label: plan.scenario.name(),
        };
        (flow, rx)
    }

    /// The timeline's interval length.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A recorder for one measuring thread.
    pub fn recorder(&self) -> Recorder {
        let tx = self
            .intervals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Recorder::new(self.origin, self.interval, self.completed.clone(), tx)
    }

    /// Takes up to `want` messages to send; 0 once the run's count, duration or a stop
    /// says publishing is over.
    pub fn claim(&self, want: u64) -> u64 {
        if self.stopped() || Instant::now() >= self.publish_until {
            return 0;
        }
        let mut claimed = self.claimed.load(Ordering::Relaxed);
        loop {
            let n = want.min(self.count_max.saturating_sub(claimed));
            if n == 0 {
                return 0;
            }
            match self.claimed.compare_exchange_weak(
                claimed,
                claimed + n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return n,
                Err(now) => claimed = now,
            }
        }
    }

    /// A producer thread is done publishing (and, for confirmed publishes, has every
    /// confirm).
    pub fn producer_done(&self) {
        self.producers_running.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether consumers should stop.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Stops every thread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Records a failure (the first one is kept) and stops the run.
    pub fn fail(&self, why: String) {
        let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        failure.get_or_insert(why);
        drop(failure);
        self.stop();
    }

    /// The first failure, if any.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Watches the run from the calling thread until it is over, then stops it: every
    /// producer done and the expected completions in, or no completion for a drain
    /// timeout after publishing ended (the rest are lost), or a failure.
    pub fn watch(&self) {
        let tty = std::io::stderr().is_terminal();
        let mut drawn = Instant::now();
        let mut drain: Option<(Instant, u64, Instant)> = None;
        while !self.stopped() {
            std::thread::sleep(WATCH_PERIOD);
            if tty && drawn.elapsed() >= PROGRESS_PERIOD {
                self.draw_progress();
                drawn = Instant::now();
            }
            if self.producers_running.load(Ordering::Acquire) > 0 {
                continue;
            }
            let completed = self.completed.load(Ordering::Relaxed);
            let expected = self.sent.load(Ordering::Relaxed) * self.per_sent;
            if completed >= expected {
                break;
            }
            let now = Instant::now();
            let (started, seen, moved) = drain.get_or_insert((now, completed, now));
            if completed != *seen {
                (*seen, *moved) = (completed, now);
            }
            let quiet = now.duration_since(*moved) >= self.drain_timeout;
            let too_long = now.duration_since(*started) >= self.drain_timeout * DRAIN_SPANS_MAX;
            if quiet || too_long {
                break;
            }
        }
        self.stop();
        if tty {
            eprint!("\r\x1b[2K");
        }
    }

    fn draw_progress(&self) {
        let elapsed = self.origin.elapsed().as_secs_f64();
        let completed = self.completed.load(Ordering::Relaxed);
        let claimed = self.claimed.load(Ordering::Relaxed);
        let rate = completed as f64 / elapsed.max(1e-9);
        let by_time = self
            .publish_until
            .saturating_duration_since(Instant::now())
            .as_secs_f64();
        let claim_rate = claimed as f64 / elapsed.max(1e-9);
        let by_count = (self.count_max.saturating_sub(claimed)) as f64 / claim_rate.max(1e-9);
        let eta = match self.producers_running.load(Ordering::Relaxed) {
            0 => "draining".to_owned(),
            _ => format!("ETA {:.1} s", by_time.min(by_count)),
        };
        let mut err = std::io::stderr().lock();
        // A progress line that cannot be drawn is not worth failing the run for.
        let _ = write!(
            err,
            "\r\x1b[2K[{}] {:.0} msgs/s · {completed} done · {elapsed:.1} s · {eta}",
            self.label, rate
        );
        let _ = err.flush();
    }
}

/// Keeps one producer at its share of `--rate`.
pub struct Pacer {
    per_s: Option<f64>,
    start: Instant,
    sent: u64,
}

impl Pacer {
    /// A pacer for `rate` messages/s shared by `producers`.
    pub fn new(rate: Option<f64>, producers: usize) -> Self {
        Self {
            per_s: rate.map(|r| r / producers as f64),
            start: Instant::now(),
            sent: 0,
        }
    }

    /// Waits until `n` more messages are due (returns at once without a rate); false
    /// if the run stopped meanwhile.
    pub fn pace(&mut self, n: u64, flow: &Flow) -> bool {
        let Some(per_s) = self.per_s else {
            return true;
        };
        let due = self.start + Duration::from_secs_f64(self.sent as f64 / per_s);
        self.sent += n;
        loop {
            if flow.stopped() {
                return false;
            }
            let wait = due.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return true;
            }
            std::thread::sleep(wait.min(PACE_SLEEP_MAX));
        }
    }
}
