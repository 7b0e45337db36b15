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
from typing import TYPE_CHECKING, Any, Callable, Iterator, List, Optional, Sequence

from ._cdata import _Guard
from ._native import ffi, lib
from .errors import RingbrokerError, ShuttingDown, check, last_error
from .message import Message

if TYPE_CHECKING:  # pragma: no cover
    from .broker import Broker

WAIT_SLICE_MS = 250
"""The longest single wait in C of a receive without a deadline (see the module doc)."""

FETCH_MAX = 4096
"""The most messages one ``fetch`` returns."""

_OK = 0
_TIMEOUT = int(lib.RINGBROKER_TIMEOUT)
_WOULD_BLOCK = int(lib.RINGBROKER_WOULD_BLOCK)
_SHUTTING_DOWN = int(lib.RINGBROKER_SHUTTING_DOWN)


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

    def _wrap_all(self, array: Any, count: int) -> List[Message]:
        """Messages for ``array[:count]``; if one cannot be made (its C message is
        then freed by ``Message``), the ones after it are freed too before raising."""
        got: List[Message] = []
        try:
            for i in range(count):
                got.append(self._wrap(array[i]))
        except BaseException:
            for j in range(len(got) + 1, count):
                lib.ringbroker_msg_free(array[j])
            raise
        return got

    def next(self, timeout: Optional[float] = None) -> Message:
        """Waits up to ``timeout`` seconds (``None``: no limit) for the next message.
        Raises :class:`Timeout` if none came, :class:`NotFound` or
        :class:`ShuttingDown` once the consumer ended, :class:`Disconnected` if the
        connection is lost."""
        deadline = None if timeout is None else time.monotonic() + timeout
        out = ffi.new("ringbroker_msg_t **")
        with self._receiving:
            self._raise_pending()
            while True:
                ptr = self._guard.enter()
                try:
                    status = lib.ringbroker_next(ptr, _wait_ms(deadline), out)
                    error = None if status == _OK else last_error(status)
                finally:
                    self._guard.leave()
                if error is None:
                    return self._wrap(out[0])
                if status == _TIMEOUT and (deadline is None or time.monotonic() < deadline):
                    continue
                raise error

    def try_next(self) -> Optional[Message]:
        """The next message if one is buffered, else ``None`` (never waits)."""
        out = ffi.new("ringbroker_msg_t **")
        with self._receiving:
            self._raise_pending()
            ptr = self._guard.enter()
            try:
                status = lib.ringbroker_try_next(ptr, out)
                error = None if status in (_OK, _WOULD_BLOCK) else last_error(status)
            finally:
                self._guard.leave()
        if error is not None:
            raise error
        return self._wrap(out[0]) if status == _OK else None

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
        array = ffi.new("ringbroker_msg_t *[]", max_messages)
        count = ffi.new("uintptr_t *")
        with self._receiving:
            self._raise_pending()
            while True:
                ptr = self._guard.enter()
                try:
                    if wait:
                        status = lib.ringbroker_fetch(ptr, array, max_messages, count, _wait_ms(deadline))
                    else:
                        status = lib.ringbroker_try_fetch(ptr, array, max_messages, count)
                    error = None if status == _OK else last_error(status)
                finally:
                    self._guard.leave()
                got = self._wrap_all(array, int(count[0]))
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
