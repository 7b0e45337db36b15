#!/usr/bin/env python3
"""The Python program of the bindings peer benchmark (benches/bindings/run.sh, whose top
comment is the contract): the ringbroker binding (embedded, and remote against
RINGBROKER_URL) against the official peers' clients from the same process, nats-py on
NATS_URL and pika on AMQP_URL. An empty or unset URL skips that system; the embedded
broker always runs (in a temporary data directory, 2 shards).

Workloads, 64-byte payloads, each capped by BENCH_SECONDS and a message count:
  pubsub-64B         one subscriber (made first), one publisher, single-message
                     publishes; then flush and wait until everything arrived or
                     QUIET_S seconds pass with nothing new.
                     msgs_per_s = received / (first publish -> last receive).
  request-reply-64B  an echoing responder (its own connection when remote) and a
                     requester making sequential requests; p50/p99 over every request.
  publish-batch-64B  ringbroker only: as pubsub-64B with publish_batch(BATCH) and the
                     subscription's batch receive, fetch(FETCH).
  publish-only-64B   the publisher alone, nothing subscribed: single publishes
                     (nats-py: flushed at the end, inside the time measured);
  publish-only-batch-64B  ringbroker embedded: the same with publish_batch(BATCH).

The ringbroker rows come twice: the synchronous API with a thread per consumer
(ringbroker-embedded, ringbroker-remote), and ringbroker.aio in one event loop
(ringbroker-*-asyncio), the model nats-py runs in: publisher and subscriber are
coroutines of one thread, the publisher yielding after each CHUNK publishes.

One JSON object per measurement on stdout; everything else on stderr.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid

PAYLOAD = b"x" * 64
SECONDS = float(os.environ.get("BENCH_SECONDS") or 5)
PUBSUB_CAP = 3_000_000      # single-message publishes per measurement
BATCH_CAP = 10_000_000      # publish_batch messages per measurement
RR_CAP = 100_000            # requests per measurement
BATCH = 256                 # messages per publish_batch call
FETCH = 1024                # most messages per fetch in publish-batch-64B
CHUNK = 1024                # publishes between two looks at the clock
QUIET_S = 2.0               # the drain ends after this long with nothing new ...
DRAIN_MAX_S = 10 + 2 * SECONDS   # ... or after this long in all
REQUEST_TIMEOUT_S = 1.0
# The embedded broker's pin_to_cores: the library's default (pinned) unless
# BENCH_PIN_TO_CORES says true or false (benches/bindings/run.sh sets it; see README.md).
PIN = {"true": True, "1": True, "false": False, "0": False}.get(os.environ.get("BENCH_PIN_TO_CORES", "").lower())
HARD_LIMIT_S = SECONDS + DRAIN_MAX_S + 60   # the watchdog: no measurement hangs
now = time.perf_counter
FAILURES: list = []         # (client, workload) of the measurements that failed
EMITTED = [0]               # lines written to stdout


def log(*args: object) -> None:
    print("bench.py:", *args, file=sys.stderr, flush=True)


def emit(client: str, workload: str, rate: float, p50, p99, sent: int, received: int) -> None:
    row = {"client": client, "workload": workload, "msgs_per_s": round(rate, 1),
           "p50_us": None if p50 is None else round(p50, 2),
           "p99_us": None if p99 is None else round(p99, 2),
           "sent": int(sent), "received": int(received)}
    print(json.dumps(row), flush=True)
    EMITTED[0] += 1


def subject(workload: str) -> str:
    return f"bench.{workload.replace('-', '_')}.{uuid.uuid4().hex[:12]}"


class Tally:
    """What a subscriber got: written by its thread or callback, read by the drain."""

    __slots__ = ("received", "nbytes", "last")

    def __init__(self) -> None:
        self.received = 0
        self.nbytes = 0   # every payload's length is read, as a consumer would use it
        self.last = 0.0   # perf_counter of the last receive

    def add_batch(self, msgs) -> None:
        """Counts a batch of the binding's messages, reading each payload's length."""
        nbytes = 0
        for m in msgs:
            nbytes += len(m.data)
        self.nbytes += nbytes
        self.received += len(msgs)
        self.last = now()


def drain_done(tally: Tally, sent: int, state: dict) -> bool:
    """One look of the drain: True once everything arrived, or QUIET_S passed with
    nothing new, or DRAIN_MAX_S passed in all (``state`` is the drain's memory)."""
    t = now()
    if not state:
        state.update(start=t, seen=-1, changed=t)
    n = tally.received
    if n >= sent:
        return True
    if n != state["seen"]:
        state["seen"], state["changed"] = n, t
    elif t - state["changed"] >= QUIET_S:
        return True
    if t - state["start"] >= DRAIN_MAX_S:
        log(f"drain cut off after {DRAIN_MAX_S:.0f} s with {n} of {sent} received")
        return True
    return False


def wait_drain(tally: Tally, sent: int) -> None:
    state: dict = {}
    while not drain_done(tally, sent, state):
        time.sleep(0.005)


async def await_drain(tally: Tally, sent: int) -> None:
    state: dict = {}
    while not drain_done(tally, sent, state):
        await asyncio.sleep(0.005)


def throughput(tally: Tally, t0: float) -> float:
    return tally.received / (tally.last - t0) if tally.received and tally.last > t0 else 0.0


def percentiles(latencies: list) -> tuple:
    """(p50, p99) in microseconds, nearest rank, of latencies in seconds."""
    if not latencies:
        return None, None
    s = sorted(latencies)

    def rank(q: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))] * 1e6

    return rank(0.50), rank(0.99)


