"""The handle: opening and connecting, its errors, closing with work in flight, the
status-to-exception table, and one broker shared by many threads."""

from __future__ import annotations

import gc
import threading
import time

import pytest

import ringbroker
from ringbroker import errors

WAIT = 5.0


def test_open_close_and_the_directory_lock(tmp_path):
    data = str(tmp_path / "b")
    with ringbroker.open(data, shards=1, pin_to_cores=False) as b:
        assert b.embedded and not b.closed and "embedded" in repr(b)
        with pytest.raises(ringbroker.Locked) as err:
            ringbroker.open(data, shards=1, pin_to_cores=False)
        assert err.value.code == 15 and err.value.message
    assert b.closed and "closed" in repr(b)
    b.close()  # idempotent
    with pytest.raises(ringbroker.ShuttingDown):
        b.publish("a.b", b"x")
    with ringbroker.open(data, shards=1, pin_to_cores=False):  # the lock went with close
        pass


def test_open_and_connect_errors(tmp_path):
    with pytest.raises(ringbroker.InvalidArgument) as err:
        ringbroker.open(str(tmp_path / "x"), shards="many")
    assert "shards" in err.value.message
    with pytest.raises(ringbroker.InvalidArgument):
        ringbroker.open(str(tmp_path / "y"), colour="red")
    with pytest.raises(ringbroker.InvalidArgument) as err:
        ringbroker.open(str(tmp_path / "z"), idle_spin_us=1_000_001)
    assert "idle_spin_us" in err.value.message
    with ringbroker.open(str(tmp_path / "spin"), shards=1, pin_to_cores=False, idle_spin_us=50):
        pass
    with pytest.raises(ringbroker.Disconnected) as err:
        ringbroker.connect("ringbroker://127.0.0.1:1", reconnect=False, connect_timeout_ms=2000)
    assert isinstance(err.value, ConnectionError)
    with pytest.raises(ringbroker.InvalidArgument):
        ringbroker.connect("http://127.0.0.1:1")


def test_remote_handle(daemon):
    with ringbroker.connect(daemon.url, client_name="pytest", request_timeout_ms=5000) as b:
        assert not b.embedded and daemon.url in repr(b)
    with ringbroker.connect(daemon.url) as b:  # no options: a NULL config
        b.publish("remote.hello", b"x")


def test_auth_and_frame_limit(strict_daemon):
    with pytest.raises(ringbroker.AuthFailed) as err:
        ringbroker.connect(strict_daemon.url, reconnect=False)
    assert isinstance(err.value, PermissionError) and err.value.message
    with pytest.raises(ringbroker.AuthFailed):
        ringbroker.connect(strict_daemon.url, auth_token="wrong", reconnect=False)
    with ringbroker.connect(strict_daemon.url, auth_token="secret", reconnect=False) as b:
        with b.subscribe("strict.x") as sub:
            b.publish("strict.x", b"small")
            assert sub.next(WAIT).text() == "small"
            with pytest.raises(ringbroker.FrameTooLarge):
                b.publish_batch([("strict.x", b"y" * 600), ("strict.x", b"z" * 600)])
            with pytest.raises(ringbroker.Timeout):
                sub.next(0.2)  # refused whole: nothing of it arrives


def test_every_status_has_its_exception():
    for code in range(0, 256):
        name = ringbroker.status_name(code)
        if name in ("UNKNOWN", "OK"):
            continue
        cls = errors.ERRORS[code]
        assert cls.__name__.lower() == name.replace("_", "").lower(), (code, name, cls)
        assert issubclass(cls, ringbroker.RingbrokerError) and cls.code == code
        assert getattr(ringbroker, cls.__name__) is cls
        err = errors.error_for(code, "why")
        assert (type(err), err.code, err.status, err.message) == (cls, code, name, "why")
    assert ringbroker.status_name(12345) == "UNKNOWN"
    unknown = errors.error_for(12345, "odd")
    assert type(unknown) is ringbroker.RingbrokerError and unknown.code == 12345


def test_versions():
    assert ringbroker.ABI_VERSION == 1
    assert ringbroker.__version__.count(".") == 2


def test_close_waits_for_calls_in_flight_and_consumers_then_fail(opener, ns):
    b = opener()
    sub = b.subscribe(f"{ns}.late")
    with b.subscribe(f"{ns}.svc") as svc:
        outcome = []

        def slow_request() -> None:
            try:
                b.request(f"{ns}.svc", b"x", timeout=0.5)
            except ringbroker.RingbrokerError as e:
                outcome.append(type(e))

        t = threading.Thread(target=slow_request)
        t.start()
        svc.next(WAIT)  # the request is in flight
        start = time.monotonic()
        b.close()  # waits for it (a timeout, 0.5 s)
        t.join(WAIT)
        assert outcome == [ringbroker.Timeout] and time.monotonic() - start < WAIT
    with pytest.raises(ringbroker.RingbrokerError):
        sub.next(0.1)  # made from a closed handle: its calls fail
    sub.close()


