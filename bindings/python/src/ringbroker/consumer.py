"""Consumers: one C type (``ringbroker_consumer_t``) behind subject subscriptions,
stream consumers and queue consumers.

Receiving (``next``, ``fetch``, iteration) is for one thread at a time per consumer
(the C contract); this class serialises receivers with a lock, so sharing one
consumer between threads is safe, merely not parallel. Acknowledging works from any
thread. A wait without a timeout is made of waits of at most
:data:`WAIT_SLICE_MS` each, so that ``close()`` from another thread and Ctrl-C
(``KeyboardInterrupt``) are noticed promptly; every wait runs in C with the GIL
released.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence

from ._cdata import _Guard
from ._native import ffi, lib
from .errors import RingbrokerError, ShuttingDown, Timeout, last_error
from .message import Message, _SubjectCopy

if TYPE_CHECKING:  # pragma: no cover
    from .broker import Broker

WAIT_SLICE_MS = 250
"""The longest single wait in C of a receive without a deadline (see the module doc)."""

FETCH_MAX = 4096
"""The most messages one ``fetch`` returns."""

_SUBJECTS_CACHED = 1024  # decoded subjects a consumer keeps (emptied when full)
_NO_REPLY = int(lib.RBPY_NO_REPLY)
_NEW_SUBJECT = int(lib.RBPY_NEW_SUBJECT)


class _FetchSpace:
    """A consumer's C memory for ``rbpy_fetch`` (``native/rbpy.h``), reused by every
    fetch of up to ``capacity`` messages: the message pointers, one entry per
    message, and the bytes the small subject messages are copied to (256 bytes a
    message, between 16 and 256 KiB; a message that does not fit stays a C message).
    Used only under the consumer's receive lock."""

    __slots__ = ("capacity", "msgs", "entries", "flat", "bytes", "bytes_cap", "count", "used")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.msgs = ffi.new("ringbroker_msg_t *[]", capacity)
        self.entries = ffi.new("rbpy_entry[]", capacity)
        self.flat = ffi.cast("uint32_t *", self.entries)  # 4 uint32_t an entry
        self.bytes_cap = max(16 << 10, min(256 << 10, capacity * 256))
        self.bytes = ffi.new("uint8_t[]", self.bytes_cap)
        self.count = ffi.new("size_t *")
        self.used = ffi.new("size_t *")

_OK = 0


def _wait_ms(deadline: Optional[float]) -> int:
    if deadline is None:
        return WAIT_SLICE_MS
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return 0
    return min(WAIT_SLICE_MS, math.ceil(remaining * 1000))


