"""The broker handle: one :class:`Broker` type whether the engine runs in this process
(:func:`ringbroker.open`) or in a ``ringbrokerd`` (:func:`ringbroker.connect`). Every
method behaves the same in both modes, errors included.

A broker is thread-safe: any number of threads may call it at once. Every C call
releases the GIL (cffi's API mode does so around each call). :meth:`Broker.close`
closes the consumers made from it (waiting for the calls in flight on them: a
receive in another thread ends with ShuttingDown), waits for the calls in flight on the
handle, then closes it; the C API forbids closing a handle while another thread uses
it or an object made from it.
"""

from __future__ import annotations

import itertools
import weakref
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Type, TypeVar

from ._cdata import Bytes, Headers, _Guard, byte_arg, encode, header_array, make_config, optional_text
from ._native import ffi, lib
from ._outgoing import (
    QueueMessage,
    QueueMessageLike,
    Record,
    RecordLike,
    SubjectMessage,
    SubjectMessageLike,
    packed_subject_batch,
    queue_array,
    record_array,
    subject_array,
    with_msg_id,
)
from .consumer import Consumer, QueueConsumer, StreamConsumer, Subscription
from .errors import ShuttingDown, error_for, last_error
from .message import Message, _SubjectCopy

_OK = 0
_C = TypeVar("_C", bound=Consumer)


class StreamInfo(NamedTuple):
    """A stream's figures (:meth:`Broker.stream_info`)."""

    partitions: int
    records: int
    bytes: int


class ConsumerInfo(NamedTuple):
    """A durable consumer's figures (:meth:`Broker.consumer_info`)."""

    partitions: int
    pending: int
    assigned: int


class QueueInfo(NamedTuple):
    """A queue's figures (:meth:`Broker.queue_info`, :meth:`Broker.declare_queue`)."""

    messages: int
    unacked: int
    consumers: int


class PublishResult(NamedTuple):
    """How one stream record went: stored at ``partition`` / ``offset``, or it
    ``duplicate``\\ d a record stored within the dedup window. ``status`` is 0 when
    stored; in a failed batch (``error.results``) a failed record has its status."""

    partition: int
    offset: int
    duplicate: bool
    status: int = 0


class Confirm(NamedTuple):
    """How one exchange publish went: ``queues`` it reached; ``status`` 0 once every
    queue has it (persistent copies synced)."""

    queues: int
    status: int = 0


def _close_handle(guard: _Guard, publish_guard: Any, consumers: "weakref.WeakSet[Consumer]") -> int:
    # 1. No new call on the handle, and the calls in flight are done (those counted
    #    in Python and the publishes counted in C): no consumer is being made any
    #    more (one is registered inside the handle's guard).
    ptr = guard.close(wait=True)
    if ptr is None:
        return _OK
    lib.rbpy_guard_close(publish_guard)
    # 2. Each live consumer closed, its calls in flight done (a receive waits in slices
    #    of WAIT_SLICE_MS), and freed, so nothing uses an object of the handle while
    # 3. the handle closes.
    for consumer in list(consumers):
        consumer._retire()
    return int(lib.ringbroker_close(ptr))


_NULL = ffi.NULL
_CLOSED = int(lib.RBPY_CLOSED)
_SUBJECTS_CACHED = 1024  # encoded subjects a broker keeps for publish (emptied when full)


def _timeout_ms(timeout: float) -> int:
    if timeout is None or timeout < 0:
        raise ValueError(f"a request needs a timeout of 0 seconds or more, not {timeout}")
    return round(timeout * 1000)