def test_four_publishers_two_consumers_nothing_lost(broker, ns):
    # 4 threads publish 250 confirmed messages each through one broker into a work
    # queue while 2 threads consume and ack: every message arrives exactly once.
    q = f"{ns}-threads"
    broker.declare_queue(q)
    per_thread, threads_n = 250, 4
    total = per_thread * threads_n
    received: list = []
    lock = threading.Lock()
    failures: list = []

    def publish(t: int) -> None:
        try:
            for i in range(0, per_thread, 25):
                broker.exchange_publish_batch([("", q, f"{t}:{j}") for j in range(i, i + 25)])
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(e)

    def consume() -> None:
        with broker.consume_queue(q, prefetch=50) as c:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with lock:
                    if len(received) >= total:
                        return
                batch = c.fetch(64, 0.2)
                if batch:
                    c.ack_batch(batch)
                    with lock:
                        received.extend(m.text() for m in batch)

    workers = [threading.Thread(target=consume) for _ in range(2)]
    workers += [threading.Thread(target=publish, args=(t,)) for t in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not failures
    assert sorted(received) == sorted(f"{t}:{j}" for t in range(threads_n) for j in range(per_thread))
    assert broker.queue_info(q).messages == 0


def test_threads_on_subjects_with_a_queue_group(broker, ns):
    # The same over subjects: 4 publishing threads, 2 members of one queue group,
    # each in its own thread; every message arrives once.
    subject = f"{ns}.threads"
    per_thread, threads_n = 500, 4
    total = per_thread * threads_n
    subs = [broker.subscribe(subject, "g") for _ in range(2)]
    received: list = []
    lock = threading.Lock()

    def publish(t: int) -> None:
        for i in range(per_thread):
            while True:
                try:
                    broker.publish(subject, f"{t}:{i}")
                    break
                except ringbroker.Backpressure:
                    time.sleep(0.001)

    def consume(sub) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with lock:
                if len(received) >= total:
                    return
            batch = sub.fetch(256, 0.2)
            with lock:
                received.extend(m.text() for m in batch)

    workers = [threading.Thread(target=consume, args=(s,)) for s in subs]
    workers += [threading.Thread(target=publish, args=(t,)) for t in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    for s in subs:
        s.close()
    assert len(received) == total and len(set(received)) == total


def test_one_consumer_shared_by_threads(broker, ns):
    # Receives on one consumer are serialised; both threads get messages, none twice.
    with broker.subscribe(f"{ns}.shared") as sub:
        got: list = []

        def take() -> None:
            for m in sub.messages(idle_timeout=0.5):
                got.append(m.text())

        ts = [threading.Thread(target=take) for _ in range(2)]
        for t in ts:
            t.start()
        broker.publish_batch([(f"{ns}.shared", str(i)) for i in range(200)])
        for t in ts:
            t.join(WAIT * 2)
        assert sorted(got, key=int) == [str(i) for i in range(200)]


def test_close_while_threads_publish_ends_each_with_shutting_down(opener, ns):
    # publish() is counted by the guard in C (native/rbpy.h), not by the Python one:
    # close() from another thread must still wait for the publishes in flight and
    # refuse the later ones, so every publisher ends with ShuttingDown, none inside a
    # call on a closed handle (which would crash the process).
    b = opener()
    sub = b.subscribe(f"{ns}.flood")  # something to deliver to
    outcomes: list = []
    started = threading.Barrier(5)

    def publish_until_closed() -> None:
        started.wait()
        deadline = time.monotonic() + 10 * WAIT  # bounded even if close never came
        while time.monotonic() < deadline:
            try:
                b.publish(f"{ns}.flood", b"x")
            except ringbroker.Backpressure:
                time.sleep(0.0001)
            except Exception as e:  # noqa: BLE001 - checked below
                outcomes.append(type(e))
                return
        outcomes.append(None)

    threads = [threading.Thread(target=publish_until_closed) for _ in range(4)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(0.2)  # all four publishing
    b.close()
    for t in threads:
        t.join(WAIT * 11)
    assert outcomes == [ringbroker.ShuttingDown] * 4
    assert sub.closed


def test_the_publish_guard_refuses_once_closed(broker, ns):
    from ringbroker._native import ffi, lib

    guard = ffi.new("rbpy_guard *")
    handle = broker._guard.enter()
    try:
        assert lib.rbpy_publish(guard, handle, f"{ns}.g".encode(), ffi.NULL, b"x", 1) == 0
        lib.rbpy_guard_close(guard)
        lib.rbpy_guard_close(guard)  # idempotent
        assert lib.rbpy_publish(guard, handle, f"{ns}.g".encode(), ffi.NULL, b"x", 1) == lib.RBPY_CLOSED
        assert guard.users == 0
    finally:
        broker._guard.leave()


def test_close_closes_the_consumers_after_their_receives_in_flight(opener, ns):
    # Broker.close() closes each consumer made from it, waiting for the receives in
    # progress on other threads (they end with ShuttingDown), before closing the
    # handle: no thread is inside a call on one of its consumers when it closes.
    b = opener()
    b.create_stream(f"{ns}-s", [f"{ns}.s.>"], partitions=1)
    consumers = [b.subscribe(f"{ns}.a.>") for _ in range(3)] + [b.consume_stream(f"{ns}-s", deliver="all")]
    gone = b.subscribe(f"{ns}.gone")
    del gone  # garbage: freed by its finalizer, not closed again by the broker
    gc.collect()
    outcomes: list = []

    def receive(c) -> None:
        try:
            while True:
                c.next(timeout=None)
        except Exception as e:  # noqa: BLE001 - checked below
            outcomes.append(type(e))

    threads = [threading.Thread(target=receive, args=(c,)) for c in consumers]
    for t in threads:
        t.start()
    time.sleep(0.2)  # all four wait inside ringbroker_fetch
    start = time.monotonic()
    b.close()
    assert all(c.closed for c in consumers)
    assert all(c._guard._users == 0 and c._guard._ptr is None for c in consumers)  # freed
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads)
    assert outcomes == [ringbroker.ShuttingDown] * 4
    assert time.monotonic() - start < 2.0  # within a wait slice or so
    for c in consumers:
        c.close()  # idempotent
        with pytest.raises(ringbroker.ShuttingDown):
            c.try_next()
