"""Received messages: subject messages, stream records and queue deliveries.

A :class:`Message` owns the ``ringbroker_msg_t`` the library handed over and reads it
in place: :attr:`Message.data` is a read-only ``memoryview`` straight over the
engine's buffer, with no copy. The C message is freed when nothing refers to it any
more: not the :class:`Message` (after :meth:`Message.release`, or when it is garbage)
and not any ``memoryview`` of its data, or a slice of one. So a view taken from a
message can never outlive the memory it shows.

A small subject message without headers (payload up to ``RBPY_DETACH_MAX``, 4 KiB)
is different: a consumer's batch receive copies its subject, reply and payload out
and frees the C message at once (``native/rbpy.c``), because for a few dozen bytes
one copy costs far less than keeping the engine's memory alive and finalising it.
Such a message is a :class:`Message` too (a ``_SubjectCopy``) and behaves the same:
``data`` is a read-only ``memoryview``, of the copy.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ._cdata import Bytes
from ._native import ffi, lib
from .errors import InvalidArgument, ShuttingDown, WrongKind, check

if TYPE_CHECKING:  # pragma: no cover
    from .broker import Broker
    from .consumer import Consumer

SUBJECT = int(lib.RINGBROKER_MSG_SUBJECT)
"""``Message.kind`` of a subject message (publish/subscribe, request-reply)."""
STREAM = int(lib.RINGBROKER_MSG_STREAM)
"""``Message.kind`` of a stream record."""
QUEUE = int(lib.RINGBROKER_MSG_QUEUE)
"""``Message.kind`` of a queue delivery."""

_EMPTY = memoryview(b"")
_Bytes = bytes  # the class body defines a method named `bytes`


def _free_message(ptr: Any, _owner: Any) -> None:
    lib.ringbroker_msg_free(ptr)


def _text(pointer: Any, length: int) -> Optional[str]:
    if pointer == ffi.NULL:
        return None
    text: str = ffi.unpack(ffi.cast("char *", pointer), length).decode("utf-8", "replace")
    return text


class Message:
    """A received message. Which attributes apply depends on :attr:`kind`; the others
    are ``None`` (or 0 / ``False``).

    ``with msg:`` releases it at the end of the block; so does :meth:`release`.
    A message is meant for one thread at a time; it may be acknowledged from any.
    """

    __slots__ = ("_ptr", "_owner", "_view", "_data", "_consumer", "_broker", "__weakref__")

    def __init__(self, ptr: Any, consumer: Optional["Consumer"], broker: Optional["Broker"]) -> None:
        """Takes ownership of ``ptr`` (a ``ringbroker_msg_t *``). Not called by users:
        messages come from consumers, subscriptions and requests."""
        try:
            view = ffi.new("ringbroker_msg_view_t *")
            check(lib.ringbroker_msg_view(ptr, view))
            base = view.payload if view.payload_len else ffi.cast("uint8_t *", ptr)
            # The owner frees the C message when it is garbage; every memoryview of the
            # payload refers to it through its buffer, so the payload outlives each view.
            owner = ffi.gc(ffi.cast("uint8_t *", base), functools.partial(_free_message, ptr))
        except BaseException:  # not owned yet: the C message is freed here
            lib.ringbroker_msg_free(ptr)
            raise
        self._owner = owner
        self._ptr = ptr
        self._view = view
        self._data: Optional[memoryview] = None
        self._consumer = consumer
        self._broker = broker

    # -- lifetime ---------------------------------------------------------------------

    def release(self) -> None:
        """Lets go of the C message: it is freed now unless a ``memoryview`` of
        :attr:`data` is still referenced (then when the last one goes). Using the
        message afterwards raises :class:`ShuttingDown`. Idempotent."""
        self._data = None
        self._owner = None
        self._ptr = None
        self._view = None

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called."""
        return self._owner is None

    def __enter__(self) -> "Message":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _v(self) -> Any:
        view = self._view
        if view is None:
            raise ShuttingDown("the message was released")
        return view

    def _pointer(self) -> Tuple[Any, Any]:
        """The C pointer and its owner (hold the owner while the pointer is used)."""
        owner, ptr = self._owner, self._ptr
        if owner is None:
            raise ShuttingDown("the message was released")
        return ptr, owner

    # -- contents ---------------------------------------------------------------------

    @property
    def kind(self) -> int:
        """``ringbroker.message.SUBJECT``, ``STREAM`` or ``QUEUE``."""
        return int(self._v().kind)

    @property
    def data(self) -> memoryview:
        """The payload as a read-only ``memoryview`` over the engine's buffer (no copy).
        It stays valid as long as it is referenced, even after :meth:`release`."""
        data = self._data
        if data is None:
            view = self._v()
            if view.payload_len == 0:
                data = _EMPTY
            else:
                data = memoryview(ffi.buffer(self._owner, view.payload_len)).toreadonly()
            self._data = data
        return data

    def __bytes__(self) -> bytes:
        return bytes(self.data)

    def bytes(self) -> bytes:
        """A copy of the payload as ``bytes``."""
        return bytes(self.data)

    def text(self, encoding: str = "utf-8") -> str:
        """The payload decoded (UTF-8 by default)."""
        return str(self.data, encoding)

    def __len__(self) -> int:
        return int(self._v().payload_len)

    @property
    def subject(self) -> Optional[str]:
        """Subject messages and stream records: the subject; queue deliveries: the
        routing key."""
        view = self._v()
        return _text(view.subject, view.subject_len)

    @property
    def routing_key(self) -> Optional[str]:
        """Queue deliveries: the routing key (the same as :attr:`subject`)."""
        return self.subject if self.kind == QUEUE else None

    @property
    def reply(self) -> Optional[str]:
        """Subject messages: where a reply goes (``None`` if none)."""
        view = self._v()
        return _text(view.reply, view.reply_len)

    @property
    def key(self) -> Optional[_Bytes]:
        """Stream records: the key (``None`` if none)."""
        view = self._v()
        if view.key == ffi.NULL:
            return None
        key: _Bytes = ffi.unpack(ffi.cast("char *", view.key), view.key_len)
        return key

    @property
    def exchange(self) -> Optional[str]:
        """Queue deliveries: the exchange it was published to (``""``: the default)."""
        view = self._v()
        return _text(view.exchange, view.exchange_len)

    @property
    def queue(self) -> Optional[str]:
        """Queue deliveries: the queue."""
        view = self._v()
        return _text(view.queue, view.queue_len)

    def header_items(self) -> List[Tuple[str, _Bytes]]:
        """Every header as (name, value) pairs, in order (a name may repeat)."""
        ptr, owner = self._pointer()
        count = self._v().header_count
        name = ffi.new("uint8_t **")
        name_len = ffi.new("uintptr_t *")
        value = ffi.new("uint8_t **")
        value_len = ffi.new("uintptr_t *")
        items = []
        for i in range(count):
            check(lib.ringbroker_msg_header(ptr, i, name, name_len, value, value_len))
            text = ffi.unpack(ffi.cast("char *", name[0]), name_len[0]).decode("utf-8", "replace")
            raw = ffi.unpack(ffi.cast("char *", value[0]), value_len[0]) if value_len[0] else b""
            items.append((text, raw))
        del owner
        return items

    @property
    def headers(self) -> Dict[str, _Bytes]:
        """The headers as a dict (for a repeated name the last value; see
        :meth:`header_items`)."""
        return dict(self.header_items())

    @property
    def partition(self) -> Optional[int]:
        """Stream records: the partition."""
        view = self._v()
        return int(view.partition) if view.kind == STREAM else None

    @property
    def offset(self) -> Optional[int]:
        """Stream records: the offset in the partition."""
        view = self._v()
        return int(view.offset) if view.kind == STREAM else None

    @property
    def timestamp_ms(self) -> Optional[int]:
        """Stream records: when stored, in milliseconds since the Unix epoch."""
        view = self._v()
        return int(view.timestamp_ms) if view.kind == STREAM else None

    @property
    def delivery_count(self) -> Optional[int]:
        """Stream records: 1 on the first delivery, 2 on the second, ..."""
        view = self._v()
        return int(view.delivery_count) if view.kind == STREAM else None

    @property
    def delivery_tag(self) -> Optional[int]:
        """Queue deliveries: the tag :meth:`QueueConsumer.ack_tag` takes."""
        view = self._v()
        return int(view.delivery_tag) if view.kind == QUEUE else None

    @property
    def redelivered(self) -> bool:
        """Queue deliveries: it may have been delivered before. Stream records: it is
        a redelivery (``delivery_count`` > 1)."""
        view = self._v()
        if view.kind == STREAM:
            return bool(view.delivery_count > 1)
        return bool(view.redelivered)

    @property
    def priority(self) -> Optional[int]:
        """Queue deliveries: the priority (0 to 255)."""
        view = self._v()
        return int(view.priority) if view.kind == QUEUE else None

    @property
    def persistent(self) -> Optional[bool]:
        """Queue deliveries: stored on disk in durable queues."""
        view = self._v()
        return bool(view.persistent) if view.kind == QUEUE else None

    # -- acknowledging ----------------------------------------------------------------

    def _from_consumer(self) -> "Consumer":
        if self._consumer is None:
            raise WrongKind("this message came from no consumer (a reply)")
        return self._consumer

    def ack(self) -> None:
        """Acknowledges this stream record or queue delivery to the consumer it came
        from. Raises :class:`WrongKind` for a subject message."""
        self._from_consumer().ack(self)

    def nack(self, requeue: bool = True, delay: float = 0.0) -> None:
        """Stream records: delivered again after ``delay`` seconds. Queue deliveries:
        back to the queue if ``requeue``, else dead-lettered (or dropped); ``delay``
        must be 0. Raises :class:`WrongKind` for a subject message."""
        self._from_consumer().nack(self, requeue=requeue, delay=delay)

    def commit(self) -> None:
        """Stream records: acknowledges every record of this partition the consumer
        received up to and including this one."""
        self._from_consumer().commit(self)

    def respond(self, data: Bytes = b"") -> None:
        """Answers this request (a subject message with a reply subject). Raises
        :class:`InvalidArgument` if it has none."""
        if self._broker is None:
            raise WrongKind("this message came from no broker")
        self._broker.respond(self, data)

    def __repr__(self) -> str:
        if self._view is None:
            return "<ringbroker.Message released>"
        kind = {SUBJECT: "subject", STREAM: "stream", QUEUE: "queue"}.get(self.kind, "?")
        where = ""
        if self.kind == STREAM:
            where = f" p{self.partition}@{self.offset}"
        elif self.kind == QUEUE:
            where = f" tag={self.delivery_tag}"
        return f"<ringbroker.Message {kind} {self.subject!r}{where} {len(self)} bytes>"


