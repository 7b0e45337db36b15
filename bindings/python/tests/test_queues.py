"""Exchanges and queues: declarations, bindings of every exchange kind, publishes with
properties and confirms, consumers with prefetch, ack / nack / reject by message and by
tag, dead-lettering, purge and the error paths, embedded and remote."""

from __future__ import annotations

import time

import pytest

import ringbroker
from ringbroker import QueueMessage
from ringbroker.message import QUEUE

WAIT = 5.0


def eventually(read, want=ringbroker.QueueInfo(0, 0, 0), limit_s: float = WAIT):
    """``read()`` once it equals ``want``, or its last value after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    value = read()
    while value != want and time.monotonic() < deadline:
        time.sleep(0.01)
        value = read()
    return value


def test_declare_publish_consume_ack(broker, ns):
    q = f"{ns}-jobs"
    info = broker.declare_queue(q, durable=True, max_priority=5)
    assert info == ringbroker.QueueInfo(0, 0, 0)
    assert broker.declare_queue(q, durable=True, max_priority=5).messages == 0  # idempotent
    reached = broker.exchange_publish("", q, b"job-1", headers={"h": "v"}, priority=3, persistent=True,
                                      mandatory=True)
    assert reached == 1
    assert broker.queue_info(q).messages == 1
    with broker.consume_queue(q, prefetch=1) as c:
        m = c.next(WAIT)
        assert (m.kind, m.text(), m.queue, m.exchange, m.routing_key, m.subject) == (QUEUE, "job-1", q, "", q, q)
        assert (m.priority, m.persistent, m.redelivered, m.headers) == (3, True, False, {"h": b"v"})
        assert m.delivery_tag >= 1 and m.partition is None and m.delivery_count is None
        assert broker.queue_info(q) == ringbroker.QueueInfo(0, 1, 1)
        m.ack()
    # A remote consumer's cancel travels after close() returns: poll with a deadline.
    assert eventually(lambda: broker.queue_info(q)) == ringbroker.QueueInfo(0, 0, 0)
    assert broker.delete_queue(q) == 0
    with pytest.raises(ringbroker.NotFound):
        broker.queue_info(q)


def test_topic_routing_and_bindings(broker, ns):
    ex, eu, audit = f"{ns}-events", f"{ns}-eu", f"{ns}-audit"
    broker.declare_exchange(ex, "topic")
    broker.declare_exchange(ex, "topic")  # idempotent
    with pytest.raises(ringbroker.AlreadyExists):
        broker.declare_exchange(ex, "fanout")
    broker.declare_queue(eu)
    broker.declare_queue(audit)
    broker.bind_queue(eu, ex, "orders.eu.*")
    broker.bind_queue(audit, ex, "orders.#")
    confirms = broker.exchange_publish_batch([
        QueueMessage(ex, "orders.eu.created", b"a"),
        (ex, "orders.us.created", b"b"),
        (ex, "orders", b"c"),
        (ex, "payments.eu.x", b"d"),
    ])
    assert [c.queues for c in confirms] == [2, 1, 1, 0] and all(c.status == 0 for c in confirms)
    assert broker.queue_info(eu).messages == 1 and broker.queue_info(audit).messages == 3
    broker.unbind_queue(audit, ex, "orders.#")
    assert broker.exchange_publish(ex, "orders.eu.x", b"e") == 1
    assert broker.purge_queue(audit) == 3 and broker.purge_queue(eu) == 2
    with pytest.raises(ringbroker.Refused):
        broker.delete_exchange(ex, if_unused=True)
    broker.delete_exchange(ex)
    with pytest.raises(ringbroker.NotFound):
        broker.delete_exchange(ex)
    with pytest.raises(ringbroker.NotFound):
        broker.bind_queue(eu, ex, "x")


def test_fanout_headers_and_exchange_to_exchange(broker, ns):
    fan, hdr, src = f"{ns}-fan", f"{ns}-hdr", f"{ns}-src"
    a, b, h = f"{ns}-a", f"{ns}-b", f"{ns}-h"
    broker.declare_exchange(fan, "fanout")
    broker.declare_exchange(hdr, "headers")
    broker.declare_exchange(src, "direct")
    for q in (a, b, h):
        broker.declare_queue(q)
    broker.bind_queue(a, fan)
    broker.bind_queue(b, fan)
    broker.bind_queue(h, hdr, arguments={"x-match": "all", "region": "eu"})
    broker.bind_exchange(fan, src, "fan-out")
    assert broker.exchange_publish(src, "fan-out", b"1") == 2
    assert broker.exchange_publish(hdr, "", b"2", headers={"region": "eu"}) == 1
    assert broker.exchange_publish(hdr, "", b"3", headers={"region": "us"}) == 0
    assert [broker.queue_info(q).messages for q in (a, b, h)] == [1, 1, 1]


def test_mandatory_unroutable_and_nowait(broker, ns):
    q = f"{ns}-nw"
    broker.declare_queue(q)
    with pytest.raises(ringbroker.Unroutable) as err:
        broker.exchange_publish_batch([("", q, b"ok"), ("", f"{ns}-nowhere", b"lost")], mandatory=True)
    assert [c.status for c in err.value.results] == [0, ringbroker.Unroutable.code]
    assert err.value.results[0].queues == 1
    assert broker.exchange_publish("", f"{ns}-nowhere", b"dropped") == 0  # not mandatory
    broker.exchange_publish_nowait([("", q, b"n1"), ("", q, b"n2")])
    assert broker.exchange_publish_batch([]) == []
    with broker.consume_queue(q, no_ack=True) as c:
        got = []
        for _ in range(20):
            got += c.fetch(8, 0.2)
            if len(got) >= 3:
                break
        assert sorted(m.text() for m in got) == ["n1", "n2", "ok"]
    with pytest.raises(ringbroker.NotFound):
        broker.exchange_publish(f"{ns}-no-exchange", "x", b"")
    with pytest.raises(ValueError):
        broker.exchange_publish("", q, b"", priority=300)


def test_prefetch_nack_requeue_and_tags(broker, ns):
    q = f"{ns}-work"
    broker.declare_queue(q)
    broker.exchange_publish_batch([("", q, str(i)) for i in range(3)])
    with broker.consume_queue(q, prefetch=1) as c:
        first = c.next(WAIT)
        assert c.try_next() is None  # prefetch 1: nothing more until acked
        with pytest.raises(ringbroker.InvalidArgument):
            first.nack(requeue=True, delay=1)  # queues take no delay
        first.nack(requeue=True)
        again = c.next(WAIT)
        assert again.text() == first.text() and again.redelivered
        c.ack_tag(again.delivery_tag)
        second = c.next(WAIT)
        c.nack_tag(second.delivery_tag, requeue=True)
        second = c.next(WAIT)
        assert second.redelivered
        c.ack_tag(second.delivery_tag, multiple=True)
        third = c.next(WAIT)
        with pytest.raises(ringbroker.WrongKind):
            third.commit()  # a stream call
        c.ack(third)
    assert broker.queue_info(q).messages == 0


def test_reject_dead_letters(broker, ns):
    dlx, dead, work = f"{ns}-dlx", f"{ns}-dead", f"{ns}-dlwork"
    broker.declare_exchange(dlx, "fanout")
    broker.declare_queue(dead)
    broker.bind_queue(dead, dlx)
    broker.declare_queue(work, dead_letter_exchange=dlx)
    broker.exchange_publish("", work, b"poison")
    with broker.consume_queue(work) as c:
        c.next(WAIT).nack(requeue=False)
    with broker.consume_queue(dead) as d:
        m = d.next(WAIT)
        assert m.text() == "poison"
        d.ack_batch([m])


def test_queue_delete_conditions_and_errors(broker, ns):
    q = f"{ns}-del"
    broker.declare_queue(q)
    broker.exchange_publish("", q, b"x")
    with pytest.raises(ringbroker.Refused):
        broker.delete_queue(q, if_empty=True)
    with broker.consume_queue(q):
        with pytest.raises(ringbroker.Refused):
            broker.delete_queue(q, if_unused=True)
    assert broker.delete_queue(q) == 1
    with pytest.raises(ringbroker.NotFound):
        broker.consume_queue(q)
    with pytest.raises(ringbroker.NotFound):
        broker.purge_queue(q)
    with pytest.raises(ringbroker.InvalidArgument):
        broker.declare_queue(f"{ns}-bad", overflow="explode")
    with pytest.raises(ringbroker.InvalidArgument):
        broker.declare_exchange(f"{ns}-bad", "circular")
