"""The binding's batch paths through its C helpers (native/rbpy.c), embedded and remote:

- receiving: a small subject message without headers is copied out and its C message
  freed at once (a ``_SubjectCopy``); any other message stays a C message read in
  place. Both kinds must look the same to a user, in the order they came;
- publishing: ``publish_batch`` of plain ``(subject, bytes-like)`` pairs goes packed
  through ``rbpy_publish_packed``; anything else takes the item-by-item path.
"""

from __future__ import annotations

import gc
import time

import pytest

import ringbroker
from ringbroker import SubjectMessage
from ringbroker._native import ffi, lib
from ringbroker.message import SUBJECT, Message, _SubjectCopy

WAIT = 5.0
DETACH_MAX = int(lib.RBPY_DETACH_MAX)


def fetch_all(sub, count: int, max_messages: int = 64) -> list:
    got: list = []
    for _ in range(100):
        if len(got) >= count:
            break
        got += sub.fetch(max_messages, WAIT if not got else 0.5)
    assert len(got) == count, f"{len(got)} of {count} arrived"
    return got


def test_a_mixed_batch_keeps_order_contents_and_kinds(broker, ns):
    big = bytes(range(256)) * (DETACH_MAX // 256) + b"!"  # one byte over: not copied
    sent = [
        SubjectMessage(f"{ns}.m.a", b"1"),
        SubjectMessage(f"{ns}.m.a", b"2", "reply.one"),            # same subject: not copied twice
        SubjectMessage(f"{ns}.m.b", b"3", headers={"h": b"v"}),   # headers: stays a C message
        SubjectMessage(f"{ns}.m.a", big),                         # too big: stays a C message
        SubjectMessage(f"{ns}.m.b", b""),
        SubjectMessage(f"{ns}.m.a", b"x" * DETACH_MAX),           # the largest copied
        SubjectMessage(f"{ns}.m.a", b"7", "reply.two"),
    ]
    with broker.subscribe(f"{ns}.m.>") as sub:
        broker.publish_batch(sent)
        got = fetch_all(sub, len(sent))
    assert [(m.subject, m.reply, m.bytes(), m.headers) for m in got] == [
        (s.subject, s.reply, bytes(s.data), dict(s.headers or {})) for s in sent]
    assert [type(m) for m in got] == [_SubjectCopy, _SubjectCopy, Message, Message,
                                      _SubjectCopy, _SubjectCopy, _SubjectCopy]


def test_what_does_not_fit_the_batch_bytes_stays_a_c_message(broker, ns):
    # fetch(64) copies into 16 KiB: four 4000-byte payloads fit, the fifth and sixth
    # do not (they stay C messages), and a small one after them still fits.
    payloads = [bytes([i]) * 4000 for i in range(6)] + [b"small"]
    with broker.subscribe(f"{ns}.fit") as sub:
        broker.publish_batch([(f"{ns}.fit", p) for p in payloads])
        time.sleep(1.0)  # all seven arrive, even on a loaded machine: one fetch takes them
        got = sub.fetch(64, WAIT)
    assert [m.bytes() for m in got] == payloads
    assert [type(m) for m in got] == [_SubjectCopy] * 4 + [Message] * 2 + [_SubjectCopy]


def test_a_copied_message_behaves_as_a_message(broker, ns):
    with broker.subscribe(f"{ns}.copy") as sub:
        broker.publish(f"{ns}.copy", b"payload-bytes", reply="the.reply")
        m = sub.next(WAIT)
        assert type(m) is _SubjectCopy and isinstance(m, Message)
        assert (m.kind, m.subject, m.reply, len(m), m.bytes(), bytes(m), m.text()) == (
            SUBJECT, f"{ns}.copy", "the.reply", 13, b"payload-bytes", b"payload-bytes", "payload-bytes")
        view = m.data
        assert isinstance(view, memoryview) and view.readonly and m.data is view
        assert m.headers == {} and m.header_items() == []
        for absent in ("key", "exchange", "queue", "partition", "offset", "timestamp_ms",
                       "delivery_count", "delivery_tag", "priority", "persistent", "routing_key"):
            assert getattr(m, absent) is None, absent
        assert m.redelivered is False
        assert f"{ns}.copy" in repr(m) and "13 bytes" in repr(m)
        for call in (m.ack, m.commit, lambda: m.nack(requeue=False), lambda: sub.ack(m),
                     lambda: sub.ack_batch([m])):
            with pytest.raises(ringbroker.WrongKind) as err:
                call()
            assert err.value.code == 101
        tail = view[8:]
        with m:
            pass
        assert m.released and "released" in repr(m)
        for attribute in ("data", "subject", "reply", "kind", "key", "redelivered", "headers"):
            with pytest.raises(ringbroker.ShuttingDown):
                getattr(m, attribute)
        with pytest.raises(ringbroker.ShuttingDown):
            len(m)
        with pytest.raises(ringbroker.ShuttingDown):
            m.respond(b"late")
        del view
        gc.collect()
        assert bytes(tail) == b"bytes"  # a view of the copy outlives the message


def test_a_copied_request_is_answered(broker, ns):
    with broker.subscribe(f"{ns}.svc") as sub, broker.subscribe(f"{ns}.answers") as answers:
        broker.publish(f"{ns}.svc", b"ping", reply=f"{ns}.answers")
        request = sub.next(WAIT)
        assert type(request) is _SubjectCopy
        request.respond(b"pong")
        broker.respond(request, "pong again")
        assert [m.bytes() for m in fetch_all(answers, 2)] == [b"pong", b"pong again"]
        broker.publish(f"{ns}.svc", b"no reply wanted")
        with pytest.raises(ringbroker.InvalidArgument):
            sub.next(WAIT).respond(b"nobody asked")


def test_subjects_are_decoded_once_and_the_cache_stays_bounded(broker, ns, monkeypatch):
    import ringbroker.consumer as consumer_module

    monkeypatch.setattr(consumer_module, "_SUBJECTS_CACHED", 4)
    with broker.subscribe(f"{ns}.s.*") as sub:
        names = [f"{ns}.s.{i % 10}" for i in range(40)]
        broker.publish_batch([(name, name.encode()) for name in names])
        got = fetch_all(sub, len(names))
        assert [m.subject for m in got] == names and [m.text() for m in got] == names
        assert len(sub._subjects) <= 4


def test_publish_batch_packs_plain_pairs_of_any_bytes_like(broker, ns):
    subject = f"{ns}.packed"
    payloads = [b"a", bytearray(b"bb"), memoryview(b"ccc"), b"", memoryview(b"xdddx")[1:4]]
    with broker.subscribe(subject) as sub:
        broker.publish_batch([(subject, p) for p in payloads])                  # a list
        broker.publish_batch(tuple((subject, p) for p in [b"t1", b"t2"]))       # a tuple
        broker.publish_batch((subject, p) for p in [b"g1"])                     # a generator
        got = [m.bytes() for m in fetch_all(sub, 8)]
    assert got == [b"a", b"bb", b"ccc", b"", b"ddd", b"t1", b"t2", b"g1"]


def test_publish_batch_items_the_packing_cannot_take(broker, ns):
    subject = f"{ns}.mixed"
    wide = memoryview(bytes(8)).cast("I")  # 2 items of 4 bytes: len() is not the byte count
    with broker.subscribe(subject) as sub:
        broker.publish_batch([(subject, "text"), (subject, b"bytes")])          # a str payload
        broker.publish_batch([(subject, b"r", "reply.x"), (subject, b"p")])      # a 3-tuple
        broker.publish_batch([SubjectMessage(subject, b"n"), (subject, b"p")])  # a named tuple
        broker.publish_batch([(subject, wide)])
        got = fetch_all(sub, 7)
    assert [m.bytes() for m in got] == [b"text", b"bytes", b"r", b"p", b"n", b"p", bytes(8)]
    assert got[2].reply == "reply.x"


def test_publish_batch_refuses_a_subject_holding_nul_and_publishes_nothing(broker, ns):
    with broker.subscribe(f"{ns}.>") as sub:
        for batch in ([(f"{ns}.ok", b"1"), (f"{ns}.bad\0tail", b"2")],
                      [(f"{ns}.ok\0", b"1")]):
            with pytest.raises(ringbroker.InvalidArgument) as err:
                broker.publish_batch(batch)
            assert "NUL" in str(err.value)
        with pytest.raises(ringbroker.InvalidArgument):
            broker.publish(f"{ns}.ok\0tail", b"x")  # C would see only "<ns>.ok"
        with pytest.raises(TypeError):
            broker.publish_batch([(b"bytes-subject", b"x")])
        with pytest.raises(ringbroker.Timeout):
            sub.next(0.2)


def test_publish_packed_checks_that_its_arguments_add_up(broker):
    # The C helper itself, with packings that do not add up: nothing is published.
    ptr = broker._guard.enter()
    try:
        def call(subjects: bytes, payloads: bytes, lengths: list) -> int:
            array = ffi.new("ringbroker_subject_msg[]", len(lengths))
            return int(lib.rbpy_publish_packed(ptr, array, len(lengths), subjects, len(subjects),
                                               payloads, len(payloads), ffi.new("uint32_t[]", lengths)))

        mispacked = int(lib.RBPY_MISPACKED)
        assert call(b"a.b\0", b"xy", [1]) == mispacked            # a payload byte left over
        assert call(b"a.b\0", b"x", [2]) == mispacked             # a length past the payloads
        assert call(b"a.b\0a.c\0", b"xy", [1]) == mispacked       # a subject left over
        assert call(b"a.b", b"x", [1]) == mispacked               # no NUL after the subject
        assert call(b"a.b\0", b"xy", [1, 1]) == mispacked         # a subject missing
        assert call(b"a.b\0", b"x", [1]) == 0
    finally:
        broker._guard.leave()


def test_publish_encodes_each_subject_once_and_the_cache_stays_bounded(broker, ns, monkeypatch):
    import ringbroker.broker as broker_module

    monkeypatch.setattr(broker_module, "_SUBJECTS_CACHED", 3)
    with broker.subscribe(f"{ns}.c.*") as sub:
        names = [f"{ns}.c.{i % 5}" for i in range(20)]
        for name in names:
            broker.publish(name, name)
        assert [m.text() for m in fetch_all(sub, len(names))] == names
        assert len(broker._subjects) <= 3
