"""Streams: definitions, keyed publishes with headers and dedup, durable consumers with
groups, ephemeral consumers, ack / nack / commit, and the error paths, embedded and
remote."""

from __future__ import annotations

import pytest

import ringbroker
from ringbroker import Record
from ringbroker.message import STREAM

WAIT = 5.0


def drain(consumer, want: int, limit_s: float = WAIT):
    """Up to ``want`` messages, fetching until they came or nothing comes for 1 s."""
    got = []
    for _ in range(100):
        batch = consumer.fetch(64, 1.0)
        got += batch
        if not batch or len(got) >= want:
            break
    return got


def test_stream_definition_lifecycle(broker, ns):
    name = f"{ns}-orders"
    broker.create_stream(name, [f"{ns}.orders.>"], partitions=3, durability="always", max_records=10_000)
    broker.create_stream(name, [f"{ns}.orders.>"], partitions=3, durability="always", max_records=10_000)
    info = broker.stream_info(name)
    assert (info.partitions, info.records) == (3, 0)
    with pytest.raises(ringbroker.AlreadyExists):
        broker.create_stream(name, [f"{ns}.orders.>"], partitions=2)
    broker.update_stream(name, [f"{ns}.orders.>"], partitions=3, durability="always", max_records=20_000)
    with pytest.raises(ringbroker.InvalidArgument) as err:
        broker.create_stream(f"{ns}-bad", [f"{ns}.bad.>"], colour="red")
    assert "colour" in err.value.message
    with pytest.raises(ringbroker.NotFound):
        broker.update_stream(f"{ns}-none", [f"{ns}.none.>"])
    broker.delete_stream(name)
    for call in (lambda: broker.stream_info(name), lambda: broker.delete_stream(name)):
        with pytest.raises(ringbroker.NotFound) as err:
            call()
        assert isinstance(err.value, LookupError)


def test_publish_keys_headers_and_replay(broker, ns):
    name = f"{ns}-events"
    broker.create_stream(name, [f"{ns}.ev.>"], partitions=2)
    first = broker.stream_publish(f"{ns}.ev.a", b"e0", key=b"alice", headers={"h": "1"})
    results = broker.stream_publish_batch([
        Record(f"{ns}.ev.a", b"e1", b"alice"),
        (f"{ns}.ev.b", b"e2", "alice", [("h", b"2")]),
        (f"{ns}.ev.c", b"e3"),
    ])
    assert [r.partition for r in results[:2]] == [first.partition] * 2  # one key, one partition
    assert [r.offset for r in results[:2]] == [first.offset + 1, first.offset + 2]
    assert all(r.status == 0 and not r.duplicate for r in results)
    broker.stream_publish_nowait([(f"{ns}.ev.d", b"e4", b"bob")])
    assert broker.stream_publish_batch([]) == []
    with broker.consume_stream(name, deliver="all") as replay:
        got = drain(replay, 5)
        by_body = {m.text(): m for m in got}
        assert sorted(by_body) == ["e0", "e1", "e2", "e3", "e4"]
        e0 = by_body["e0"]
        assert (e0.kind, e0.key, e0.headers, e0.subject) == (STREAM, b"alice", {"h": b"1"}, f"{ns}.ev.a")
        assert (e0.partition, e0.offset, e0.delivery_count) == (first.partition, first.offset, 1)
        assert e0.timestamp_ms > 1_600_000_000_000 and not e0.redelivered
        assert by_body["e3"].key is None and by_body["e4"].key == b"bob"
        replay.ack_batch(got)
    assert broker.stream_info(name).records == 5


def test_msg_id_deduplicates(broker, ns):
    broker.create_stream(f"{ns}-dedup", [f"{ns}.dd.>"], dedup_window_ms=60_000)
    a = broker.stream_publish(f"{ns}.dd.x", b"once", msg_id="id-1")
    b = broker.stream_publish(f"{ns}.dd.x", b"once", msg_id=b"id-1", headers={"other": "x"})
    assert not a.duplicate and b.duplicate and (b.partition, b.offset) == (a.partition, a.offset)
    assert broker.stream_info(f"{ns}-dedup").records == 1


