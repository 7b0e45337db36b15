//! SIGTERM and SIGINT: blocked in every thread and taken, one at a time, by a thread
//! that waits for them with `sigwait`.
//!
//! Owns: the signal mask for SIGTERM and SIGINT (set on the main thread before any other
//! thread starts, so every thread, shards included, inherits it) and the thread that
//! waits for them. The first signal is handed to the main thread as a shutdown request;
//! a second one, while shutdown runs, ends the process at once with status 128 + the
//! signal number. Never: installs a signal handler, runs shutdown work itself, or
//! touches any other signal.
//!
//! Why `sigwait` on a blocked mask and not a handler (`signal-hook`): with the signals
//! blocked everywhere, the kernel never interrupts a shard's `io_uring_enter` or a
//! blocking call on any other thread (no spurious `EINTR` wake-ups on the data path),
//! nothing has to be async-signal-safe because no code runs in signal context, and the
//! daemon needs no extra dependency. The price is that the mask must be set before the
//! first thread is spawned, which `main` does first thing.

use std::io;
use std::mem::MaybeUninit;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// The signals that ask the daemon to stop.
const SHUTDOWN_SIGNALS: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

/// A shutdown signal that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(pub libc::c_int);

impl Signal {
    /// Its conventional name.
    pub fn name(self) -> &'static str {
        match self.0 {
            libc::SIGTERM => "SIGTERM",
            libc::SIGINT => "SIGINT",
            _ => "signal",
        }
    }

    /// The exit status when this signal arrives a second time and the daemon stops at
    /// once: 128 + the signal number, as a shell reports a process a signal killed.
    pub fn immediate_exit_code(self) -> i32 {
        128 + self.0
    }
}

/// SIGTERM and SIGINT, blocked on the calling thread (and so on every thread it
/// spawns from now on).
#[derive(Clone, Copy)]
pub struct BlockedSignals {
    set: libc::sigset_t,
}

impl BlockedSignals {
    /// Blocks SIGTERM and SIGINT on the calling thread. Call it before spawning any
    /// thread: threads inherit the mask they are spawned with.
    pub fn block() -> io::Result<Self> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: `sigemptyset` initialises the set `set` points to; we own the storage.
        if unsafe { libc::sigemptyset(set.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        for signal in SHUTDOWN_SIGNALS {
            // SAFETY: the set was initialised by `sigemptyset` above.
            if unsafe { libc::sigaddset(set.as_mut_ptr(), signal) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: `sigemptyset` succeeded, so the set is initialised.
        let set = unsafe { set.assume_init() };
        // SAFETY: `set` is an initialised signal set; a null old-set pointer is allowed.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(Self { set })
    }

    /// Starts the thread that waits for the signals: the first goes to `first`, a
    /// second ends the process with `Signal::immediate_exit_code`.
    pub fn spawn_waiter(self, first: mpsc::Sender<Signal>) -> io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("ringbrokerd-signals".to_owned())
            .spawn(move || self.wait_loop(first))
    }

    fn wait_loop(self, first: mpsc::Sender<Signal>) {
        let mut received = 0_u32;
        loop {
            let signal = match self.wait() {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::error!(%error, "sigwait failed; signals are no longer handled");
                    return;
                }
            };
            received += 1;
            if received == 1 {
                tracing::info!(signal = signal.name(), "shutting down gracefully");
                // The main thread may already be gone (it returned on an error): then
                // nobody waits for shutdown and there is nothing to tell.
                let _ = first.send(signal);
                continue;
            }
            let code = signal.immediate_exit_code();
            tracing::warn!(signal = signal.name(), code, "second signal: exiting now");
            eprintln!("ringbrokerd: second {}: exiting now", signal.name());
            std::process::exit(code);
        }
    }

    /// Waits for one of the blocked signals.
    fn wait(&self) -> io::Result<Signal> {
        let mut signal: libc::c_int = 0;
        // SAFETY: `self.set` is an initialised signal set and `signal` a valid out-slot
        // for the duration of the call.
        let rc = unsafe { libc::sigwait(&self.set, &mut signal) };
        match rc {
            0 => Ok(Signal(signal)),
            rc => Err(io::Error::from_raw_os_error(rc)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_signal_exit_codes_follow_the_shell_convention() {
        assert_eq!(Signal(libc::SIGINT).immediate_exit_code(), 130);
        assert_eq!(Signal(libc::SIGTERM).immediate_exit_code(), 143);
        assert_eq!(Signal(libc::SIGTERM).name(), "SIGTERM");
    }
}
