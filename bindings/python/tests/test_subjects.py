"""Subjects: publish/subscribe with wildcards and queue groups, batches, request-reply,
and the message object's contents and lifetime, embedded and remote."""

from __future__ import annotations

import gc
import select
import threading
import time

import pytest

import ringbroker
from ringbroker import SubjectMessage
from ringbroker.message import SUBJECT

WAIT = 5.0


def test_publish_subscribe_wildcards(broker, ns):
    with broker.subscribe(f"{ns}.*.created") as one, broker.subscribe(f"{ns}.>") as rest:
        broker.publish(f"{ns}.order.created", b"o1")
        broker.publish(f"{ns}.order.paid", "o1 paid")
        m = one.next(WAIT)
        assert (m.subject, m.bytes(), m.kind) == (f"{ns}.order.created", b"o1", SUBJECT)
        assert [x.text() for x in (rest.next(WAIT), rest.next(WAIT))] == ["o1", "o1 paid"]
        assert one.try_next() is None
        assert m.key is None and m.offset is None and m.partition is None and m.delivery_tag is None
        assert m.reply is None and m.headers == {}


def test_message_data_is_a_readonly_view_that_outlives_release(broker, ns):
    with broker.subscribe(f"{ns}.data") as sub:
        broker.publish(f"{ns}.data", bytearray(b"payload-bytes"))
        m = sub.next(WAIT)
        view = m.data
        assert isinstance(view, memoryview) and view.readonly
        assert m.data is view  # one view per message, no copy per access
        tail = view[8:]
        m.release()
        assert m.released
        with pytest.raises(ringbroker.ShuttingDown):
            m.data
        with pytest.raises(ringbroker.ShuttingDown):
            m.subject
        del view
        gc.collect()
        broker.publish(f"{ns}.data", b"x" * 13)  # reuse of freed memory would show here
        sub.next(WAIT).release()
        assert bytes(tail) == b"bytes"
        m.release()  # idempotent


def test_message_context_manager_and_empty_payload(broker, ns):
    with broker.subscribe(f"{ns}.empty") as sub:
        broker.publish(f"{ns}.empty")
        with sub.next(WAIT) as m:
            assert m.bytes() == b"" and len(m) == 0 and m.data.nbytes == 0
            assert "subject" in repr(m)
        assert m.released and "released" in repr(m)


def test_queue_group_shares_messages(broker, ns):
    with broker.subscribe(f"{ns}.jobs", "workers") as a, broker.subscribe(f"{ns}.jobs", "workers") as b:
        broker.publish_batch([(f"{ns}.jobs", str(i)) for i in range(40)])
        got = a.fetch(64, 1.0) + b.fetch(64, 1.0)
        for _ in range(20):
            if len(got) >= 40:
                break
            got += a.fetch(64, 0.1) + b.fetch(64, 0.1)
        assert sorted(int(m.text()) for m in got) == list(range(40))


def test_publish_batch_order_headers_reply(broker, ns):
    with broker.subscribe(f"{ns}.b.>") as sub:
        broker.publish_batch([
            SubjectMessage(f"{ns}.b.x", b"a"),
            SubjectMessage(f"{ns}.b.x", b"b", headers={"trace": "t1"}),
            (f"{ns}.b.x", memoryview(b"c"), "answers.here"),
            (f"{ns}.b.y", b"d", None, [("h", b"1"), ("h", b"2")]),
        ])
        msgs = [sub.next(WAIT) for _ in range(4)]
        assert [m.text() for m in msgs] == ["a", "b", "c", "d"]
        assert msgs[1].headers == {"trace": b"t1"}
        assert msgs[2].reply == "answers.here"
        assert msgs[3].header_items() == [("h", b"1"), ("h", b"2")]
        broker.publish(f"{ns}.b.z", b"e", reply="r.1", headers={"k": b"v"})
        m = sub.next(WAIT)
        assert (m.reply, m.headers) == ("r.1", {"k": b"v"})
        broker.publish_batch([])  # nothing to do


def test_publish_batch_with_one_bad_subject_publishes_nothing(broker, ns):
    with broker.subscribe(f"{ns}.>") as sub:
        with pytest.raises(ringbroker.InvalidArgument) as err:
            broker.publish_batch([(f"{ns}.ok", b"1"), ("bad subject", b"2")])
        assert err.value.code == 9 and err.value.status == "INVALID_ARGUMENT" and err.value.message
        with pytest.raises(ringbroker.Timeout):
            sub.next(0.2)