def test_publish_errors(broker, ns):
    with pytest.raises(ringbroker.NotFound):
        broker.stream_publish(f"{ns}.captured.by.nothing", b"x")
    broker.create_stream(f"{ns}-small", [f"{ns}.small"], max_record_bytes=16)
    with pytest.raises(ringbroker.RingbrokerError) as err:
        broker.stream_publish_batch([(f"{ns}.small", b"ok"), (f"{ns}.small", b"x" * 1024)])
    assert isinstance(err.value, ringbroker.Refused)
    # The record over the limit is refused; the other may be refused with it (one
    # append), never silently dropped: every record has its own status.
    assert len(err.value.results) == 2 and err.value.results[1].status == ringbroker.Refused.code
    assert err.value.results[0].status in (0, ringbroker.Refused.code)
    with pytest.raises(ringbroker.Refused):
        broker.stream_publish(f"{ns}.small", b"y" * 1024)
    with pytest.raises(ringbroker.InvalidArgument):
        broker.stream_publish("bad subject", b"x")


def test_durable_consumer_nack_commit_info(broker, ns):
    name = f"{ns}-billing"
    broker.create_stream(name, [f"{ns}.bill.>"], partitions=2)
    broker.stream_publish_batch([(f"{ns}.bill.x", str(i), b"k") for i in range(4)])
    broker.create_consumer(name, "billing", deliver="all", ack_wait_ms=60_000)
    broker.create_consumer(name, "billing", deliver="all", ack_wait_ms=60_000)  # idempotent
    with pytest.raises(ringbroker.AlreadyExists):
        broker.create_consumer(name, "billing", deliver="new")
    with broker.consume_stream(name, "billing") as c:
        got = drain(c, 4)
        assert [m.text() for m in got] == ["0", "1", "2", "3"]  # one key: in order
        got[0].nack(delay=0)
        again = c.next(WAIT)
        assert again.text() == "0" and again.delivery_count == 2 and again.redelivered
        c.ack(again)
        got[1].ack()
        got[3].commit()  # records 2 and 3 of that partition
        info = broker.consumer_info(name, "billing")
        assert info.partitions == 2 and info.pending == 0 and info.assigned == 2
    with pytest.raises(ValueError):
        c.nack(got[2], delay=-1)
    with pytest.raises(ringbroker.ShuttingDown):
        c.ack(got[2])  # the consumer is closed
    with pytest.raises(ValueError):
        broker.consume_stream(name, "billing", deliver="all")
    broker.delete_consumer(name, "billing")
    with pytest.raises(ringbroker.NotFound):
        broker.delete_consumer(name, "billing")
    with pytest.raises(ringbroker.NotFound):
        broker.consumer_info(name, "billing")


def test_consumer_group_shares_partitions(broker, ns):
    name = f"{ns}-group"
    broker.create_stream(name, [f"{ns}.grp.>"], partitions=4)
    broker.create_consumer(name, "g", deliver="all")
    with broker.consume_stream(name, "g") as a, broker.consume_stream(name, "g") as b:
        broker.stream_publish_batch([(f"{ns}.grp.x", str(i), f"key-{i}") for i in range(40)])
        got_a, got_b = [], []
        for _ in range(50):
            got_a += a.fetch(64, 0.1)
            got_b += b.fetch(64, 0.1)
            if len(got_a) + len(got_b) >= 40:
                break
        assert sorted(int(m.text()) for m in got_a + got_b) == list(range(40))
        assert got_a and got_b  # both members have partitions
        assert not {m.partition for m in got_a} & {m.partition for m in got_b}
        a.ack_batch(got_a)
        b.ack_batch(got_b)


def test_ephemeral_consumer_from_an_offset_and_errors(broker, ns):
    name = f"{ns}-eph"
    broker.create_stream(name, [f"{ns}.eph"], partitions=1)
    broker.stream_publish_batch([(f"{ns}.eph", str(i)) for i in range(5)])
    with broker.consume_stream(name, deliver="offset:3", ack="none") as c:
        assert [m.text() for m in drain(c, 2)] == ["3", "4"]
    with pytest.raises(ringbroker.NotFound):
        broker.consume_stream(f"{ns}-no-such-stream", "billing")
    with pytest.raises(ringbroker.InvalidArgument):
        broker.consume_stream(name, deliver="sometime")
    with pytest.raises(ringbroker.NotFound):
        broker.create_consumer(f"{ns}-no-such-stream", "x")


def test_stream_consumer_takes_no_queue_calls(broker, ns):
    name = f"{ns}-kind"
    broker.create_stream(name, [f"{ns}.kind"])
    broker.stream_publish(f"{ns}.kind", b"x")
    with broker.consume_stream(name, deliver="all") as c, broker.subscribe(f"{ns}.kind.sub") as sub:
        m = c.next(WAIT)
        with pytest.raises(ringbroker.WrongKind):
            sub.ack(m)
        m.ack()