class Consumer:
    """A subscription or consumer. Made by :meth:`Broker.subscribe`,
    :meth:`Broker.consume_stream` and :meth:`Broker.consume_queue`; closed by
    :meth:`close`, by leaving a ``with`` block, or when garbage. Messages it returned
    stay valid after it is closed."""

    def __init__(self, broker: "Broker", ptr: Any, what: str) -> None:
        """Takes ownership of ``ptr`` (a ``ringbroker_consumer_t *``). Not called by
        users."""
        self._guard = _Guard(ptr, lib.ringbroker_consumer_free, what)
        self._broker = broker
        self._receiving = threading.Lock()
        self._pending_error: Optional[RingbrokerError] = None
        self._close_hooks: List[Callable[[], Optional[Callable[[], None]]]] = []  # weak methods
        self._finalizer = weakref.finalize(self, self._guard.close, False)
        self._space: Optional[_FetchSpace] = None  # made by the first fetch
        self._subjects: Dict[bytes, str] = {}  # decoded subjects of detached messages
        self.what = what
        """What it consumes, for messages and ``repr``."""
        fd = ffi.new("int *")
        self._call(lib.ringbroker_consumer_fd, fd)
        self._fd = int(fd[0])

    def _call(self, function: Any, *args: Any) -> None:
        """Calls ``function(consumer, *args)``; raises the error unless it returned OK."""
        ptr = self._guard.enter()
        try:
            status = function(ptr, *args)
            if status != _OK:
                raise last_error(status)
        finally:
            self._guard.leave()

    @property
    def broker(self) -> "Broker":
        """The broker it was made from."""
        return self._broker

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._guard.closed

    def close(self) -> None:
        """Closes it: a subscription unsubscribes, a stream consumer leaves its group
        (its unacknowledged records go to other members), a queue consumer is
        cancelled (its unacknowledged deliveries go back to the queue). A receive in
        progress in another thread ends with :class:`ShuttingDown` within
        :data:`WAIT_SLICE_MS`. Idempotent."""
        self._closing()
        self._finalizer()

    def _retire(self) -> None:
        """Closes it, waits for the calls in flight on it (a receive ends within
        :data:`WAIT_SLICE_MS`) and frees it: :meth:`Broker.close` does this for each
        consumer made from the broker before it closes the handle."""
        self._closing()
        self._guard.retire()
        self._finalizer.detach()

    def _closing(self) -> None:
        """Tells the wrappers watching this consumer's fd (``aio.AsyncConsumer``)
        that it is about to be closed and freed."""
        hooks, self._close_hooks = self._close_hooks, []
        for ref in hooks:
            hook = ref()
            if hook is not None:
                try:
                    hook()
                except Exception:  # noqa: BLE001 - closing must go on
                    pass

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        """The consumer's eventfd: readable when messages may be ready after a
        ``try_`` call found none (docs/c-api.md, "Event loops"). It belongs to the
        consumer: do not read or close it."""
        return self._fd

    # -- receiving --------------------------------------------------------------------

    def _wrap(self, ptr: Any) -> Message:
        return Message(ptr, self, self._broker)

    def _take(self, space: "_FetchSpace") -> List[Message]:
        """The messages of the last ``rbpy_fetch`` into ``space``: a ``_SubjectCopy``
        for each one it detached, a :class:`Message` over each other one. If a
        :class:`Message` cannot be made (its C message is then freed by
        ``Message``), the C messages after it are freed too before raising."""
        count = int(space.count[0])
        if count == 0:
            return []
        used = int(space.used[0])
        raw = ffi.buffer(space.bytes, used)[:] if used else b""
        flat = ffi.unpack(space.flat, 4 * count)
        msgs = space.msgs
        subjects = self._subjects
        broker = self._broker
        got: List[Message] = []
        append = got.append
        pos = 0
        i = 0
        subject = ""
        it = iter(flat)
        try:
            for subject_len, reply_len, payload_len, detached in zip(it, it, it, it):
                if detached:
                    end = pos
                    if detached == _NEW_SUBJECT:
                        end += subject_len
                        raw_subject = raw[pos:end]
                        subject = subjects.get(raw_subject)
                        if subject is None:
                            if len(subjects) >= _SUBJECTS_CACHED:
                                subjects.clear()
                            subject = subjects[raw_subject] = raw_subject.decode("utf-8", "replace")
                    reply = None
                    if reply_len != _NO_REPLY:
                        reply = raw[end:end + reply_len].decode("utf-8", "replace")
                        end += reply_len
                    pos = end + payload_len
                    append(_SubjectCopy(subject, reply, memoryview(raw[end:pos]), broker))
                else:
                    append(self._wrap(msgs[i]))
                i += 1
        except BaseException:
            for j in range(i + 1, count):
                if msgs[j] != ffi.NULL:
                    lib.ringbroker_msg_free(msgs[j])
            raise
        return got

    def next(self, timeout: Optional[float] = None) -> Message:
        """Waits up to ``timeout`` seconds (``None``: no limit) for the next message.
        Raises :class:`Timeout` if none came, :class:`NotFound` or
        :class:`ShuttingDown` once the consumer ended, :class:`Disconnected` if the
        connection is lost."""
        got = self._fetch(1, timeout, wait=True)
        if not got:
            raise Timeout("no message within the timeout")
        return got[0]

    def try_next(self) -> Optional[Message]:
        """The next message if one is buffered, else ``None`` (never waits)."""
        got = self._fetch(1, 0, wait=False)
        return got[0] if got else None

    def fetch(self, max_messages: int = 64, timeout: Optional[float] = None) -> List[Message]:
        """Waits up to ``timeout`` seconds (``None``: no limit; 0: never waits) for a
        first message, then takes what else is buffered, up to ``max_messages``.
        Returns ``[]`` on timeout. Errors as :meth:`next`; messages taken before an
        error are returned first and the error is raised by the next receive."""
        return self._fetch(max_messages, timeout, wait=True)

    def try_fetch(self, max_messages: int = 64) -> List[Message]:
        """What is buffered, up to ``max_messages``, without waiting."""
        return self._fetch(max_messages, 0, wait=False)

    def _fetch(self, max_messages: int, timeout: Optional[float], wait: bool) -> List[Message]:
        if not 0 < max_messages <= FETCH_MAX:
            raise ValueError(f"max_messages must be 1 to {FETCH_MAX}, not {max_messages}")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._receiving:
            self._raise_pending()
            space = self._space
            if space is None or space.capacity < max_messages:
                space = self._space = _FetchSpace(max_messages)
            while True:
                ptr = self._guard.enter()
                try:
                    status = lib.rbpy_fetch(ptr, 1 if wait else 0, _wait_ms(deadline) if wait else 0,
                                            space.msgs, space.entries, max_messages,
                                            space.bytes, space.bytes_cap, space.count, space.used)
                    error = None if status == _OK else last_error(status)
                finally:
                    self._guard.leave()
                got = self._take(space)
                if error is not None:
                    if got:
                        self._pending_error = error
                        return got
                    raise error
                if got or not wait or (deadline is not None and time.monotonic() >= deadline):
                    return got

    def _raise_pending(self) -> None:
        error, self._pending_error = self._pending_error, None
        if error is not None:
            raise error

    def messages(self, idle_timeout: Optional[float] = None) -> Iterator[Message]:
        """Yields messages as they come until the consumer is closed or ends
        (:class:`ShuttingDown`), or, with ``idle_timeout``, until none came for that
        many seconds. Other errors are raised."""
        while True:
            try:
                batch = self.fetch(64, idle_timeout)
            except ShuttingDown:
                return
            if not batch:
                return
            yield from batch

    def __iter__(self) -> Iterator[Message]:
        """``for msg in consumer``: :meth:`messages` without an idle timeout."""
        return self.messages()

    # -- acknowledging ----------------------------------------------------------------

    def ack(self, msg: Message) -> None:
        """Acknowledges a stream record or queue delivery this consumer received.
        Raises :class:`WrongKind` on a subject subscription."""
        ptr, owner = msg._pointer()
        self._call(lib.ringbroker_ack, ptr)
        del owner

    def ack_batch(self, msgs: Sequence[Message]) -> None:
        """Acknowledges several messages in one call (stream records in one
        request)."""
        if not msgs:
            return
        owners = []
        array = ffi.new("ringbroker_msg_t *[]", len(msgs))
        for i, msg in enumerate(msgs):
            ptr, owner = msg._pointer()
            owners.append(owner)
            array[i] = ptr
        self._call(lib.ringbroker_ack_batch, array, len(msgs))
        del owners

    def commit(self, msg: Message) -> None:
        """Stream consumers: acknowledges every record of ``msg``'s partition this
        consumer received up to and including ``msg``. Raises :class:`WrongKind` on
        other consumers."""
        ptr, owner = msg._pointer()
        self._call(lib.ringbroker_commit, ptr)
        del owner

    def nack(self, msg: Message, requeue: bool = True, delay: float = 0.0) -> None:
        """Stream consumers: ``msg`` is delivered again after ``delay`` seconds. Queue
        consumers: back to the queue if ``requeue``, else dead-lettered (or dropped);
        ``delay`` must be 0 (:class:`InvalidArgument` otherwise)."""
        if delay < 0:
            raise ValueError("delay must not be negative")
        ptr, owner = msg._pointer()
        self._call(lib.ringbroker_nack, ptr, round(delay * 1000), 1 if requeue else 0)
        del owner

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<ringbroker.{type(self).__name__} {self.what}{state}>"


class Subscription(Consumer):
    """A subject subscription (:meth:`Broker.subscribe`): at most once, no acks."""


class StreamConsumer(Consumer):
    """A member of a durable consumer's group, or an ephemeral consumer, of a stream
    (:meth:`Broker.consume_stream`). Acknowledge with :meth:`ack`, :meth:`commit`,
    :meth:`nack` (or the same methods of a message)."""


class QueueConsumer(Consumer):
    """A consumer of a queue (:meth:`Broker.consume_queue`): deliveries wait for
    :meth:`ack` / :meth:`nack` (or by tag, :meth:`ack_tag` / :meth:`nack_tag`),
    with at most ``prefetch`` unacknowledged at once."""

    def ack_tag(self, delivery_tag: int, multiple: bool = False) -> None:
        """Acknowledges ``delivery_tag``, and every earlier one if ``multiple``."""
        self._call(lib.ringbroker_queue_ack, delivery_tag, 1 if multiple else 0)

    def nack_tag(self, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        """Rejects ``delivery_tag`` (and every earlier one if ``multiple``): back to the
        queue if ``requeue``, else dead-lettered or dropped."""
        self._call(lib.ringbroker_queue_nack, delivery_tag, 1 if multiple else 0, 1 if requeue else 0)
