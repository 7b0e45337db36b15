//! The shard runtime end to end: pinning, cross-shard calls between every pair, I/O and
//! timers through each shard's io_uring, external submission with eventfd completions,
//! backpressure, panics, and shutdown with work in flight.

// In tests an unwrap that fails is a test failure with its message: exactly right.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringbroker::runtime::{
    CallError, Runtime, RuntimeConfig, SendError, ShardCtx, SubmitError, TaskError,
};

fn config(shards: usize) -> RuntimeConfig {
    RuntimeConfig {
        shards: Some(shards),
        ..RuntimeConfig::default()
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The CPUs the calling thread may run on, from `sched_getaffinity`.
fn affinity_of_current_thread() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; `set` is a live, correctly sized cpu_set_t.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(rc, 0, "sched_getaffinity failed");
    // SAFETY: CPU_ISSET reads the set we own.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

#[test]
fn shards_start_pinned_one_per_core() {
    let n = cpus();
    let rt = Runtime::start(RuntimeConfig::default()).unwrap();
    assert_eq!(
        rt.shard_count(),
        n,
        "default is one shard per available core"
    );
    let cores: Vec<usize> = core_ids();
    for shard in 0..n {
        let (id, affinity, name) = rt
            .handle()
            .call(shard, |ctx| {
                let name = std::thread::current().name().map(str::to_owned);
                (ctx.shard_id(), affinity_of_current_thread(), name)
            })
            .unwrap();
        assert_eq!(id, shard);
        assert_eq!(
            affinity,
            vec![cores[shard % cores.len()]],
            "shard {shard} not pinned to its core"
        );
        assert_eq!(
            name.as_deref(),
            Some(format!("ringbroker-shard-{shard}").as_str())
        );
    }
    rt.shutdown().unwrap();
}

fn core_ids() -> Vec<usize> {
    core_affinity::get_core_ids()
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

#[test]
fn more_shards_than_cores_share_cores_and_still_work() {
    let rt = Runtime::start(config(5)).unwrap();
    let sum: usize = (0..5)
        .map(|s| rt.handle().call(s, |ctx| ctx.shard_id()).unwrap())
        .sum();
    assert_eq!(sum, 10);
    rt.shutdown().unwrap();
}

#[test]
fn cross_shard_call_works_for_every_ordered_pair() {
    let n = 4;
    let rt = Runtime::start(config(n)).unwrap();
    for from in 0..n {
        for to in 0..n {
            let got = rt
                .handle()
                .call(from, move |ctx: &mut ShardCtx| {
                    let (tx, rx) = std::sync::mpsc::sync_channel(1);
                    ctx.call(
                        to,
                        move |remote: &mut ShardCtx| remote.shard_id() * 100,
                        move |origin: &mut ShardCtx, result| {
                            let _ = tx.send((origin.shard_id(), result));
                        },
                    )
                    .map_err(|e| e.to_string())
                    .unwrap();
                    rx
                })
                .unwrap();
            let (origin, result) = got.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(origin, from, "reply must run on the calling shard");
            assert_eq!(result, Ok(to * 100));
        }
    }
    rt.shutdown().unwrap();
}

#[test]
fn messages_between_two_shards_arrive_in_order() {
    let rt = Runtime::start(config(2)).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    rt.handle()
        .call(0, move |ctx: &mut ShardCtx| {
            for i in 0..50_000u32 {
                let s = s.clone();
                if ctx
                    .send(1, move |_: &mut ShardCtx| s.lock().unwrap().push(i))
                    .is_err()
                {
                    panic!("backlog full at {i}");
                }
            }
        })
        .unwrap();
    let report = rt.shutdown().unwrap();
    assert!(!report.forced);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 50_000, "every message sent before shutdown ran");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "FIFO per sender");
}

#[test]
fn full_ring_is_backpressure_not_a_drop() {
    let cfg = RuntimeConfig {
        ring_capacity: 4,
        outbound_backlog_max: 8,
        ..config(2)
    };
    let rt = Runtime::start(cfg).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    // Shard 1 is kept busy so it cannot drain its ring while shard 0 fills it; wait
    // until it is inside the blocking task before filling.
    let gate = Arc::new(std::sync::Barrier::new(2));
    let g = gate.clone();
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    rt.handle()
        .spawn(1, move |_| {
            entered_tx.send(()).unwrap();
            g.wait();
        })
        .unwrap();
    entered_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let (accepted, refused) = rt
        .handle()
        .call(0, move |ctx: &mut ShardCtx| {
            let (mut accepted, mut refused) = (0, 0);
            for _ in 0..100 {
                let r = r.clone();
                match ctx.send(1, move |_: &mut ShardCtx| {
                    r.fetch_add(1, Ordering::SeqCst);
                }) {
                    Ok(()) => accepted += 1,
                    Err(SendError::Full(task)) => {
                        refused += 1;
                        drop(task);
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            (accepted, refused)
        })
        .unwrap();
    gate.wait();
    assert_eq!(accepted, 4 + 8, "ring capacity plus backlog bound");
    assert_eq!(refused, 100 - 12);
    rt.shutdown().unwrap();
    assert_eq!(
        ran.load(Ordering::SeqCst),
        accepted,
        "every accepted task ran"
    );
}

#[test]
fn shutdown_with_work_in_flight_loses_nothing_accepted() {
    let rt = Runtime::start(config(3)).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let handle = rt.handle();
    let mut accepted = 0usize;
    // Each external task fans out a chain of cross-shard hops; shutdown starts while
    // they are in flight.
    for i in 0..3_000usize {
        let r = ran.clone();
        let task = move |ctx: &mut ShardCtx| hop(ctx, 5, r);
        match handle.spawn(i % 3, task) {
            Ok(()) => accepted += 1,
            Err(SubmitError::Full { .. }) => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
    let report = rt.shutdown().unwrap();
    assert!(!report.forced);
    assert_eq!(report.tasks_dropped, 0);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        accepted * 6,
        "every hop of every accepted chain ran"
    );
    assert_eq!(handle.spawn(0, |_| {}), Err(SubmitError::ShuttingDown));
}

fn hop(ctx: &mut ShardCtx, left: usize, ran: Arc<AtomicUsize>) {
    ran.fetch_add(1, Ordering::SeqCst);
    if left == 0 {
        return;
    }
    let next = (ctx.shard_id() + 1) % ctx.shard_count();
    let mut task = move |c: &mut ShardCtx| hop(c, left - 1, ran);
    loop {
        match ctx.send(next, task) {
            Ok(()) => return,
            Err(e) => task = e.into_task(),
        }
    }
}

#[test]
fn panicking_task_is_reported_and_does_not_hang_shutdown() {
    let rt = Runtime::start(config(2)).unwrap();
    let err = rt
        .handle()
        .call(1, |_| -> u32 { panic!("boom in a task") })
        .unwrap_err();
    match err {
        CallError::Task(TaskError::Panicked { shard, message }) => {
            assert_eq!(shard, 1);
            assert!(message.contains("boom in a task"));
        }
        other => panic!("unexpected {other:?}"),
    }
    rt.handle()
        .spawn(0, |_| panic!("fire-and-forget panic"))
        .unwrap();
    // The shards still work after both panics.
    assert_eq!(rt.handle().call(1, |ctx| ctx.shard_id()).unwrap(), 1);
    assert_eq!(rt.handle().call(0, |ctx| ctx.shard_id()).unwrap(), 0);
    let report = rt.shutdown().unwrap();
    assert_eq!(report.tasks_panicked, 2);
}

#[test]
fn panic_in_cross_shard_call_reaches_the_reply() {
    let rt = Runtime::start(config(2)).unwrap();
    let rx = rt
        .handle()
        .call(0, |ctx: &mut ShardCtx| {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let sent = ctx.call(
                1,
                |_: &mut ShardCtx| -> u8 { panic!("remote boom") },
                move |_, r| {
                    let _ = tx.send(r);
                },
            );
            assert!(sent.is_ok());
            rx
        })
        .unwrap();
    let result = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(matches!(result, Err(TaskError::Panicked { shard: 1, .. })));
    rt.shutdown().unwrap();
}

#[test]
fn submitter_completions_arrive_with_their_tickets_and_wake_the_eventfd() {
    let rt = Runtime::start(config(2)).unwrap();
    let mut sub = rt.handle().submitter::<usize>(64).unwrap();
    let mut tickets = Vec::new();
    for i in 0..64 {
        tickets.push((sub.submit(i % 2, move |_| i * 3).unwrap(), i * 3));
    }
    assert_eq!(
        sub.submit(0, |_| 0),
        Err(SubmitError::TooManyInFlight { in_flight: 64 })
    );
    let mut got = Vec::new();
    while let Some(c) = sub.complete_timeout(Some(Duration::from_secs(10))).unwrap() {
        got.push((c.ticket, c.result.unwrap()));
    }
    got.sort();
    assert_eq!(got, tickets);
    assert_eq!(sub.in_flight(), 0);

    // Event-loop style: arm, then poll the fd.
    assert!(!sub.arm());
    sub.submit(1, |_| 7).unwrap();
    let mut pfd = libc::pollfd {
        fd: sub.fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut pfd, 1, 10_000) };
    assert_eq!(ready, 1, "eventfd readable after the completion");
    sub.clear_notification().unwrap();
    assert_eq!(sub.try_complete().unwrap().result, Ok(7));
    rt.shutdown().unwrap();
}

#[test]
fn blocking_call_from_a_shard_is_refused() {
    let rt = Runtime::start(config(2)).unwrap();
    let handle = rt.handle();
    let h = handle.clone();
    let inner = handle.call(0, move |_| h.call(1, |_| ())).unwrap();
    assert_eq!(inner, Err(CallError::OnShardThread { shard: 0 }));
    rt.shutdown().unwrap();
}

#[test]
fn bad_shard_indices_are_errors() {
    let rt = Runtime::start(config(2)).unwrap();
    assert_eq!(
        rt.handle().spawn(7, |_| {}),
        Err(SubmitError::NoSuchShard {
            shard: 7,
            shards: 2
        })
    );
    let refused = rt
        .handle()
        .call(0, |ctx| {
            matches!(
                ctx.send(9, |_| {}),
                Err(SendError::NoSuchShard { shard: 9, .. })
            )
        })
        .unwrap();
    assert!(refused);
    rt.shutdown().unwrap();
}

#[test]
fn timers_fire_through_the_shards_ring_and_not_early() {
    let rt = Runtime::start(config(2)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    rt.handle()
        .call(1, move |ctx: &mut ShardCtx| {
            for ms in [30u64, 10, 20] {
                let tx = tx.clone();
                ctx.after(Duration::from_millis(ms), move |c| {
                    let _ = tx.send((ms, c.shard_id(), started.elapsed()));
                })
                .unwrap();
            }
        })
        .unwrap();
    let fired: Vec<_> = (0..3)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    assert_eq!(
        fired.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![10, 20, 30]
    );
    for (ms, shard, at) in fired {
        assert_eq!(shard, 1);
        assert!(
            at >= Duration::from_millis(ms),
            "timer {ms} ms fired early at {at:?}"
        );
    }
    rt.shutdown().unwrap();
}

#[test]
fn file_io_goes_through_the_shards_io_uring() {
    use std::os::fd::AsRawFd;
    let dir = std::env::temp_dir().join(format!("ringbroker-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("f");
    let file = Arc::new(
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap(),
    );
    let rt = Runtime::start(config(2)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let f = file.clone();
    rt.handle()
        .spawn(1, move |ctx: &mut ShardCtx| {
            let fd = f.as_raw_fd();
            let written = ctx.write_at(fd, b"hello, ring".to_vec(), 0, move |ctx, n, _buf| {
                assert_eq!(n.unwrap(), 11);
                ctx.fdatasync(fd, move |ctx, r| {
                    r.unwrap();
                    ctx.read_at(fd, vec![0; 32], 7, move |_, n, buf| {
                        let n = n.unwrap();
                        let _ = tx.send(buf[..n].to_vec());
                        drop(f);
                    })
                    .unwrap();
                })
                .unwrap();
            });
            written.unwrap();
        })
        .unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), b"ring");
    let bad = rt
        .handle()
        .call(0, |ctx: &mut ShardCtx| {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            ctx.write_at(-1, vec![1], 0, move |_, r, _| {
                let _ = tx.send(r.map_err(|e| e.raw_os_error()));
            })
            .unwrap();
            rx
        })
        .unwrap();
    assert_eq!(
        bad.recv_timeout(Duration::from_secs(10)).unwrap(),
        Err(Some(libc::EBADF))
    );
    rt.shutdown().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_linked_write_and_sync_report_both_results() {
    use std::os::fd::AsRawFd;
    let tmp = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(tmp.path().join("f")).unwrap();
    let fd = file.as_raw_fd();
    let rt = Runtime::start(config(1)).unwrap();
    let chain = |fd| {
        rt.handle()
            .call(0, move |ctx: &mut ShardCtx| {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                ctx.write_then_fdatasync(fd, b"linked".to_vec(), 3, move |_, w, s, buf| {
                    let errno = |e: std::io::Error| e.raw_os_error();
                    let _ = tx.send((w.map_err(errno), s.map_err(errno), buf));
                })
                .unwrap();
                rx
            })
            .unwrap()
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
    };
    assert_eq!(chain(fd), (Ok(6), Ok(()), b"linked".to_vec()));
    assert_eq!(
        std::fs::read(tmp.path().join("f")).unwrap(),
        b"\0\0\0linked"
    );
    // A failed write cancels the sync linked to it: it never runs.
    let (w, s, _) = chain(-1);
    assert_eq!((w, s), (Err(Some(libc::EBADF)), Err(Some(libc::ECANCELED))));
    rt.shutdown().unwrap();
}

#[test]
fn shutdown_waits_for_io_in_flight() {
    let rt = Runtime::start(config(2)).unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    rt.handle()
        .spawn(0, move |ctx: &mut ShardCtx| {
            for _ in 0..100 {
                let d = d.clone();
                ctx.nop(move |_, r| {
                    r.unwrap();
                    d.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            }
        })
        .unwrap();
    let report = rt.shutdown().unwrap();
    assert_eq!(done.load(Ordering::SeqCst), 100);
    assert_eq!(report.ops_leaked, 0);
}

#[test]
fn shard_local_state_is_per_shard_and_survives_a_panic() {
    #[derive(Default)]
    struct Count(u64);
    let rt = Runtime::start(config(2)).unwrap();
    let h = rt.handle();
    for _ in 0..3 {
        h.call(0, |ctx| ctx.with_local(Count::default, |c, _| c.0 += 1))
            .unwrap();
    }
    let _ = h.call(0, |ctx| {
        ctx.with_local(Count::default, |c, _| {
            c.0 += 10;
            panic!("inside with_local");
        })
    });
    assert_eq!(
        h.call(0, |ctx| ctx.with_local(Count::default, |c, _| c.0))
            .unwrap(),
        13
    );
    assert_eq!(
        h.call(1, |ctx| ctx.with_local(Count::default, |c, _| c.0))
            .unwrap(),
        0
    );
    rt.shutdown().unwrap();
}

#[test]
fn shutdown_requested_from_a_task_completes_with_wait() {
    let rt = Runtime::start(config(2)).unwrap();
    rt.handle().spawn(1, |ctx| ctx.request_shutdown()).unwrap();
    let report = rt.wait().unwrap();
    assert!(!report.forced);
}

#[test]
fn endless_work_is_stopped_by_the_drain_deadline() {
    let cfg = RuntimeConfig {
        shutdown_drain_max: Duration::from_millis(200),
        ..config(2)
    };
    let rt = Runtime::start(cfg).unwrap();
    rt.handle().spawn(0, ping_forever).unwrap();
    let started = Instant::now();
    let report = rt.shutdown().unwrap();
    assert!(report.forced);
    assert!(started.elapsed() < Duration::from_secs(10));
}

fn ping_forever(ctx: &mut ShardCtx) {
    let next = (ctx.shard_id() + 1) % ctx.shard_count();
    let _ = ctx.send(next, ping_forever);
}

#[test]
fn dropping_the_runtime_shuts_it_down() {
    let ran = Arc::new(AtomicUsize::new(0));
    {
        let rt = Runtime::start(config(2)).unwrap();
        for _ in 0..100 {
            let r = ran.clone();
            rt.handle()
                .spawn(1, move |_| {
                    r.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
        }
    }
    assert_eq!(ran.load(Ordering::SeqCst), 100);
}

#[test]
fn invalid_config_is_a_clear_error() {
    let err = Runtime::start(RuntimeConfig {
        shards: Some(0),
        ..RuntimeConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("shards = 0"), "{err}");
}

#[test]
fn parked_shards_wake_for_external_and_cross_shard_work() {
    let rt = Runtime::start(config(2)).unwrap();
    let h = rt.handle();
    for round in 0..50 {
        // Let both shards park, then wake them.
        std::thread::sleep(Duration::from_millis(1));
        let v = h.call(round % 2, move |ctx: &mut ShardCtx| {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let other = 1 - ctx.shard_id();
            let sent = ctx.call(
                other,
                move |_| round,
                move |_, r| {
                    let _ = tx.send(r);
                },
            );
            assert!(sent.is_ok());
            rx
        });
        assert_eq!(
            v.unwrap().recv_timeout(Duration::from_secs(10)).unwrap(),
            Ok(round)
        );
    }
    let parks: u64 = h.stats().iter().map(|s| s.parks).sum();
    assert!(
        parks >= 50,
        "shards should have parked between rounds, parked {parks}"
    );
    rt.shutdown().unwrap();
}

/// A long-running task that sends, keeps running, and sends again after shutdown began
/// is waited for: all its children were accepted, so all run. (The bug this pins: the
/// first child ran and was counted finished before its parent published `created`,
/// which balanced the counters while the parent still ran, and the second was lost.)
#[test]
fn shutdown_waits_for_a_long_task_that_keeps_sending() {
    let rt = Runtime::start(config(2)).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let r = ran.clone();
    rt.handle()
        .spawn(1, move |ctx: &mut ShardCtx| {
            // Exactly one child first: with the bug, its `finished` (+1) cancelled this
            // running task's `ext_accepted` (+1) and the counters balanced.
            let r1 = r.clone();
            let sent = ctx.send(0, move |_: &mut ShardCtx| {
                r1.fetch_add(2, Ordering::SeqCst);
            });
            assert!(sent.is_ok());
            let _ = sent_tx.send(());
            std::thread::sleep(Duration::from_millis(100));
            let sent = ctx.send(0, move |_: &mut ShardCtx| {
                r.fetch_add(1, Ordering::SeqCst);
            });
            assert!(sent.is_ok());
        })
        .unwrap();
    sent_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let report = rt.shutdown().unwrap();
    assert!(!report.forced);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        3,
        "a child sent after shutdown began was lost"
    );
}

/// A timer that fires as shutdown begins either runs to completion, children included,
/// or does not run at all; never half.
#[test]
fn timer_firing_as_shutdown_begins_is_waited_for() {
    let rt = Runtime::start(config(2)).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let (fired_tx, fired_rx) = std::sync::mpsc::channel();
    let r = ran.clone();
    rt.handle()
        .spawn(1, move |ctx: &mut ShardCtx| {
            let armed = ctx.after(Duration::from_millis(5), move |ctx: &mut ShardCtx| {
                let _ = fired_tx.send(());
                std::thread::sleep(Duration::from_millis(100));
                let sent = ctx.send(0, move |_: &mut ShardCtx| {
                    r.fetch_add(1, Ordering::SeqCst);
                });
                assert!(sent.is_ok());
            });
            assert!(armed.is_ok());
        })
        .unwrap();
    fired_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let report = rt.shutdown().unwrap();
    assert!(!report.forced);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "the timer task's child was lost"
    );
}

#[test]
fn timer_with_an_unrepresentable_delay_is_an_error() {
    let rt = Runtime::start(config(1)).unwrap();
    let result = rt
        .handle()
        .call(0, |ctx| ctx.after(Duration::MAX, |_| {}))
        .unwrap();
    assert!(matches!(
        result,
        Err(ringbroker::runtime::TimerError::DelayTooLong { .. })
    ));
    rt.shutdown().unwrap();
}

/// A forced stop cancels what it cannot run: every submission completes, as a result or
/// as `Cancelled`, and the report counts the dropped ones.
#[test]
fn forced_shutdown_completes_unrun_submissions_as_cancelled() {
    let cfg = RuntimeConfig {
        shutdown_drain_max: Duration::from_millis(50),
        ..config(2)
    };
    let rt = Runtime::start(cfg).unwrap();
    rt.handle()
        .spawn(1, |_| std::thread::sleep(Duration::from_millis(300)))
        .unwrap();
    let mut sub = rt.handle().submitter::<u32>(1000).unwrap();
    let mut submitted = 0;
    while submitted < 1000 {
        match sub.submit(1, |_| 7) {
            Ok(_) => submitted += 1,
            Err(SubmitError::Full { .. }) => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
    let report = rt.shutdown().unwrap();
    assert!(report.forced);
    let (mut ok, mut cancelled) = (0, 0);
    while let Some(c) = sub.try_complete() {
        match c.result {
            Ok(7) => ok += 1,
            Err(TaskError::Cancelled) => cancelled += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        ok + cancelled,
        1000,
        "every submission completes exactly once"
    );
    assert!(
        cancelled > 0,
        "a stop at 50 ms cannot have run 1000 tasks queued behind a 300 ms one"
    );
    assert_eq!(report.tasks_dropped, cancelled);
}

#[test]
fn nested_with_local_of_the_same_type_is_refused() {
    #[derive(Default)]
    struct State;
    let rt = Runtime::start(config(1)).unwrap();
    let err = rt
        .handle()
        .call(0, |ctx| {
            ctx.with_local(State::default, |_, ctx| {
                ctx.with_local(State::default, |_, _| ())
            })
        })
        .unwrap_err();
    let refused = matches!(&err, CallError::Task(TaskError::Panicked { message, .. }) if message.contains("re-entered"));
    assert!(refused, "{err:?}");
    rt.shutdown().unwrap();
}

#[test]
fn local_handle_is_made_once_and_refused_while_lent_out() {
    #[derive(Clone, Default)]
    struct Handle(std::rc::Rc<std::cell::Cell<u32>>);
    let rt = Runtime::start(config(1)).unwrap();
    let made = rt
        .handle()
        .call(0, |ctx| {
            let mut inits = 0;
            for _ in 0..3 {
                let h = ctx.local_handle(|| {
                    inits += 1;
                    Handle::default()
                });
                h.0.set(h.0.get() + 1);
            }
            (inits, ctx.local_handle(Handle::default).0.get())
        })
        .unwrap();
    assert_eq!(made, (1, 3), "one handle, made once, shared by every call");
    let err = rt
        .handle()
        .call(0, |ctx| {
            ctx.with_local(Handle::default, |_, ctx| {
                ctx.local_handle(Handle::default).0.get()
            })
        })
        .unwrap_err();
    let refused = matches!(&err, CallError::Task(TaskError::Panicked { message, .. }) if message.contains("re-entered"));
    assert!(refused, "{err:?}");
    rt.shutdown().unwrap();
}

#[test]
fn syncs_are_counted_with_their_latency() {
    let rt = Runtime::start(config(1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("f")).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let (tx, rx) = std::sync::mpsc::channel();
    rt.handle()
        .spawn(0, move |ctx: &mut ShardCtx| {
            let tx2 = tx.clone();
            ctx.fdatasync(fd, move |_, r| tx.send(r.is_ok()).unwrap())
                .unwrap();
            ctx.write_then_fdatasync(fd, vec![1; 4096], 0, move |_, w, s, _| {
                tx2.send(w.is_ok() && s.is_ok()).unwrap();
            })
            .unwrap();
        })
        .unwrap();
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap());
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap());
    // Published at the end of the shard's turn.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let stats = rt.handle().stats()[0];
        if stats.fsyncs == 2 || Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(stats.fsyncs, 2);
    assert_eq!(stats.fsync_latency_us.iter().sum::<u64>(), 2);
    drop(file);
    rt.shutdown().unwrap();
}