def published_rate(sent: int, t0: float, published: float) -> str:
    """The publisher's own rate, up to its flush where the client has one."""
    return f"; publisher: {sent / max(published - t0, 1e-9):,.0f} msgs/s over {published - t0:.2f} s"


def report_pubsub(client: str, workload: str, tally: Tally, t0: float, sent: int, extra: str = "") -> None:
    rate = throughput(tally, t0)
    log(f"{client} {workload}: sent {sent}, received {tally.received} ({tally.nbytes} bytes), "
        f"{rate:,.0f} msgs/s{extra}")
    emit(client, workload, rate, None, None, sent, tally.received)


def report_rr(client: str, latencies: list, sent: int, elapsed: float, extra: str = "") -> None:
    p50, p99 = percentiles(latencies)
    rate = len(latencies) / elapsed if elapsed > 0 else 0.0
    log(f"{client} request-reply-64B: {sent} requests, {len(latencies)} replies, {rate:,.0f}/s, "
        f"p50 {p50 or 0:.1f} us, p99 {p99 or 0:.1f} us{extra}")
    emit(client, "request-reply-64B", rate, p50, p99, sent, len(latencies))


class Requests:
    """The requester's side of a request-reply measurement, for every client: ``more()``
    while the time and count allow, ``begin()`` before each request, then
    ``replied(data)`` or ``timed_out()`` (True at the third: stop), ``stop()`` after
    the loop, ``report()`` once the responder is stopped."""

    def __init__(self, client: str) -> None:
        self.client = client
        self.latencies: list = []
        self.sent = self.timeouts = 0
        self.t0 = now()
        self.deadline = self.t0 + SECONDS
        self.elapsed = 0.0
        self._start = 0.0

    def more(self) -> bool:
        return self.sent < RR_CAP and now() < self.deadline

    def begin(self) -> None:
        self.sent += 1
        self._start = now()

    def replied(self, data) -> None:
        self.latencies.append(now() - self._start)
        if len(data) != len(PAYLOAD):
            raise RuntimeError(f"{self.client}: a reply of {len(data)} bytes")

    def timed_out(self) -> bool:
        self.timeouts += 1
        if self.timeouts >= 3:
            log(f"{self.client}: {self.timeouts} requests timed out; stopping")
            return True
        return False

    def stop(self) -> None:
        self.elapsed = now() - self.t0

    def report(self, extra: str = "") -> None:
        if self.timeouts:
            extra = f"; {self.timeouts} timeouts{extra}"
        report_rr(self.client, self.latencies, self.sent, self.elapsed, extra)


