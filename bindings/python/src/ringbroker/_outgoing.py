"""Messages to publish and the C arrays made from them.

Each ``*_array`` function builds the C array a batch publish takes. Payloads, keys
and header values are passed by pointer (``ffi.from_buffer``), not copied; every
object the array points into is appended to ``keep``, which the caller holds until
the C call returns (the library copies what it keeps).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple, Union

from ._cdata import Bytes, Headers, byte_arg, encode, header_array
from ._native import ffi


class SubjectMessage(NamedTuple):
    """A message to publish on a subject (:meth:`Broker.publish_batch`)."""

    subject: str
    data: Bytes = b""
    reply: Optional[str] = None
    headers: Optional[Headers] = None


class Record(NamedTuple):
    """A record to publish to a stream (:meth:`Broker.stream_publish_batch`). The
    stream is the one whose subjects capture ``subject``; records with one ``key``
    keep their order in one partition; a ``Msg-Id`` header deduplicates within the
    stream's dedup window."""

    subject: str
    data: Bytes = b""
    key: Optional[Bytes] = None
    headers: Optional[Headers] = None


class QueueMessage(NamedTuple):
    """A message to publish to an exchange (:meth:`Broker.exchange_publish_batch`).
    ``exchange`` ``""`` is the default exchange (routes to the queue named by the
    routing key)."""

    exchange: str
    routing_key: str
    data: Bytes = b""
    headers: Optional[Headers] = None
    priority: int = 0
    persistent: bool = False
    expiration_ms: int = 0


SubjectMessageLike = Union[SubjectMessage, Tuple[Any, ...]]
RecordLike = Union[Record, Tuple[Any, ...]]
QueueMessageLike = Union[QueueMessage, Tuple[Any, ...]]


def _text_cache(keep: List[Any]) -> "Any":
    cache: Dict[str, Any] = {}

    def text(value: str) -> Any:
        c = cache.get(value)
        if c is None:
            c = cache[value] = ffi.new("char[]", encode(value))
            keep.append(c)
        return c

    return text


def subject_array(messages: Iterable[SubjectMessageLike], keep: List[Any]) -> Tuple[Any, int]:
    """A ``ringbroker_subject_msg[]`` for ``messages`` and its length. The hot path of
    :meth:`Broker.publish_batch`: plain ``(subject, data)`` pairs skip the named-tuple
    conversion."""
    items = messages if isinstance(messages, (list, tuple)) else list(messages)
    array = ffi.new("ringbroker_subject_msg[]", len(items))
    keep.append(array)
    text = _text_cache(keep)
    from_buffer = ffi.from_buffer
    for i, m in enumerate(items):
        slot = array[i]
        if type(m) is tuple and len(m) == 2:
            subject, data = m
        else:
            full = m if isinstance(m, SubjectMessage) else SubjectMessage(*m)
            subject, data = full.subject, full.data
            if full.reply is not None:
                slot.reply = text(full.reply)
            if full.headers:
                slot.headers, slot.headers_len = header_array(full.headers, keep)
        slot.subject = text(subject)
        if type(data) is bytes:
            if data:
                payload = from_buffer("uint8_t[]", data)
                keep.append(payload)
                slot.payload = payload
                slot.payload_len = len(data)
        else:
            payload, length = byte_arg(data)
            if length:
                keep.append(payload)
                slot.payload, slot.payload_len = payload, length
    return array, len(items)


def packed_subject_batch(items: List[Any]) -> Optional[Tuple[bytes, bytes, List[int]]]:
    """The arguments of ``rbpy_publish_packed`` (``native/rbpy.h``) for ``items`` if
    every one is a plain ``(str, bytes-like)`` pair, else ``None`` (the caller then
    builds the array item by item with :func:`subject_array`, which also reports what
    is wrong with an item). The packing is a few passes in C over the whole list, so
    it costs a fraction of setting struct fields from Python: the subjects
    NUL-separated in one UTF-8 string, the payloads concatenated, and their lengths."""
    if set(map(type, items)) != {tuple} or set(map(len, items)) != {2}:
        return None
    subjects, payloads = zip(*items)
    try:
        joined = "\0".join(subjects)
        blob = b"".join(payloads)
    except TypeError:  # a str payload or a non-str subject: the slow path sorts it out
        return None
    if joined.count("\0") != len(items) - 1:  # a subject holding NUL (invalid)
        return None
    lengths = list(map(len, payloads))
    if sum(lengths) != len(blob):  # a memoryview of items wider than a byte
        return None
    return (joined + "\0").encode("utf-8"), blob, lengths


def record_array(records: Iterable[RecordLike], keep: List[Any]) -> Tuple[Any, int]:
    """A ``ringbroker_record[]`` for ``records`` and its length."""
    items: List[Record] = [r if isinstance(r, Record) else Record(*r) for r in records]
    array = ffi.new("ringbroker_record[]", len(items))
    keep.append(array)
    text = _text_cache(keep)
    for i, r in enumerate(items):
        slot = array[i]
        slot.subject = text(r.subject)
        if r.key is not None:
            key, key_len = byte_arg(r.key)
            if key_len == 0:  # an empty key is a key, not none: point at one byte
                key = ffi.new("uint8_t[1]")
            keep.append(key)
            slot.key, slot.key_len = key, key_len
        if r.headers:
            slot.headers, slot.headers_len = header_array(r.headers, keep)
        payload, length = byte_arg(r.data)
        if length:
            keep.append(payload)
            slot.payload, slot.payload_len = payload, length
    return array, len(items)


def queue_array(messages: Iterable[QueueMessageLike], keep: List[Any]) -> Tuple[Any, int]:
    """A ``ringbroker_queue_msg[]`` for ``messages`` and its length."""
    items: List[QueueMessage] = [m if isinstance(m, QueueMessage) else QueueMessage(*m) for m in messages]
    array = ffi.new("ringbroker_queue_msg[]", len(items))
    keep.append(array)
    text = _text_cache(keep)
    for i, m in enumerate(items):
        slot = array[i]
        slot.exchange = text(m.exchange)
        slot.routing_key = text(m.routing_key)
        if m.headers:
            slot.headers, slot.headers_len = header_array(m.headers, keep)
        payload, length = byte_arg(m.data)
        if length:
            keep.append(payload)
            slot.payload, slot.payload_len = payload, length
        if not 0 <= m.priority <= 255:
            raise ValueError(f"priority must be 0 to 255, not {m.priority}")
        slot.priority = m.priority
        slot.persistent = bool(m.persistent)
        slot.expiration_ms = m.expiration_ms
    return array, len(items)


def with_msg_id(headers: Optional[Headers], msg_id: Optional[Bytes]) -> Optional[Headers]:
    """``headers`` plus ``Msg-Id: msg_id`` (the stream deduplication header)."""
    if msg_id is None:
        return headers
    pairs: List[Tuple[str, Bytes]] = []
    if headers:
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    pairs.append(("Msg-Id", msg_id))
    return pairs