class _SubjectCopy(Message):
    """A subject message without headers whose fields were copied out of the C
    message, which is already freed (see the module doc). Made by
    :meth:`Consumer.fetch` and the receives built on it; never by users. Its
    ``_data`` is set when made and ``_owner`` is ``True`` until :meth:`release`;
    ``_ptr``, ``_view`` and ``_consumer`` are never set (nothing here reads them)."""

    __slots__ = ("_subject", "_reply")

    def __init__(self, subject: str, reply: Optional[str], data: memoryview, broker: Optional["Broker"]) -> None:
        self._subject = subject
        self._reply = reply
        self._data = data
        self._owner = True  # released() is `_owner is None`, as for every message
        self._broker = broker

    def release(self) -> None:
        self._owner = None

    def _alive(self) -> None:
        if self._owner is None:
            raise ShuttingDown("the message was released")

    def _v(self) -> Any:
        self._alive()
        raise WrongKind("a copied subject message has no C view")

    def _pointer(self) -> Tuple[Any, Any]:
        self._alive()
        raise WrongKind("subject messages are not acknowledged")

    def _from_consumer(self) -> "Consumer":
        self._alive()
        raise WrongKind("subject messages are not acknowledged")

    @property
    def kind(self) -> int:
        self._alive()
        return SUBJECT

    @property
    def data(self) -> memoryview:
        if self._owner is None:
            raise ShuttingDown("the message was released")
        return self._data  # type: ignore[return-value]

    def __len__(self) -> int:
        self._alive()
        return len(self._data)  # type: ignore[arg-type]

    @property
    def subject(self) -> Optional[str]:
        self._alive()
        return self._subject

    @property
    def reply(self) -> Optional[str]:
        self._alive()
        return self._reply

    def header_items(self) -> List[Tuple[str, _Bytes]]:
        self._alive()
        return []

    def _respond_to(self) -> str:
        """The reply subject :meth:`Broker.respond` publishes to."""
        self._alive()
        if self._reply is None:
            raise InvalidArgument("the message has no reply subject")
        return self._reply

    def __repr__(self) -> str:
        if self._owner is None:
            return "<ringbroker.Message released>"
        return f"<ringbroker.Message subject {self._subject!r} {len(self)} bytes>"


# The attributes of other kinds of message: None (or False) on a subject message.
for _name in ("key", "exchange", "queue", "partition", "offset", "timestamp_ms",
              "delivery_count", "delivery_tag", "priority", "persistent"):
    setattr(_SubjectCopy, _name, property(lambda self: self._alive()))
_SubjectCopy.redelivered = property(lambda self: self._alive() or False)  # type: ignore[assignment]