# -- ringbroker (the binding, synchronous API, a thread per consumer) ----------------------

def rb_publish_flood(pub, subj: str, batch: bool, deadline: float) -> tuple:
    """Publishes PAYLOAD on ``subj`` until ``deadline`` or the cap: ``publish_batch``
    of BATCH (an outbox overflow drops the rest of a batch silently) or single
    ``publish`` calls (one refused with Backpressure is counted, not sent, and the
    publisher eases off). Returns (sent, refused)."""
    import ringbroker

    sent = refused = 0
    if batch:
        messages = [(subj, PAYLOAD)] * BATCH
        publish_batch = pub.publish_batch
        per_look = max(1, CHUNK // BATCH)
        while sent < BATCH_CAP and now() < deadline:
            for _ in range(per_look):
                publish_batch(messages)
            sent += per_look * BATCH
        return sent, 0
    publish = pub.publish
    Backpressure = ringbroker.Backpressure
    sleep = time.sleep
    attempts = 0
    while attempts < PUBSUB_CAP and now() < deadline:
        for _ in range(CHUNK):
            try:
                publish(subj, PAYLOAD)
            except Backpressure:
                refused += 1
                sleep(0.0002)
        attempts += CHUNK
    return attempts - refused, refused


def rb_pubsub(client: str, pub, sub_broker, batch: bool) -> None:
    workload = "publish-batch-64B" if batch else "pubsub-64B"
    subj = subject(workload)
    sub = sub_broker.subscribe(subj)
    tally = Tally()
    stop = threading.Event()
    failure: list = []

    def consume() -> None:
        try:
            if batch:
                fetch = sub.fetch
                while not stop.is_set():
                    msgs = fetch(FETCH, 0.1)
                    if msgs:
                        tally.add_batch(msgs)
            else:
                # `for msg in sub` (the idiomatic loop; it takes up to 64 buffered
                # messages per C call), ended now and then to look at `stop`.
                while not stop.is_set():
                    for m in sub.messages(idle_timeout=0.1):
                        tally.nbytes += len(m.data)
                        tally.received += 1
                        tally.last = now()
        except Exception as e:  # noqa: BLE001 - reported after the run
            failure.append(e)

    consumer = threading.Thread(target=consume, name="subscriber", daemon=True)
    consumer.start()
    try:
        t0 = now()
        sent, refused = rb_publish_flood(pub, subj, batch, t0 + SECONDS)
        published = now()
        # The binding has no flush: a publish returns once the message is handed over.
        wait_drain(tally, sent)
    finally:
        stop.set()
        consumer.join(5)
        sub.close()
    if failure:
        raise failure[0]
    extra = published_rate(sent, t0, published)
    if refused:
        extra += f"; {refused} publishes refused (Backpressure)"
    report_pubsub(client, workload, tally, t0, sent, extra)


def rb_request_reply(client: str, requester, responder_broker) -> None:
    import ringbroker

    subj = subject("request-reply-64B")
    service = responder_broker.subscribe(subj)
    stop = threading.Event()
    failure: list = []

    def serve() -> None:
        Timeout = ringbroker.Timeout
        try:
            while not stop.is_set():
                try:
                    req = service.next(0.1)
                except Timeout:
                    continue
                req.respond(req.data)
        except Exception as e:  # noqa: BLE001
            if not stop.is_set():
                failure.append(e)

    server = threading.Thread(target=serve, name="responder", daemon=True)
    server.start()
    requests = Requests(client)
    try:
        request = requester.request
        Timeout = ringbroker.Timeout
        while requests.more() and not failure:
            requests.begin()
            try:
                reply = request(subj, PAYLOAD, REQUEST_TIMEOUT_S)
            except Timeout:
                if requests.timed_out():
                    break
                continue
            requests.replied(reply.data)
        requests.stop()
    finally:
        stop.set()
        server.join(5)
        service.close()
    if failure:
        raise failure[0]
    requests.report()


# -- ringbroker.aio (asyncio, one event loop: the model nats-py's numbers come from) ----

async def rb_aio_pubsub(client: str, pub, sub_broker) -> None:
    import ringbroker

    subj = subject("pubsub-64B")
    sub = await sub_broker.subscribe(subj)
    tally = Tally()
    stop = asyncio.Event()

    async def consume() -> None:
        fetch = sub.fetch
        while not stop.is_set():
            msgs = await fetch(FETCH, 0.1)
            if msgs:
                tally.add_batch(msgs)

    consumer = asyncio.create_task(consume())
    refused = attempts = 0
    try:
        publish = pub.publish
        Backpressure = ringbroker.Backpressure
        t0 = now()
        deadline = t0 + SECONDS
        while attempts < PUBSUB_CAP and now() < deadline:
            for _ in range(CHUNK):
                try:
                    publish(subj, PAYLOAD)
                except Backpressure:   # refused, not sent: count and ease off
                    refused += 1
                    await asyncio.sleep(0.0002)
            attempts += CHUNK
            await asyncio.sleep(0)     # the subscriber's turn (nats-py yields in its flusher)
        sent = attempts - refused
        published = now()
        await await_drain(tally, sent)
    finally:
        stop.set()
        await asyncio.wait_for(consumer, 5)
        sub.close()
    extra = published_rate(sent, t0, published)
    if refused:
        extra += f"; {refused} publishes refused (Backpressure)"
    report_pubsub(client, "pubsub-64B", tally, t0, sent, extra)


async def rb_aio_request_reply(client: str, requester, responder_broker) -> None:
    import ringbroker

    subj = subject("request-reply-64B")
    service = await responder_broker.subscribe(subj)

    async def serve() -> None:
        async for req in service:   # ends when the subscription is closed
            responder_broker.respond(req, req.data)

    server = asyncio.create_task(serve())
    requests = Requests(client)
    try:
        request = requester.request
        Timeout = ringbroker.Timeout
        while requests.more() and not server.done():
            requests.begin()
            try:
                reply = await request(subj, PAYLOAD, REQUEST_TIMEOUT_S)
            except Timeout:
                if requests.timed_out():
                    break
                continue
            requests.replied(reply.data)
        requests.stop()
    finally:
        service.close()
        await asyncio.wait_for(server, 5)   # re-raises what failed in the responder
    requests.report()


async def rb_aio_workload(client: str, workload: str, a, b) -> None:
    if workload == "request-reply-64B":
        await rb_aio_request_reply(client, a, b)
    else:
        await rb_aio_pubsub(client, a, b)


def aio_embedded_workload(workload: str) -> None:
    import ringbroker.aio

    async def body() -> None:
        data_dir = tempfile.mkdtemp(prefix="rb-bench-py-")
        try:
            broker = await ringbroker.aio.open(data_dir, shards=2, pin_to_cores=PIN)
            try:
                await rb_aio_workload("ringbroker-embedded-asyncio", workload, broker, broker)
            finally:
                await broker.aclose()
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)

    asyncio.run(asyncio.wait_for(body(), HARD_LIMIT_S - 10))


