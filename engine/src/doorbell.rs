//! The park/wake protocol: how a consumer sleeps without losing a wake-up, and how
//! producers wake it without a syscall per message.
//!
//! Owns: one `armed` flag per sleeper and the notifier that interrupts its sleep (in
//! production an eventfd; in loom models a condition variable).
//!
//! Never: decides *what* to wait for. The sleeper re-checks its own sources between
//! `arm` and sleeping; this module only makes that check race-free.
//!
//! # The protocol and why no wake-up is lost
//!
//! ```text
//!   sleeper                               producer
//!   -------                               --------
//!   armed.store(true)      (S1)           publish item (ring tail / queue push)  (P1)
//!   fence(SeqCst)          (F1)           fence(SeqCst)                          (F2)
//!   every source empty?    (S2)           armed.load() && armed.swap(false)      (P2)
//!     yes: sleep until notified              true: notify()   (one syscall)
//!     no:  disarm, go work                   false: nothing   (no syscall)
//! ```
//!
//! This is the store-buffering (Dekker) pattern. F1 and F2 are SeqCst fences, so they
//! are totally ordered. If F1 comes first, P2 reads `armed == true` (S1 is before F1,
//! which is before F2, which is before P2) and the producer notifies. If F2 comes first,
//! S2 sees the item (P1 is before F2, before F1, before S2) and the sleeper does not
//! sleep. Either way the item is not stranded with the sleeper asleep.
//!
//! `swap(false)` makes exactly one producer pay the notify syscall per sleep, however
//! many publish at once; the plain `load` in front keeps the common case (sleeper
//! awake) a read of a shared cache line, no read-modify-write. A notify that arrives
//! after the sleeper already woke for another reason leaves the eventfd counter set; the
//! next sleep returns at once and re-checks: a spurious wake-up, never a lost one.

use crate::sync::{fence, AtomicBool, Ordering};

/// Something that interrupts a sleeper: an eventfd write in production.
pub trait Notify {
    /// Wake the sleeper (or make its next sleep return at once).
    fn notify(&self);
}

/// A sleeper's `armed` flag and the notifier that wakes it.
#[derive(Debug)]
pub struct Doorbell<N> {
    armed: AtomicBool,
    notifier: N,
}

impl<N: Notify> Doorbell<N> {
    /// A disarmed doorbell around `notifier`.
    pub fn new(notifier: N) -> Self {
        Self {
            armed: AtomicBool::new(false),
            notifier,
        }
    }

    /// The notifier, for the sleeper to wait on.
    pub fn notifier(&self) -> &N {
        &self.notifier
    }

    /// Sleeper: announce the intent to sleep (S1, F1). Re-check every source after this;
    /// sleep only if all are empty, else call [`Doorbell::disarm`].
    #[inline]
    pub fn arm(&self) {
        // S1. A swap rather than a store: both are correct under the C++ model, but loom
        // 0.7 loses track of a plain store that follows a producer's swap in the
        // modification order and then reports a lost wake-up that no C++ (or x86)
        // execution can produce; see docs/architecture.md, "Checking the protocol".
        // A sleeper arms only when it is about to sleep, so the RMW costs nothing.
        self.armed.swap(true, Ordering::Relaxed);
        // F1: SeqCst fence, partner of F2 in `ring`. Orders S1 before the re-check S2.
        fence(Ordering::SeqCst);
    }

    /// Sleeper: back to work, no wake-up needed (called after waking, or when the
    /// re-check found work).
    #[inline]
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::Relaxed);
    }

    /// Producer: call after publishing items (P1). Notifies only if the sleeper is armed,
    /// and only one caller per sleep does. Returns whether this call notified.
    #[inline]
    pub fn ring(&self) -> bool {
        // F2: SeqCst fence, partner of F1 in `arm`. Orders P1 before the load P2.
        fence(Ordering::SeqCst);
        if self.armed.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::Relaxed) {
            self.notifier.notify();
            return true;
        }
        false
    }
}

#[cfg(not(loom))]
pub use eventfd::EventFd;

#[cfg(not(loom))]
impl Doorbell<EventFd> {
    /// The sleeper's half of the protocol over an eventfd, for a consumer on a thread
    /// that is not a shard: arms, re-checks with `ready` (S2), and if nothing is there
    /// sleeps until rung or `deadline`, then clears the eventfd and disarms. Callers
    /// loop: take what is there, and `sleep` again while nothing is.
    pub fn sleep(
        &self,
        deadline: std::time::Instant,
        ready: impl FnOnce() -> bool,
    ) -> std::io::Result<()> {
        self.arm();
        if ready() {
            self.disarm();
            return Ok(());
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let slept = match left.is_zero() {
            true => Ok(()),
            false => match self.notifier().wait_readable(Some(left)) {
                Ok(true) => self.notifier().read_count().map(drop),
                Ok(false) => Ok(()),
                Err(error) => Err(error),
            },
        };
        self.disarm();
        slept
    }
}

#[cfg(not(loom))]
mod eventfd {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::time::Duration;

    /// A non-blocking Linux eventfd: the notifier shards arm an io_uring read on, and the
    /// file descriptor event loops (libuv, asyncio, Go's poller) watch for completions.
    #[derive(Debug)]
    pub struct EventFd {
        fd: OwnedFd,
    }