def test_invalid_arguments(broker):
    with pytest.raises(ringbroker.InvalidArgument) as err:
        broker.publish("bad subject", b"x")
    assert isinstance(err.value, ValueError)
    with pytest.raises(ringbroker.InvalidArgument):
        broker.subscribe("")
    with pytest.raises(TypeError):
        broker.publish(b"bytes-subject", b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        broker.request("a.b", b"", timeout=-1)
    with pytest.raises(ValueError):
        broker.request("a.b", b"", timeout=None)  # type: ignore[arg-type]  # always a deadline


def test_request_reply_and_respond(broker, ns):
    service = f"{ns}.svc.echo"
    with broker.subscribe(service, "echoers") as sub:
        def serve() -> None:
            for _ in range(2):
                req = sub.next(WAIT)
                if req.text() == "via-broker":
                    broker.respond(req, b"pong:" + req.bytes())
                else:
                    req.respond("pong:" + req.text())

        t = threading.Thread(target=serve)
        t.start()
        assert broker.request(service, b"via-broker", timeout=WAIT).text() == "pong:via-broker"
        reply = broker.request(service, "via-msg", timeout=WAIT)
        t.join(WAIT)
        assert reply.text() == "pong:via-msg" and reply.kind == SUBJECT
        with pytest.raises(ringbroker.WrongKind):
            reply.ack()  # a reply came from no consumer


def test_request_errors(broker, ns):
    with pytest.raises(ringbroker.NoResponders) as err:
        broker.request(f"{ns}.nobody", b"x", timeout=WAIT)
    assert err.value.code == ringbroker.NoResponders.code == 10 and "responders" in err.value.message
    with broker.subscribe(f"{ns}.silent") as sub:
        with pytest.raises(ringbroker.Timeout) as err:
            broker.request(f"{ns}.silent", b"x", timeout=0.1)
        assert isinstance(err.value, TimeoutError)
        request = sub.next(WAIT)
        assert request.reply  # the request carried a reply subject
    with broker.subscribe(f"{ns}.plain") as sub:
        broker.publish(f"{ns}.plain", b"p")
        plain = sub.next(WAIT)
        with pytest.raises(ringbroker.InvalidArgument):
            plain.respond(b"nobody asked")


def test_subject_messages_take_no_ack(broker, ns):
    with broker.subscribe(f"{ns}.noack") as sub:
        broker.publish(f"{ns}.noack", b"1")
        m = sub.next(WAIT)
        for call in (m.ack, m.commit, lambda: m.nack(requeue=False)):
            with pytest.raises(ringbroker.WrongKind) as err:
                call()
            assert err.value.code == 101


def test_fetch_timeout_fd_and_iteration(broker, ns):
    with broker.subscribe(f"{ns}.fd") as sub:
        assert sub.try_fetch() == [] and sub.fetch(8, 0.05) == []
        with pytest.raises(ringbroker.Timeout):
            sub.next(0.05)
        # The event-loop contract: after a try_ call found nothing, the fd turns
        # readable when a message comes.
        assert sub.try_fetch() == []
        broker.publish(f"{ns}.fd", b"1")
        readable, _, _ = select.select([sub.fileno()], [], [], WAIT)
        assert readable == [sub.fileno()]
        broker.publish_batch([(f"{ns}.fd", str(i)) for i in range(2, 6)])
        got = []
        for m in sub.messages(idle_timeout=0.3):
            got.append(m.text())
        assert got == ["1", "2", "3", "4", "5"]
        with pytest.raises(ValueError):
            sub.fetch(0)


def test_consumer_close_ends_iteration_and_later_calls(broker, ns):
    sub = broker.subscribe(f"{ns}.closing")
    assert "closing" in repr(sub) and not sub.closed
    received = []

    def drain() -> None:
        for m in sub:  # ends when closed
            received.append(m.text())

    t = threading.Thread(target=drain)
    t.start()
    broker.publish(f"{ns}.closing", b"before")
    for _ in range(100):
        if received:
            break
        t.join(0.05)
    sub.close()
    t.join(WAIT)
    assert not t.is_alive() and received == ["before"]
    assert sub.closed and "closed" in repr(sub)
    with pytest.raises(ringbroker.ShuttingDown):
        sub.next(0)
    sub.close()  # idempotent


def test_a_blocked_receive_releases_the_gil(broker, ns):
    # A receive waiting in C must not hold the GIL: this thread keeps counting while
    # another waits 0.5 s for a message that never comes.
    with broker.subscribe(f"{ns}.gil") as sub:
        done = threading.Event()

        def wait() -> None:
            with pytest.raises(ringbroker.Timeout):
                sub.next(0.5)
            done.set()

        t = threading.Thread(target=wait)
        t.start()
        counted = 0
        while not done.is_set():
            counted += 1
        t.join()
        assert counted > 100_000, counted


def test_a_message_that_cannot_be_made_frees_the_rest_of_its_batch(broker, ns, monkeypatch):
    # If building the Message of one fetched ringbroker_msg_t fails, that one is freed
    # by Message and the ones after it by the consumer: none leaks. (Messages with
    # headers stay C messages: small headerless ones are copied and freed in C.)
    import ringbroker.consumer as consumer_module

    real_lib = consumer_module.lib
    freed: list = []

    class CountingLib:
        def __getattr__(self, name):
            return getattr(real_lib, name)

        def ringbroker_msg_free(self, ptr):
            freed.append(ptr)
            real_lib.ringbroker_msg_free(ptr)

    with broker.subscribe(f"{ns}.leak") as sub:
        broker.publish_batch([(f"{ns}.leak", str(i), None, {"n": str(i)}) for i in range(5)])
        time.sleep(0.3)  # all five arrive
        made = []
        real_wrap = ringbroker.Subscription._wrap

        def flaky_wrap(self, ptr):
            if len(made) == 1:  # the second fails, as Message does: frees it, raises
                real_lib.ringbroker_msg_free(ptr)
                raise MemoryError("no room for a Message")
            made.append(real_wrap(self, ptr))
            return made[-1]

        monkeypatch.setattr(consumer_module, "lib", CountingLib())
        monkeypatch.setattr(ringbroker.Subscription, "_wrap", flaky_wrap)
        with pytest.raises(MemoryError):
            sub.fetch(8, WAIT)
        assert len(made) == 1 and len(freed) == 3  # the third to fifth
        monkeypatch.undo()
        assert sub.try_next() is None  # they were taken (and freed), not left