def aio_remote_workload(url: str, workload: str) -> None:
    import ringbroker.aio

    async def body() -> None:
        a = await ringbroker.aio.connect(url, connect_timeout_ms=5000)
        try:
            b = await ringbroker.aio.connect(url, connect_timeout_ms=5000)
            try:
                await rb_aio_workload("ringbroker-remote-asyncio", workload, a, b)
            finally:
                await b.aclose()
        finally:
            await a.aclose()

    asyncio.run(asyncio.wait_for(body(), HARD_LIMIT_S - 10))


def run_ringbroker_embedded() -> None:
    for workload in ("pubsub-64B", "request-reply-64B", "publish-batch-64B",
                     "publish-only-64B", "publish-only-batch-64B"):
        measure("ringbroker-embedded", workload, lambda: embedded_workload(workload))
    for workload in ("pubsub-64B", "request-reply-64B"):
        measure("ringbroker-embedded-asyncio", workload, lambda: aio_embedded_workload(workload))


def embedded_workload(workload: str) -> None:
    import ringbroker

    # A fresh broker in a fresh directory for each measurement; publisher and
    # subscriber (requester and responder) share the one handle.
    data_dir = tempfile.mkdtemp(prefix="rb-bench-py-")
    try:
        with ringbroker.open(data_dir, shards=2, pin_to_cores=PIN) as broker:
            rb_workload("ringbroker-embedded", workload, broker, broker)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def run_ringbroker_remote(url: str) -> None:
    for workload in ("pubsub-64B", "request-reply-64B", "publish-batch-64B"):
        measure("ringbroker-remote", workload, lambda: remote_workload(url, workload))
    for workload in ("pubsub-64B", "request-reply-64B"):
        measure("ringbroker-remote-asyncio", workload, lambda: aio_remote_workload(url, workload))