class Broker:
    """A broker handle. Made by :func:`ringbroker.open` or :func:`ringbroker.connect`;
    closed by :meth:`close`, by leaving a ``with`` block, or when garbage."""

    def __init__(self, ptr: Any, description: str) -> None:
        """Takes ownership of ``ptr`` (a ``ringbroker_t *``). Not called by users."""
        self._guard = _Guard(ptr, None, "broker")
        # publish() is counted by a guard in C instead (native/rbpy.h): no Python lock
        # on the hottest call. It holds the handle's pointer for that one call.
        self._publish_guard = ffi.new("rbpy_guard *")
        self._handle = ptr
        self._consumers: "weakref.WeakSet[Consumer]" = weakref.WeakSet()  # closed by close()
        self._finalizer = weakref.finalize(self, _close_handle, self._guard, self._publish_guard,
                                           self._consumers)
        self.description = description
        """The data directory or the URL it was made from."""
        self.embedded = bool(lib.ringbroker_is_embedded(ptr) == 1)
        """Whether the engine runs in this process (else in a ringbrokerd)."""
        self._async_owner: Any = None  # the aio.AsyncBroker polling completions, if any
        # Tokens of asynchronous calls: unique for the handle's life, whichever
        # AsyncBroker (one at a time) starts them, as its completion queue is the handle's.
        self._async_tokens = itertools.count(1)
        self._subjects: Dict[str, bytes] = {}  # publish's encoded subjects

    # -- lifetime ---------------------------------------------------------------------

    def _call(self, function: Any, *args: Any) -> None:
        """Calls ``function(handle, *args)``; raises the error unless it returned OK."""
        ptr = self._guard.enter()
        try:
            status = function(ptr, *args)
            if status != _OK:
                raise last_error(status)
        finally:
            self._guard.leave()

    def _make(self, cls: Type[_C], what: str, function: Any, *args: Any) -> _C:
        """Calls ``function(handle, *args, &out)`` and returns ``cls`` over ``out``,
        registered (inside the handle's guard) for :meth:`close` to close."""
        out = ffi.new("ringbroker_consumer_t **")
        ptr = self._guard.enter()
        try:
            status = function(ptr, *args, out)
            if status != _OK:
                raise last_error(status)
            consumer = cls(self, out[0], what)
            self._consumers.add(consumer)
        finally:
            self._guard.leave()
        return consumer

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._guard.closed

    def close(self) -> None:
        """Closes the handle once the calls in flight on it are done, after closing
        every consumer made from it that is still open (a receive in progress in
        another thread ends with :class:`ShuttingDown` within
        :data:`~ringbroker.consumer.WAIT_SLICE_MS`): an embedded broker syncs and
        stops its shards, a connection closes. Raises
        :class:`Internal` if an embedded broker could not stop cleanly (the handle is
        freed all the same). Idempotent."""
        if self._async_owner is not None:
            self._async_owner._detach()
        status = self._finalizer()
        if status:
            raise last_error(status)

    def __enter__(self) -> "Broker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "embedded" if self.embedded else "remote"
        state = " closed" if self.closed else ""
        return f"<ringbroker.Broker {mode} {self.description}{state}>"

    # -- subjects ---------------------------------------------------------------------

    def publish(self, subject: str, data: Bytes = b"", *, reply: Optional[str] = None,
                headers: Optional[Headers] = None) -> None:
        """Publishes ``data`` on ``subject`` (fire and forget, at most once), with
        ``reply`` as the subject a responder answers to. Raises
        :class:`InvalidArgument` for an invalid subject, :class:`Backpressure` if the
        engine is saturated, :class:`Disconnected` if the connection is down."""
        if headers:
            self.publish_batch([SubjectMessage(subject, data, reply, headers)])
            return
        # The hot path of fire-and-forget publishing: a subject's encoding comes from
        # a small cache, a bytes payload is handed over as it is (cffi passes C a
        # pointer into the bytes object), and the call is counted by the guard in C.
        encoded = self._subjects.get(subject)
        if encoded is None:
            encoded = self._subject_bytes(subject)
        if type(data) is bytes:
            payload, length = data, len(data)
        else:
            payload, length = byte_arg(data)
        status = lib.rbpy_publish(self._publish_guard, self._handle, encoded,
                                  _NULL if reply is None else encode(reply), payload, length)
        if status != _OK:
            if status == _CLOSED:
                raise ShuttingDown("the broker is closed")
            raise last_error(status)

    def _subject_bytes(self, subject: str) -> bytes:
        """``encode(subject)``, remembered for the next :meth:`publish` (up to
        :data:`_SUBJECTS_CACHED` subjects; the cache is emptied when full)."""
        encoded = encode(subject)
        subjects = self._subjects
        if len(subjects) >= _SUBJECTS_CACHED:
            subjects.clear()
        subjects[subject] = encoded
        return encoded

    def publish_batch(self, messages: Iterable[SubjectMessageLike]) -> None:
        """Publishes several messages in one call (``SubjectMessage`` or
        ``(subject, data[, reply[, headers]])`` tuples), far cheaper per message than
        :meth:`publish`. One invalid message refuses the whole batch with
        :class:`InvalidArgument`; a remote batch over the server's frame limit is
        refused whole with :class:`FrameTooLarge`. If the engine's outbox fills in
        the middle of a batch the rest is dropped (at most once)."""
        items = messages if isinstance(messages, (list, tuple)) else list(messages)
        if not items:
            return
        packed = packed_subject_batch(items)  # type: ignore[arg-type]
        if packed is not None:
            subjects, payloads, lengths = packed
            array = ffi.new("ringbroker_subject_msg[]", len(items))
            self._call(lib.rbpy_publish_packed, array, len(items), subjects, len(subjects),
                       payloads, len(payloads), ffi.new("uint32_t[]", lengths))
            return
        keep: List[Any] = []
        array, count = subject_array(items, keep)
        if count:
            self._call(lib.ringbroker_publish_batch, array, count)

    def subscribe(self, pattern: str, queue_group: Optional[str] = None) -> Subscription:
        """Subscribes to ``pattern`` (``*`` matches one token, ``>`` the rest); with
        ``queue_group``, each message goes to one member of the group."""
        what = f"subject {pattern}" + (f" group {queue_group}" if queue_group else "")
        return self._make(Subscription, what, lib.ringbroker_subscribe, encode(pattern), optional_text(queue_group))

    def request(self, subject: str, data: Bytes = b"", timeout: float = 5.0) -> Message:
        """Sends ``data`` to ``subject`` and waits up to ``timeout`` seconds for the
        first reply (a request always has a deadline). Raises :class:`NoResponders` at
        once if nothing subscribes to ``subject``, :class:`Timeout` if no reply came in
        time."""
        payload, length = byte_arg(data)
        out = ffi.new("ringbroker_msg_t **")
        self._call(lib.ringbroker_request, encode(subject), payload, length, _timeout_ms(timeout), out)
        return Message(out[0], None, self)

    def respond(self, request: Message, data: Bytes = b"") -> None:
        """Answers ``request`` (a subject message with a reply subject) with ``data``.
        Raises :class:`InvalidArgument` if it has no reply subject."""
        if isinstance(request, _SubjectCopy):  # its C message is gone: publish the reply
            self.publish(request._respond_to(), data)
            return
        msg, owner = request._pointer()
        payload, length = byte_arg(data)
        self._call(lib.ringbroker_respond, msg, payload, length)
        del owner

    # -- streams ----------------------------------------------------------------------

    def create_stream(self, name: str, subjects: Sequence[str], *, partitions: Optional[int] = None,
                      durability: Optional[str] = None, **options: Any) -> None:
        """Creates stream ``name`` capturing ``subjects`` (patterns). ``durability`` is
        ``"always"``, ``"none"`` or ``"batch:<max_delay_ms>:<max_bytes>"``; other
        options are the config keys of docs/c-api.md (``max_records``, ``max_bytes``,
        ``max_age_ms``, ``max_record_bytes``, ``dedup_window_ms``, ``dead_letter``,
        ``segment_bytes_max``). Idempotent for the same definition; raises
        :class:`AlreadyExists` for a different one (or a subject another stream
        captures), :class:`InvalidArgument` for a bad option."""
        config = make_config(dict(name=name, subjects=list(subjects), partitions=partitions,
                                  durability=durability, **options))
        self._call(lib.ringbroker_stream_create, config)

    def update_stream(self, name: str, subjects: Sequence[str], *, partitions: Optional[int] = None,
                      durability: Optional[str] = None, **options: Any) -> None:
        """Changes a stream's retention, record size limit, dedup window or dead-letter
        stream; takes the whole definition, as :meth:`create_stream`. Raises
        :class:`NotFound`, :class:`InvalidArgument` (a change of what is fixed at
        creation)."""
        config = make_config(dict(name=name, subjects=list(subjects), partitions=partitions,
                                  durability=durability, **options))
        self._call(lib.ringbroker_stream_update, config)

    def delete_stream(self, name: str) -> None:
        """Deletes stream ``name``, its records and consumers. Raises :class:`NotFound`."""
        self._call(lib.ringbroker_stream_delete, encode(name))

    def stream_info(self, name: str) -> StreamInfo:
        """Stream ``name``'s figures. Raises :class:`NotFound`."""
        info = ffi.new("ringbroker_stream_info_t *")
        self._call(lib.ringbroker_stream_info, encode(name), info)
        return StreamInfo(int(info.partitions), int(info.records), int(info.bytes))

    def stream_publish(self, subject: str, data: Bytes = b"", *, key: Optional[Bytes] = None,
                       headers: Optional[Headers] = None, msg_id: Optional[Bytes] = None) -> PublishResult:
        """Publishes one record and waits until it is stored under its stream's
        durability policy. ``msg_id`` adds a ``Msg-Id`` header (deduplicated within
        the stream's window). Raises :class:`NotFound` if no stream captures
        ``subject``, :class:`Refused` for a record over the stream's limit."""
        return self.stream_publish_batch([Record(subject, data, key, with_msg_id(headers, msg_id))])[0]

    def stream_publish_batch(self, records: Iterable[RecordLike]) -> List[PublishResult]:
        """Publishes several records (``Record`` or ``(subject, data[, key[,
        headers]])`` tuples) in one call and waits until each is stored; returns their
        results in order. If one failed, raises the error of the first that did, with
        every record's result in ``error.results`` (others may have been stored)."""
        keep: List[Any] = []
        array, count = record_array(records, keep)
        if not count:
            return []
        results = ffi.new("ringbroker_publish_result[]", count)
        ptr = self._guard.enter()
        try:
            status = lib.ringbroker_stream_publish(ptr, array, count, results)
            error = None if status == _OK else last_error(status)
        finally:
            self._guard.leave()
        out = [PublishResult(int(r.partition), int(r.offset), bool(r.duplicate), int(r.status))
               for r in results]
        if error is not None:
            error.results = out
            raise error
        return out

    def stream_publish_nowait(self, records: Iterable[RecordLike]) -> None:
        """Publishes records without waiting (fire and forget): returns once they are
        queued. A record a stream refuses is lost silently; use the ``aio`` layer's
        ``stream_publish`` to learn outcomes without blocking."""
        keep: List[Any] = []
        array, count = record_array(records, keep)
        if count:
            self._call(lib.ringbroker_stream_publish_nowait, array, count)

    def create_consumer(self, stream: str, name: str, **options: Any) -> None:
        """Creates durable consumer ``name`` on ``stream``. Options are the config
        keys of docs/c-api.md: ``deliver`` (``"all"``, ``"new"``, ``"offset:<n>"``,
        ``"time:<unix_ms>"``), ``filter``, ``ack`` (``"explicit"``, ``"none"``),
        ``ack_wait_ms``, ``max_deliver``, ``max_ack_pending``,
        ``heartbeat_timeout_ms``. Raises :class:`NotFound` (no stream),
        :class:`AlreadyExists` (a different definition)."""
        config = make_config(dict(durable=name, **options))
        self._call(lib.ringbroker_consumer_create, encode(stream), config)

    def delete_consumer(self, stream: str, name: str) -> None:
        """Deletes durable consumer ``name`` of ``stream``. Raises :class:`NotFound`."""
        self._call(lib.ringbroker_consumer_delete, encode(stream), encode(name))

    def consumer_info(self, stream: str, name: str) -> ConsumerInfo:
        """Durable consumer ``name``'s figures. Raises :class:`NotFound`."""
        info = ffi.new("ringbroker_consumer_info_t *")
        self._call(lib.ringbroker_consumer_info, encode(stream), encode(name), info)
        return ConsumerInfo(int(info.partitions), int(info.pending), int(info.assigned))

    def consume_stream(self, stream: str, name: Optional[str] = None, **options: Any) -> StreamConsumer:
        """With ``name``: joins durable consumer ``name`` of ``stream`` as a new member
        of its group (the group shares the partitions among its members). Without:
        starts an ephemeral consumer from ``options`` (as :meth:`create_consumer`,
        e.g. ``deliver="all"``), forgotten when closed. Raises :class:`NotFound`."""
        if name is not None and options:
            raise ValueError("a durable consumer's options are given to create_consumer, not here")
        config = ffi.NULL if name is not None else make_config(options)
        what = f"stream {stream}" + (f" consumer {name}" if name else " (ephemeral)")
        return self._make(StreamConsumer, what, lib.ringbroker_stream_consume, encode(stream), optional_text(name),
                          config)

    # -- exchanges and queues ---------------------------------------------------------

    def declare_exchange(self, name: str, kind: str = "direct", *, durable: Optional[bool] = None,
                         **options: Any) -> None:
        """Declares exchange ``name`` of ``kind`` (``"direct"``, ``"fanout"``,
        ``"topic"``, ``"headers"``). Idempotent for the same definition; raises
        :class:`AlreadyExists` for a different one."""
        config = make_config(dict(name=name, kind=kind, durable=durable, **options))
        self._call(lib.ringbroker_exchange_declare, config)

    def delete_exchange(self, name: str, if_unused: bool = False) -> None:
        """Deletes exchange ``name``; with ``if_unused``, only if nothing is bound to it
        (:class:`Refused` otherwise). Raises :class:`NotFound`."""
        self._call(lib.ringbroker_exchange_delete, encode(name), 1 if if_unused else 0)

    def bind_exchange(self, destination: str, source: str, routing_key: str = "",
                      arguments: Optional[Headers] = None) -> None:
        """Binds exchange ``destination`` to exchange ``source``: what ``source`` routes
        with ``routing_key`` also goes through ``destination``."""
        keep: List[Any] = []
        args, count = header_array(arguments, keep)
        self._call(lib.ringbroker_exchange_bind, encode(destination), encode(source),
                   encode(routing_key), args, count)

    def declare_queue(self, name: str, **options: Any) -> QueueInfo:
        """Declares queue ``name`` and returns its figures. Options are the config keys
        of docs/c-api.md: ``durable``, ``exclusive``, ``auto_delete``,
        ``message_ttl_ms``, ``expires_ms``, ``max_length``, ``max_length_bytes``,
        ``overflow`` (``"drop-head"``, ``"reject-publish"``),
        ``dead_letter_exchange``, ``dead_letter_routing_key``, ``max_priority``.
        Idempotent for the same definition."""
        config = make_config(dict(name=name, **options))
        info = ffi.new("ringbroker_queue_info_t *")
        self._call(lib.ringbroker_queue_declare, config, info)
        return QueueInfo(int(info.messages), int(info.unacked), int(info.consumers))

    def delete_queue(self, name: str, if_unused: bool = False, if_empty: bool = False) -> int:
        """Deletes queue ``name`` and returns how many messages it held; with
        ``if_unused`` only if no consumer, with ``if_empty`` only if empty
        (:class:`Refused` otherwise)."""
        ready = ffi.new("uint64_t *")
        self._call(lib.ringbroker_queue_delete, encode(name), 1 if if_unused else 0,
                   1 if if_empty else 0, ready)
        return int(ready[0])

    def purge_queue(self, name: str) -> int:
        """Removes queue ``name``'s ready messages and returns how many."""
        purged = ffi.new("uint64_t *")
        self._call(lib.ringbroker_queue_purge, encode(name), purged)
        return int(purged[0])

    def queue_info(self, name: str) -> QueueInfo:
        """Queue ``name``'s figures. Raises :class:`NotFound`."""
        info = ffi.new("ringbroker_queue_info_t *")
        self._call(lib.ringbroker_queue_info, encode(name), info)
        return QueueInfo(int(info.messages), int(info.unacked), int(info.consumers))

    def bind_queue(self, queue: str, exchange: str, routing_key: str = "",
                   arguments: Optional[Headers] = None) -> None:
        """Binds ``queue`` to ``exchange`` with ``routing_key``; ``arguments`` are what
        a headers exchange matches (``x-match`` = ``all`` or ``any``, then the
        headers). Raises :class:`NotFound` if either is missing."""
        keep: List[Any] = []
        args, count = header_array(arguments, keep)
        self._call(lib.ringbroker_queue_bind, encode(queue), encode(exchange), encode(routing_key),
                   args, count)

    def unbind_queue(self, queue: str, exchange: str, routing_key: str = "",
                     arguments: Optional[Headers] = None) -> None:
        """Removes the binding :meth:`bind_queue` made with the same arguments."""
        keep: List[Any] = []
        args, count = header_array(arguments, keep)
        self._call(lib.ringbroker_queue_unbind, encode(queue), encode(exchange), encode(routing_key),
                   args, count)

    def exchange_publish(self, exchange: str, routing_key: str, data: Bytes = b"", *,
                         headers: Optional[Headers] = None, priority: int = 0, persistent: bool = False,
                         expiration_ms: int = 0, mandatory: bool = False) -> int:
        """Publishes one message to ``exchange`` (``""``: the default exchange, which
        routes to the queue named ``routing_key``) and waits for its confirm; returns
        how many queues it reached. With ``mandatory``, a message no queue takes
        raises :class:`Unroutable`."""
        message = QueueMessage(exchange, routing_key, data, headers, priority, persistent, expiration_ms)
        return self.exchange_publish_batch([message], mandatory=mandatory)[0].queues

    def exchange_publish_batch(self, messages: Iterable[QueueMessageLike],
                               mandatory: bool = False) -> List[Confirm]:
        """Publishes several messages (``QueueMessage`` or tuples in its field order)
        and waits for each confirm; returns them in order. If one was not confirmed,
        raises its error with every confirm in ``error.results``."""
        keep: List[Any] = []
        array, count = queue_array(messages, keep)
        if not count:
            return []
        confirms = ffi.new("ringbroker_confirm[]", count)
        ptr = self._guard.enter()
        try:
            status = lib.ringbroker_exchange_publish(ptr, array, count, 1 if mandatory else 0, confirms)
            error = None if status == _OK else last_error(status)
        finally:
            self._guard.leave()
        out = [Confirm(int(c.queues), int(c.status)) for c in confirms]
        if error is not None:
            error.results = out
            raise error
        return out

    def exchange_publish_nowait(self, messages: Iterable[QueueMessageLike], mandatory: bool = False) -> None:
        """Publishes messages without waiting (fire and forget); confirms are not
        reported."""
        keep: List[Any] = []
        array, count = queue_array(messages, keep)
        if count:
            self._call(lib.ringbroker_exchange_publish_nowait, array, count, 1 if mandatory else 0)

    def consume_queue(self, queue: str, *, prefetch: Optional[int] = None,
                      no_ack: Optional[bool] = None) -> QueueConsumer:
        """Starts consuming ``queue``, with at most ``prefetch`` (default 100)
        unacknowledged deliveries; with ``no_ack`` deliveries need no ack. Raises
        :class:`NotFound`, :class:`Locked` (an exclusive queue of another
        connection)."""
        config = make_config(dict(prefetch=prefetch, no_ack=no_ack))
        return self._make(QueueConsumer, f"queue {queue}", lib.ringbroker_queue_consume, encode(queue), config)


def _error_of(status: int, message: Any) -> Exception:
    """The exception for a completion's ``status`` and C ``message`` (may be NULL)."""
    text = "" if message == ffi.NULL else ffi.string(message).decode("utf-8", "replace")
    return error_for(status, text)