    impl EventFd {
        /// A new eventfd, counter zero, `EFD_NONBLOCK | EFD_CLOEXEC`.
        pub fn new() -> io::Result<Self> {
            // SAFETY: eventfd has no memory-safety preconditions; we check its result.
            let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            Ok(Self { fd })
        }

        /// Adds one to the counter, making the fd readable.
        pub fn write_one(&self) -> io::Result<()> {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live local u64 to an fd we own.
            let n = unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }

        /// Reads and clears the counter; `Ok(0)` when it was already zero.
        pub fn read_count(&self) -> io::Result<u64> {
            let mut value: u64 = 0;
            // SAFETY: reads 8 bytes into a live local u64 from an fd we own.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut value as *mut u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::WouldBlock {
                    return Ok(0);
                }
                return Err(err);
            }
            Ok(value)
        }

        /// Blocks until the fd is readable or `timeout` passes (`None`: no limit).
        /// Returns whether it became readable. Does not clear the counter.
        pub fn wait_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = match timeout {
                None => -1,
                Some(t) => {
                    i32::try_from(t.as_millis().max(u128::from(!t.is_zero()))).unwrap_or(i32::MAX)
                }
            };
            loop {
                // SAFETY: one valid pollfd on the stack, count 1.
                let n = unsafe { libc::poll(&mut pfd, 1, ms) };
                if n >= 0 {
                    return Ok(n > 0);
                }
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }

    impl AsRawFd for EventFd {
        fn as_raw_fd(&self) -> RawFd {
            self.fd.as_raw_fd()
        }
    }

    impl super::Notify for EventFd {
        fn notify(&self) {
            if let Err(err) = self.write_one() {
                // Only EBADF/EINVAL (a bug) or counter overflow after 2^64-2 unread
                // wake-ups could land here; neither loses the item, only the wake-up.
                tracing::error!(%err, "eventfd write failed");
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ring_notifies_only_an_armed_sleeper_and_only_once() {
        let bell = Doorbell::new(EventFd::new().unwrap());
        assert!(!bell.ring(), "disarmed: no syscall");
        bell.arm();
        assert!(bell.ring());
        assert!(
            !bell.ring(),
            "second producer of the same sleep: no syscall"
        );
        assert_eq!(bell.notifier().read_count().unwrap(), 1);
        assert!(!bell
            .notifier()
            .wait_readable(Some(Duration::from_millis(1)))
            .unwrap());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The park/wake protocol under loom: a consumer that sleeps while a producer
    //! publishes never sleeps forever (loom reports a deadlock if a wake-up is lost).

    use super::*;
    use crate::ring::channel;
    use loom::sync::{Arc, Condvar, Mutex};

    /// An eventfd stand-in: a counter guarded by a mutex, waited on with a condvar.
    #[derive(Default)]
    struct ModelEventFd {
        count: Mutex<u64>,
        ready: Condvar,
    }

    impl Notify for ModelEventFd {
        fn notify(&self) {
            *self.count.lock().unwrap() += 1;
            self.ready.notify_one();
        }
    }

    impl ModelEventFd {
        fn wait(&self) {
            let mut count = self.count.lock().unwrap();
            while *count == 0 {
                count = self.ready.wait(count).unwrap();
            }
            *count = 0;
        }
    }

    fn consume_with_parking(
        mut consumers: Vec<crate::ring::Consumer<u32>>,
        bell: &Doorbell<ModelEventFd>,
        expected: usize,
    ) {
        let mut got = 0;
        while got < expected {
            let mut popped = 0;
            for c in consumers.iter_mut() {
                popped += c.pop_batch(usize::MAX, |_| ());
            }
            got += popped;
            if popped > 0 || got == expected {
                continue;
            }
            bell.arm();
            if consumers.iter().any(|c| !c.is_empty_now()) {
                bell.disarm();
                continue;
            }
            bell.notifier().wait();
            bell.disarm();
        }
    }

    /// One producer, one parked consumer: every item is consumed, nobody sleeps forever.
    #[test]
    fn loom_no_lost_wakeup_one_producer() {
        loom::model(|| {
            let bell = Arc::new(Doorbell::new(ModelEventFd::default()));
            let (mut p, c) = channel::<u32>(2).unwrap();
            let b = bell.clone();
            let producer = loom::thread::spawn(move || {
                for i in 0..2 {
                    p.push(i).unwrap();
                    b.ring();
                }
            });
            consume_with_parking(vec![c], &bell, 2);
            producer.join().unwrap();
        });
    }

    /// Two producers on their own rings into one sleeper (two shards sending to a third):
    /// the swap lets only one of them notify, and still no wake-up is lost. Three threads
    /// and a condvar make the full state space take hours, so this model bounds
    /// preemptions at 3 (loom's recommendation; bugs needing more are rare).
    #[test]
    fn loom_no_lost_wakeup_two_producers() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let bell = Arc::new(Doorbell::new(ModelEventFd::default()));
            let (mut p1, c1) = channel::<u32>(1).unwrap();
            let (mut p2, c2) = channel::<u32>(1).unwrap();
            let b1 = bell.clone();
            let b2 = bell.clone();
            let t1 = loom::thread::spawn(move || {
                p1.push(1).unwrap();
                b1.ring();
            });
            let t2 = loom::thread::spawn(move || {
                p2.push(2).unwrap();
                b2.ring();
            });
            consume_with_parking(vec![c1, c2], &bell, 2);
            t1.join().unwrap();
            t2.join().unwrap();
        });
    }
}