def remote_workload(url: str, workload: str) -> None:
    import ringbroker

    # Two connections: the publisher's (requester's) and the subscriber's (responder's).
    with ringbroker.connect(url, connect_timeout_ms=5000) as a, ringbroker.connect(url, connect_timeout_ms=5000) as b:
        rb_workload("ringbroker-remote", workload, a, b)


def rb_workload(client: str, workload: str, a, b) -> None:
    if workload == "request-reply-64B":
        rb_request_reply(client, a, b)
    elif workload.startswith("publish-only"):
        rb_publish_only(client, a, batch=(workload == "publish-only-batch-64B"))
    else:
        rb_pubsub(client, a, b, batch=(workload == "publish-batch-64B"))


def rb_publish_only(client: str, pub, batch: bool) -> None:
    """The publisher alone (nothing subscribes): what the issue's "embedded publish
    with batch calls" goal measures."""
    workload = "publish-only-batch-64B" if batch else "publish-only-64B"
    subj = subject(workload)
    t0 = now()
    sent, refused = rb_publish_flood(pub, subj, batch, t0 + SECONDS)
    rate = sent / (now() - t0)
    log(f"{client} {workload}: {sent} published, {rate:,.0f} msgs/s" + (f"; {refused} refused" if refused else ""))
    emit(client, workload, rate, None, None, 0, 0)   # nothing is received: no loss to show


# -- nats-py (asyncio) -----------------------------------------------------------------

async def nats_connect(url: str, errors: dict):
    import nats

    async def on_error(e: Exception) -> None:
        name = type(e).__name__
        errors[name] = errors.get(name, 0) + 1

    # pending_size: nats-py buffers publishes and writes when its flusher runs or the
    # buffer passes this size (the default, 2 MiB, amortises the writes well).
    # (nats-py retries a refused first connect whatever allow_reconnect says: bounded.)
    return await asyncio.wait_for(
        nats.connect(url, connect_timeout=5, allow_reconnect=False, max_reconnect_attempts=1,
                     error_cb=on_error, pending_size=2 * 1024 * 1024), 15)


async def nats_publish_flood(nc, subj: str, deadline: float) -> int:
    """Publishes PAYLOAD on ``subj`` until ``deadline`` or the cap, then flushes (inside
    the time measured). Returns how many were published."""
    publish = nc.publish
    sent = 0
    while sent < PUBSUB_CAP and now() < deadline:
        for _ in range(CHUNK):
            await publish(subj, PAYLOAD)
        sent += CHUNK
    await nc.flush(timeout=30)
    return sent


