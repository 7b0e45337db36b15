"""ringbroker.aio: receiving driven by the consumers' eventfds, publishes and requests
resolved from the handle's completion eventfd, in one event loop; cancellation leaks
no reader and loses no message. Embedded and remote."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import ringbroker
from ringbroker import aio

WAIT = 5.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_a_consumer_and_a_request_reply_server_in_one_loop(broker, ns):
    async def main() -> None:
        b = aio.AsyncBroker(broker)
        service = await b.subscribe(f"{ns}.svc.upper", "servers")
        events = await b.subscribe(f"{ns}.events.>")
        seen: list = []

        async def serve() -> None:
            async for req in service:
                b.respond(req, req.bytes().upper())

        async def listen() -> None:
            async for m in events.messages(idle_timeout=1.0):
                seen.append(m.text())

        tasks = [asyncio.create_task(serve()), asyncio.create_task(listen())]
        replies = await asyncio.gather(*(b.request(f"{ns}.svc.upper", f"r{i}", timeout=WAIT) for i in range(50)))
        assert [r.text() for r in replies] == [f"R{i}" for i in range(50)]
        b.publish_batch([(f"{ns}.events.x", str(i)) for i in range(20)])
        b.publish(f"{ns}.events.y", b"last")
        await tasks[1]
        assert seen == [str(i) for i in range(20)] + ["last"]
        service.close()  # ends the server's async for
        await tasks[0]
        assert b._pending == {}
        await b.aclose()
        assert not broker.closed  # not owned: the broker stays open
        aio.AsyncBroker(broker)  # a new one may attach after aclose

    run(main())


def test_cancelling_a_receive_leaks_nothing_and_loses_nothing(broker, ns):
    async def main() -> None:
        b = aio.AsyncBroker(broker)
        sub = await b.subscribe(f"{ns}.cancel")
        loop = asyncio.get_running_loop()
        for _ in range(3):
            waiting = asyncio.create_task(sub.next())
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        assert loop.remove_reader(sub.sync.fileno()) is False  # no reader left behind
        with pytest.raises(ringbroker.Timeout):
            await sub.next(timeout=0.05)
        b.publish_batch([(f"{ns}.cancel", str(i)) for i in range(3)])
        first = await sub.next(WAIT)  # takes all three; two stay buffered
        waiting = asyncio.create_task(sub.next())
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        rest = [await sub.next(WAIT), await sub.next(WAIT)]
        assert [m.text() for m in [first, *rest]] == ["0", "1", "2"]
        assert await sub.fetch(8, 0.05) == []
        sub.close()
        with pytest.raises(ringbroker.ShuttingDown):
            await sub.next(0)
        await b.aclose()

    run(main())


def test_concurrent_receives_on_one_consumer_are_refused(broker, ns):
    async def main() -> None:
        async with aio.AsyncBroker(broker) as b:
            sub = await b.subscribe(f"{ns}.two")
            first = asyncio.create_task(sub.next())
            await asyncio.sleep(0.01)
            with pytest.raises(RuntimeError):
                await sub.next(0.1)
            close_later = asyncio.get_running_loop().call_later(0.05, sub.close)
            with pytest.raises(ringbroker.ShuttingDown):
                await first  # close() wakes the waiting receive
            close_later.cancel()
            assert sub.closed

    run(main())


def test_async_stream_publishes_and_consumers(broker, ns):
    async def main() -> None:
        b = aio.AsyncBroker(broker)
        await b.create_stream(f"{ns}-s", [f"{ns}.s.>"], partitions=2)
        r = await b.stream_publish(f"{ns}.s.a", b"one", key="k", msg_id="m1")
        again = await b.stream_publish(f"{ns}.s.a", b"one", key="k", msg_id="m1")
        assert again.duplicate and (again.partition, again.offset) == (r.partition, r.offset)
        results = await b.stream_publish_batch([(f"{ns}.s.b", str(i), b"k2") for i in range(10)])
        assert [x.offset for x in results] == list(range(results[0].offset, results[0].offset + 10))
        assert await b.stream_publish_batch([]) == []
        b.stream_publish_nowait([(f"{ns}.s.c", b"nowait")])
        with pytest.raises(ringbroker.NotFound):
            await b.stream_publish(f"{ns}.uncaptured", b"x")
        await b.create_consumer(f"{ns}-s", "d", deliver="all")
        info = await b.stream_info(f"{ns}-s")
        assert info.partitions == 2
        c = await b.consume_stream(f"{ns}-s", "d")
        got = []
        async for m in c.messages(idle_timeout=1.0):
            got.append(m)
        assert sorted(m.text() for m in got) == sorted(["one", "nowait"] + [str(i) for i in range(10)])
        c.nack(got[0])
        again_msg = await c.next(WAIT)
        assert again_msg.delivery_count == 2
        c.ack(again_msg)
        c.ack_batch(got[1:-1])
        c.commit(got[-1])
        c.close()
        await b.aclose()

    run(main())


def test_async_exchange_publishes_and_queue_consumer(broker, ns):
    async def main() -> None:
        b = aio.AsyncBroker(broker)
        q = f"{ns}-aq"
        await b.declare_queue(q)
        assert await b.exchange_publish("", q, b"j1", persistent=True) == 1
        confirms = await b.exchange_publish_batch([("", q, b"j2"), ("", q, b"j3")])
        assert [c.queues for c in confirms] == [1, 1]
        with pytest.raises(ringbroker.Unroutable) as err:
            await b.exchange_publish_batch([("", q, b"j4"), ("", f"{ns}-none", b"x")], mandatory=True)
        assert [c.status for c in err.value.results] == [0, ringbroker.Unroutable.code]
        b.exchange_publish_nowait([("", q, b"j5")])
        c = await b.consume_queue(q, prefetch=2)
        got = []
        while len(got) < 5:
            m = await c.next(WAIT)
            got.append(m.text())
            c.ack_tag(m.delivery_tag)
        assert sorted(got) == ["j1", "j2", "j3", "j4", "j5"]
        assert (await b.queue_info(q)).messages == 0
        c.close()
        await b.aclose()

    run(main())


def test_async_request_errors_and_cancellation(broker, ns):
    async def main() -> None:
        b = aio.AsyncBroker(broker)
        with pytest.raises(ringbroker.NoResponders):
            await b.request(f"{ns}.nobody", b"x")
        silent = await b.subscribe(f"{ns}.silent")
        with pytest.raises(ringbroker.Timeout):
            await b.request(f"{ns}.silent", b"x", timeout=0.1)
        pending = asyncio.create_task(b.request(f"{ns}.silent", b"y", timeout=0.2))
        await asyncio.sleep(0.02)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        for _ in range(100):  # the completion still comes and is dropped
            if not b._pending:
                break
            await asyncio.sleep(0.01)
        assert b._pending == {}
        with pytest.raises(ValueError):
            await b.request(f"{ns}.silent", b"x", timeout=-1)
        with pytest.raises(ringbroker.InvalidArgument):
            await b.request("bad subject", b"x")
        with pytest.raises(RuntimeError):
            aio.AsyncBroker(broker)  # one per handle
        silent.close()
        await b.aclose()
        with pytest.raises(ringbroker.ShuttingDown):
            await b.request(f"{ns}.silent", b"x")

    run(main())


def test_open_and_connect_own_their_broker(mode, tmp_path, request, ns):
    async def main() -> None:
        if mode == "embedded":
            b = await aio.open(str(tmp_path / "aio"), 1, pin_to_cores=False)
        else:
            b = await aio.connect(request.getfixturevalue("daemon").url, reconnect=False)
        async with b:
            assert b.embedded == (mode == "embedded")
            sub = await b.subscribe(f"{ns}.own")
            b.publish(f"{ns}.own", b"x")
            assert (await sub.next(WAIT)).text() == "x"
        assert b.sync.closed

    run(main())


def test_closing_the_sync_broker_fails_pending_futures(tmp_path):
    async def main() -> None:
        broker = ringbroker.open(str(tmp_path / "c"), 1, pin_to_cores=False)
        b = aio.AsyncBroker(broker)
        sub = await b.subscribe("never.answered")
        pending = asyncio.create_task(b.request("never.answered", b"", timeout=10))
        await asyncio.sleep(0.05)
        sub.close()
        broker.close()
        with pytest.raises(ringbroker.ShuttingDown):
            await pending

    run(main())


def test_a_later_async_broker_gets_no_late_completion_of_a_detached_one(broker, ns):
    # The completion queue is the handle's: a second AsyncBroker on the same handle
    # must not receive the late answer to the first one's request (tokens are unique
    # per handle); that answer is dropped and its reply freed.
    stop = threading.Event()
    sub = broker.subscribe(f"{ns}.svc")

    def responder() -> None:
        while not stop.is_set():
            try:
                m = sub.next(timeout=0.05)
            except ringbroker.Timeout:
                continue
            except ringbroker.RingbrokerError:
                return
            time.sleep(0.3)  # answers late
            broker.respond(m, b"reply to " + m.bytes())

    th = threading.Thread(target=responder)
    th.start()

    async def main() -> None:
        first = aio.AsyncBroker(broker)
        t = asyncio.ensure_future(first.request(f"{ns}.svc", b"first", timeout=WAIT))
        await asyncio.sleep(0.05)
        t.cancel()
        await first.aclose()  # the cancelled request is done: detaches at once
        second = aio.AsyncBroker(broker)
        r = await second.request(f"{ns}.svc", b"second", timeout=WAIT)
        assert r.bytes() == b"reply to second"
        results = await second.stream_publish_batch([])  # nothing pending is confused
        assert results == [] and second._pending == {}
        await second.aclose()

    try:
        run(main())
    finally:
        stop.set()
        th.join(WAIT)
        sub.close()


def test_buffered_messages_are_returned_before_the_consumer_s_end(broker, ns):
    # Messages an AsyncConsumer holds are returned even when the consumer ended
    # meanwhile; the error comes with the next receive.
    async def main() -> None:
        b = aio.AsyncBroker(broker)
        sub = await b.subscribe(f"{ns}.buf")
        b.publish_batch([(f"{ns}.buf", str(i)) for i in range(3)])
        await asyncio.sleep(0.3)  # all three arrive
        first = await sub.next(WAIT)  # takes all three; two stay buffered
        assert len(sub._buffer) == 2
        sub.sync.close()  # the consumer ends with two messages buffered here
        rest = await sub.fetch(8, 0.1)
        assert [m.text() for m in [first, *rest]] == ["0", "1", "2"]
        with pytest.raises(ringbroker.ShuttingDown):
            await sub.fetch(8, 0.1)
        await b.aclose()

    run(main())


def test_closing_the_broker_from_an_executor_ends_a_waiting_receive(mode, tmp_path, request, ns):
    # aclose() of an owning AsyncBroker closes the broker in an executor thread, which
    # closes the consumers: the loop stops watching the fd first and the waiting
    # receive ends with ShuttingDown.
    async def main() -> None:
        if mode == "embedded":
            b = await aio.open(str(tmp_path / "aio"), 1, pin_to_cores=False)
        else:
            b = await aio.connect(request.getfixturevalue("daemon").url, reconnect=False)
        sub = await b.subscribe(f"{ns}.closing")
        fd, guard = sub.sync.fileno(), sub.sync._guard
        selector_map = asyncio.get_running_loop()._selector.get_map()  # type: ignore[attr-defined]
        watched_when_freed: list = []
        real_free = guard._free

        def free(ptr) -> None:  # in the executor thread
            watched_when_freed.append(fd in selector_map)
            real_free(ptr)

        guard._free = free
        waiting = asyncio.ensure_future(sub.next())
        await asyncio.sleep(0.1)
        await b.aclose()
        with pytest.raises(ringbroker.ShuttingDown):
            await asyncio.wait_for(waiting, 3)
        assert watched_when_freed == [False]  # the loop let go of the fd before it closed
        assert sub.closed
        assert asyncio.get_running_loop().remove_reader(sub.sync.fileno()) is False

    run(main())