async def nats_pubsub(url: str) -> None:
    errors: dict = {}
    sub_nc = await nats_connect(url, errors)
    pub_nc = await nats_connect(url, errors)
    try:
        subj = subject("pubsub-64B")
        tally = Tally()

        async def on_message(msg) -> None:
            tally.nbytes += len(msg.data)
            tally.received += 1
            tally.last = now()

        # Default pending limits of a subscription (512k messages, 128 MiB): past them
        # nats-py drops and reports a SlowConsumerError.
        await sub_nc.subscribe(subj, cb=on_message)
        await sub_nc.flush()          # the server has the subscription
        t0 = now()
        sent = await nats_publish_flood(pub_nc, subj, t0 + SECONDS)
        published = now()
        await await_drain(tally, sent)
        extra = published_rate(sent, t0, published)
        if errors:
            extra += f"; client errors {errors}"
        report_pubsub("nats", "pubsub-64B", tally, t0, sent, extra)
    finally:
        await nats_close(pub_nc)
        await nats_close(sub_nc)


async def nats_request_reply(url: str) -> None:
    import nats.errors

    errors: dict = {}
    resp_nc = await nats_connect(url, errors)
    req_nc = await nats_connect(url, errors)
    try:
        subj = subject("request-reply-64B")

        async def echo(msg) -> None:
            await msg.respond(msg.data)

        await resp_nc.subscribe(subj, cb=echo)
        await resp_nc.flush()
        request = req_nc.request
        requests = Requests("nats")
        while requests.more():
            requests.begin()
            try:
                reply = await request(subj, PAYLOAD, timeout=REQUEST_TIMEOUT_S)
            except nats.errors.TimeoutError:
                if requests.timed_out():
                    break
                continue
            requests.replied(reply.data)
        requests.stop()
        requests.report(f"; client errors {errors}" if errors else "")
    finally:
        await nats_close(req_nc)
        await nats_close(resp_nc)


async def nats_close(nc) -> None:
    try:
        await asyncio.wait_for(nc.close(), 10)
    except Exception as e:  # noqa: BLE001
        log(f"nats: close: {e!r}")


async def nats_publish_only(url: str) -> None:
    errors: dict = {}
    nc = await nats_connect(url, errors)
    try:
        subj = subject("publish-only-64B")
        t0 = now()
        sent = await nats_publish_flood(nc, subj, t0 + SECONDS)
        rate = sent / (now() - t0)
        log(f"nats publish-only-64B: {sent} published, {rate:,.0f} msgs/s"
            + (f"; client errors {errors}" if errors else ""))
        emit("nats", "publish-only-64B", rate, None, None, 0, 0)
    finally:
        await nats_close(nc)


def run_nats(url: str) -> None:
    measure("nats", "pubsub-64B", lambda: asyncio.run(asyncio.wait_for(nats_pubsub(url), HARD_LIMIT_S - 10)))
    measure("nats", "publish-only-64B",
            lambda: asyncio.run(asyncio.wait_for(nats_publish_only(url), HARD_LIMIT_S - 10)))
    measure("nats", "request-reply-64B",
            lambda: asyncio.run(asyncio.wait_for(nats_request_reply(url), HARD_LIMIT_S - 10)))


# -- pika (blocking connections, a thread each) -----------------------------------------

def pika_params(url: str):
    import pika

    params = pika.URLParameters(url)
    params.socket_timeout = 5
    params.blocked_connection_timeout = 30
    params.connection_attempts = 1
    return params


class PikaConsumer(threading.Thread):
    """A connection of its own consuming one queue with auto-ack in its thread
    (``start_consuming``); ``setup(channel)`` declares what it needs and returns the
    queue and callback. ``stop()`` ends it from another thread."""

    def __init__(self, url: str, setup, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.url, self.setup = url, setup
        self.ready = threading.Event()
        self.queue = None
        self.error = None
        self.conn = None
        self.channel = None

    def run(self) -> None:
        import pika

        try:
            self.conn = pika.BlockingConnection(pika_params(self.url))
            self.channel = self.conn.channel()
            self.queue, callback = self.setup(self.channel)
            self.channel.basic_consume(self.queue, callback, auto_ack=True)
            self.ready.set()
            self.channel.start_consuming()
        except Exception as e:  # noqa: BLE001
            self.error = e
        finally:
            self.ready.set()
            try:
                if self.conn is not None and self.conn.is_open:
                    self.conn.close()
            except Exception:  # noqa: BLE001
                pass

    def stop(self) -> None:
        if self.conn is not None and self.conn.is_open and self.is_alive():
            try:
                self.conn.add_callback_threadsafe(self.channel.stop_consuming)
            except Exception as e:  # noqa: BLE001
                log(f"pika: stop: {e!r}")
        self.join(10)


def rabbit_pubsub(url: str) -> None:
    tally = Tally()

    def on_message(_ch, _method, _props, body) -> None:
        tally.nbytes += len(body)
        tally.received += 1
        tally.last = now()

    def setup(ch):
        # An exclusive auto-delete server-named queue, reached through the default exchange.
        q = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
        return q, on_message

    consumer = PikaConsumer(url, setup, "rabbitmq-consumer")
    consumer.start()
    if not consumer.ready.wait(30) or consumer.error:
        raise RuntimeError(f"rabbitmq consumer did not start: {consumer.error!r}")
    try:
        sent, t0, published = pika_publish(url, consumer.queue)
        wait_drain(tally, sent)
    finally:
        consumer.stop()
    if consumer.error:
        raise consumer.error
    report_pubsub("rabbitmq", "pubsub-64B", tally, t0, sent, published_rate(sent, t0, published))


def pika_publish(url: str, queue: str) -> tuple:
    """Publishes to ``queue`` through the default exchange as fast as pika goes: an
    asynchronous SelectConnection (pika's publisher pattern; a BlockingConnection
    writes and polls the socket on every basic_publish, some 5 times slower), in
    chunks from ioloop callbacks, pausing while more than WRITE_BUFFER_MAX bytes are
    unsent (RabbitMQ's flow control stops reading). Ends by closing the connection,
    which completes once the server has taken every frame before the close: the
    flush. Returns (sent, first publish, flushed)."""
    import pika

    WRITE_BUFFER_MAX = 4 << 20
    state = {"sent": 0, "t0": 0.0, "end": 0.0, "error": None}

    def on_open(conn) -> None:
        conn.channel(on_open_callback=lambda channel: start(conn, channel))

    def start(conn, channel) -> None:
        publish = channel.basic_publish
        unsent = getattr(conn, "_get_write_buffer_size", lambda: 0)
        state["t0"] = now()
        deadline = state["t0"] + SECONDS

        def pump() -> None:
            if state["sent"] >= PUBSUB_CAP or now() >= deadline:
                state["end"] = now()
                conn.close()
                return
            if unsent() > WRITE_BUFFER_MAX:
                conn.ioloop.call_later(0.001, pump)
                return
            for _ in range(CHUNK):
                publish("", queue, PAYLOAD)
            state["sent"] += CHUNK
            conn.ioloop.call_later(0, pump)

        pump()

    def on_open_error(conn, error) -> None:
        state["error"] = error
        conn.ioloop.stop()

    def on_close(conn, reason) -> None:
        if not state["end"]:
            state["error"] = reason
        conn.ioloop.stop()

    conn = pika.SelectConnection(pika_params(url), on_open_callback=on_open,
                                 on_open_error_callback=on_open_error, on_close_callback=on_close)
    # Never hang: past the cap and a margin, stop the loop whatever it does.
    conn.ioloop.call_later(SECONDS + 60, conn.ioloop.stop)
    conn.ioloop.start()
    if state["error"] is not None or not state["end"]:
        raise RuntimeError(f"rabbitmq publisher: {state['error']!r}")
    return state["sent"], state["t0"], now()


def rabbit_request_reply(url: str) -> None:
    import pika

    rpc_queue = subject("request-reply-64B")

    def setup(ch):
        def on_request(channel, _method, props, body) -> None:
            channel.basic_publish("", props.reply_to, body,
                                  pika.BasicProperties(correlation_id=props.correlation_id))

        ch.queue_declare(rpc_queue, exclusive=True, auto_delete=True)
        return rpc_queue, on_request

    responder = PikaConsumer(url, setup, "rabbitmq-responder")
    responder.start()
    if not responder.ready.wait(30) or responder.error:
        raise RuntimeError(f"rabbitmq responder did not start: {responder.error!r}")
    conn = pika.BlockingConnection(pika_params(url))
    requests = Requests("rabbitmq")
    try:
        ch = conn.channel()
        box: list = []

        def on_reply(_ch, _method, props, body) -> None:
            box.append((props.correlation_id, body))

        # Direct reply-to: consume the pseudo-queue (no ack) before publishing with it.
        ch.basic_consume("amq.rabbitmq.reply-to", on_reply, auto_ack=True)
        publish = ch.basic_publish
        process = conn.process_data_events
        while requests.more():
            requests.begin()
            corr = str(requests.sent)
            publish("", rpc_queue, PAYLOAD,
                    pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id=corr))
            give_up = now() + REQUEST_TIMEOUT_S
            got = None
            while got is None:
                left = give_up - now()
                if left <= 0:
                    break
                process(time_limit=left)    # returns once something was dispatched
                while box:
                    c, body = box.pop()
                    if c == corr:
                        got = body
            if got is None:
                if requests.timed_out():
                    break
                continue
            requests.replied(got)
        requests.stop()
    finally:
        responder.stop()
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass
    if responder.error:
        raise responder.error
    requests.report()


def run_rabbitmq(url: str) -> None:
    measure("rabbitmq", "pubsub-64B", lambda: rabbit_pubsub(url))
    measure("rabbitmq", "request-reply-64B", lambda: rabbit_request_reply(url))


# -- driver -----------------------------------------------------------------------------

def measure(client: str, workload: str, body) -> None:
    """Runs one measurement under the watchdog: past HARD_LIMIT_S the process dumps
    its threads' stacks to stderr and exits (non-zero) rather than hang. A failure is
    logged (no line on stdout) and the next measurement runs."""
    log(f"{client} {workload}: {SECONDS:g} s")
    faulthandler.dump_traceback_later(HARD_LIMIT_S, exit=True)
    try:
        body()
    except Exception as e:  # noqa: BLE001
        log(f"{client} {workload} FAILED: {e!r}")
        FAILURES.append((client, workload))
    finally:
        faulthandler.cancel_dump_traceback_later()


def main() -> int:
    rb_url = os.environ.get("RINGBROKER_URL", "")
    nats_url = os.environ.get("NATS_URL", "")
    amqp_url = os.environ.get("AMQP_URL", "")
    import ringbroker

    log(f"python {sys.version.split()[0]}, ringbroker {ringbroker.__version__}, BENCH_SECONDS={SECONDS:g}, "
        f"embedded pin_to_cores={'default' if PIN is None else PIN}")
    run_ringbroker_embedded()
    if rb_url:
        run_ringbroker_remote(rb_url)
    else:
        log("RINGBROKER_URL unset: ringbroker-remote skipped")
    if nats_url:
        run_nats(nats_url)
    else:
        log("NATS_URL unset: nats skipped")
    if amqp_url:
        run_rabbitmq(amqp_url)
    else:
        log("AMQP_URL unset: rabbitmq skipped")
    if FAILURES:
        log(f"failed: {FAILURES}")
    # Non-zero only if nothing was measured: run.sh drops a failed run's lines whole.
    return 0 if EMITTED[0] else 1


if __name__ == "__main__":
    sys.exit(main())
