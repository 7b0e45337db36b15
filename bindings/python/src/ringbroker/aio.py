"""asyncio for ringbroker, driven by the C API's eventfds.

- Receiving: an :class:`AsyncConsumer` follows the event-loop contract of
  docs/c-api.md: it takes what is buffered with ``ringbroker_try_fetch``; when that
  finds nothing, it waits for the consumer's eventfd to turn readable
  (``loop.add_reader``) and tries again.
- Publishing with outcomes and requests: :meth:`AsyncBroker.stream_publish`,
  :meth:`AsyncBroker.exchange_publish` and :meth:`AsyncBroker.request` start the
  asynchronous C calls (``ringbroker_stream_publish_async``,
  ``ringbroker_exchange_publish_async``, ``ringbroker_request_async``) with a token
  and return a future; the handle's completion eventfd is watched with
  ``loop.add_reader`` and ``ringbroker_completions_poll`` resolves the futures.

No thread polls in a loop, and no awaitable here blocks the event loop, except the
calls the C API has no asynchronous form for (opening, connecting, closing, creating
consumers, and the administrative calls: declaring, deleting, binding, info): those
run once each in the loop's default executor. Fire-and-forget publishes, responses and
acknowledgements are non-blocking C calls made directly.

Use one :class:`AsyncBroker` per broker handle, from one event loop (the handle's
completions are polled from one thread).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import threading
import time
import weakref
from typing import Any, AsyncIterator, Callable, Deque, Dict, Iterable, List, Optional, Sequence

from . import connect as _connect
from . import open as _open
from ._cdata import Bytes, Headers, byte_arg, encode
from ._native import ffi, lib
from ._outgoing import (
    QueueMessage,
    QueueMessageLike,
    Record,
    RecordLike,
    SubjectMessageLike,
    queue_array,
    record_array,
    with_msg_id,
)
from .broker import Broker, Confirm, PublishResult, _error_of
from .consumer import FETCH_MAX, Consumer, QueueConsumer
from .errors import RingbrokerError, ShuttingDown, Timeout, last_error
from .message import Message

COMPLETIONS_PER_POLL = 256
"""How many completions one ``ringbroker_completions_poll`` takes at most."""

FETCH_PER_WAKE = 64
"""The fewest messages an :class:`AsyncConsumer` asks ``try_fetch`` for (more when a
``fetch`` asks for more, up to ``FETCH_MAX``); what the caller did not ask for stays
buffered for the next receive."""

CLOSE_DRAIN_S = 5.0
"""How long :meth:`AsyncBroker.aclose` waits for outstanding publishes and requests."""

CLOSE_HANDOFF_S = 1.0
"""How long closing a consumer from another thread (``Broker.close()`` in an executor,
say) waits for the loop to stop watching the consumer's fd before freeing it."""


class _Pending:
    """One asynchronous call awaiting ``count`` completions."""

    __slots__ = ("future", "kind", "items", "left", "error")

    def __init__(self, future: "asyncio.Future[Any]", kind: str, count: int) -> None:
        self.future = future
        self.kind = kind  # "request", "stream" or "exchange"
        self.items: List[Any] = [None] * count
        self.left = count
        self.error: Optional[Exception] = None  # of the first failed item by index


class AsyncBroker:
    """A :class:`~ringbroker.Broker` for asyncio. Make one with :func:`open` or
    :func:`connect` (it then owns the broker), or wrap an existing broker with
    ``AsyncBroker(broker)`` inside a running loop. ``async with`` closes it."""

    def __init__(self, broker: Broker, *, owns: bool = False) -> None:
        """Attaches to ``broker`` in the running event loop. With ``owns``,
        :meth:`aclose` also closes the broker."""
        if broker._async_owner is not None:
            raise RuntimeError("this broker already has an AsyncBroker (one per handle)")
        self._broker = broker
        self._owns = owns
        self._loop = asyncio.get_running_loop()
        self._pending: Dict[int, _Pending] = {}
        self._completions = ffi.new("ringbroker_completion[]", COMPLETIONS_PER_POLL)
        self._count = ffi.new("uintptr_t *")
        fd = ffi.new("int *")
        broker._call(lib.ringbroker_completions_fd, fd)
        self._fd = int(fd[0])
        self._loop.add_reader(self._fd, self._on_completions)
        self._attached = True
        broker._async_owner = self

    @property
    def sync(self) -> Broker:
        """The underlying (synchronous) broker."""
        return self._broker

    @property
    def embedded(self) -> bool:
        """Whether the engine runs in this process."""
        return self._broker.embedded

    # -- lifetime ---------------------------------------------------------------------

    def _detach(self) -> None:
        """Stops watching completions and fails what is still pending with
        ShuttingDown. Called by :meth:`aclose` and by ``Broker.close()``. Tokens are
        the handle's (never reused), so the late completions of what was pending here
        reach no later AsyncBroker's future: the one polling then drops them."""
        if not self._attached:
            return
        self._attached = False
        self._broker._async_owner = None
        if not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(ShuttingDown("the broker was closed before the answer came"))

    async def aclose(self) -> None:
        """Waits up to :data:`CLOSE_DRAIN_S` for outstanding publishes and requests,
        stops watching the completion fd, and closes the broker if this object owns
        it (in the default executor: an embedded broker syncs its shards)."""
        futures = [p.future for p in self._pending.values()]
        if futures:
            await asyncio.wait(futures, timeout=CLOSE_DRAIN_S)
        self._detach()
        if self._owns and not self._broker.closed:
            await self._loop.run_in_executor(None, self._broker.close)

    async def __aenter__(self) -> "AsyncBroker":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _blocking(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await self._loop.run_in_executor(None, functools.partial(function, *args, **kwargs))

    # -- completions ------------------------------------------------------------------

    def _on_completions(self) -> None:
        """The completion fd is readable: poll until fewer than asked come back."""
        while self._attached:
            ptr = self._broker._guard.enter()
            try:
                status = lib.ringbroker_completions_poll(ptr, self._completions, COMPLETIONS_PER_POLL, self._count)
                error = None if status == 0 else last_error(status)
            finally:
                self._broker._guard.leave()
            if error is not None:  # only for a NULL argument: a bug here
                raise error
            n = int(self._count[0])
            failure: Optional[BaseException] = None
            for i in range(n):  # every completion is consumed (its reply owned) even if one fails
                try:
                    self._complete(self._completions[i])
                except Exception as e:  # noqa: BLE001 - raised below, to the loop's handler
                    failure = failure or e
            if failure is not None:
                raise failure
            if n < COMPLETIONS_PER_POLL:
                return

    def _complete(self, c: Any) -> None:
        reply: Optional[Message] = None
        status = int(c.status)
        error: Optional[Exception] = None
        if c.reply != ffi.NULL:
            try:
                reply = Message(c.reply, None, self._broker)
            except RingbrokerError as e:  # Message freed the C reply
                error = e
        pending = self._pending.get(int(c.token))
        if pending is None:
            # A call of an AsyncBroker detached from this handle before its answer
            # came: nobody waits for it here; the reply is freed now.
            if reply is not None:
                reply.release()
            return
        index = int(c.index)
        if status != 0:
            error = _error_of(status, c.message)
        if error is not None:
            if pending.error is None or index < getattr(pending.error, "_index", 1 << 62):
                error._index = index  # type: ignore[attr-defined]
                pending.error = error
        if pending.kind == "request":
            pending.items[index] = reply
        elif pending.kind == "stream":
            pending.items[index] = PublishResult(int(c.partition), int(c.offset), bool(c.duplicate), int(c.status))
        else:
            pending.items[index] = Confirm(int(c.queues), int(c.status))
        pending.left -= 1
        if pending.left:
            return
        del self._pending[int(c.token)]
        if pending.future.done():  # cancelled: the outcome is dropped (a reply is freed)
            return
        if pending.error is not None:
            if pending.kind != "request":
                pending.error.results = pending.items  # type: ignore[attr-defined]
            pending.future.set_exception(pending.error)
        else:
            pending.future.set_result(pending.items[0] if pending.kind == "request" else pending.items)

    def _start(self, kind: str, count: int, function: Any, *args: Any) -> "asyncio.Future[Any]":
        """Calls ``function(handle, *args, token)`` and returns the future its
        ``count`` completions resolve."""
        if not self._attached:
            raise ShuttingDown("the AsyncBroker is closed")
        token = next(self._broker._async_tokens)
        future = self._loop.create_future()
        self._pending[token] = _Pending(future, kind, count)
        try:
            self._broker._call(function, *args, token)
        except BaseException:
            del self._pending[token]  # an error: no completion comes
            raise
        return future

    # -- subjects ---------------------------------------------------------------------

    def publish(self, subject: str, data: Bytes = b"", *, reply: Optional[str] = None,
                headers: Optional[Headers] = None) -> None:
        """:meth:`Broker.publish` (fire and forget; never blocks)."""
        self._broker.publish(subject, data, reply=reply, headers=headers)

    def publish_batch(self, messages: Iterable[SubjectMessageLike]) -> None:
        """:meth:`Broker.publish_batch` (fire and forget; never blocks)."""
        self._broker.publish_batch(messages)

    def respond(self, request: Message, data: Bytes = b"") -> None:
        """:meth:`Broker.respond` (fire and forget; never blocks)."""
        self._broker.respond(request, data)

    async def request(self, subject: str, data: Bytes = b"", timeout: float = 5.0) -> Message:
        """Sends ``data`` to ``subject`` and returns the first reply, waiting at most
        ``timeout`` seconds. Raises :class:`NoResponders` if nothing subscribes to
        ``subject``, :class:`Timeout` if no reply came in time. Cancelling the await
        is safe: the reply, if one comes, is freed."""
        if timeout < 0:
            raise ValueError("timeout must not be negative")
        payload, length = byte_arg(data)
        future = self._start("request", 1, lib.ringbroker_request_async, encode(subject), payload, length,
                             round(timeout * 1000))
        reply: Message = await future
        return reply

    async def subscribe(self, pattern: str, queue_group: Optional[str] = None) -> "AsyncConsumer":
        """:meth:`Broker.subscribe`, as an :class:`AsyncConsumer`."""
        return AsyncConsumer(await self._blocking(self._broker.subscribe, pattern, queue_group))

    # -- streams ----------------------------------------------------------------------

    async def stream_publish(self, subject: str, data: Bytes = b"", *, key: Optional[Bytes] = None,
                             headers: Optional[Headers] = None, msg_id: Optional[Bytes] = None) -> PublishResult:
        """Publishes one record and returns its result once stored (as
        :meth:`Broker.stream_publish`, without blocking the loop)."""
        results = await self.stream_publish_batch([Record(subject, data, key, with_msg_id(headers, msg_id))])
        return results[0]

    async def stream_publish_batch(self, records: Iterable[RecordLike]) -> List[PublishResult]:
        """Publishes records in one call; returns their results in order once each is
        stored. If one failed, raises the error of the first that did, with every
        result in ``error.results``."""
        keep: List[Any] = []
        array, count = record_array(records, keep)
        if not count:
            return []
        results: List[PublishResult] = await self._start("stream", count, lib.ringbroker_stream_publish_async,
                                                         array, count)
        return results

    def stream_publish_nowait(self, records: Iterable[RecordLike]) -> None:
        """:meth:`Broker.stream_publish_nowait` (fire and forget; never blocks)."""
        self._broker.stream_publish_nowait(records)

    async def consume_stream(self, stream: str, name: Optional[str] = None, **options: Any) -> "AsyncConsumer":
        """:meth:`Broker.consume_stream`, as an :class:`AsyncConsumer`."""
        return AsyncConsumer(await self._blocking(self._broker.consume_stream, stream, name, **options))

    # -- exchanges and queues ---------------------------------------------------------

    async def exchange_publish(self, exchange: str, routing_key: str, data: Bytes = b"", *,
                               headers: Optional[Headers] = None, priority: int = 0, persistent: bool = False,
                               expiration_ms: int = 0, mandatory: bool = False) -> int:
        """Publishes one message and returns how many queues it reached once
        confirmed (as :meth:`Broker.exchange_publish`, without blocking the loop)."""
        message = QueueMessage(exchange, routing_key, data, headers, priority, persistent, expiration_ms)
        confirms = await self.exchange_publish_batch([message], mandatory=mandatory)
        return confirms[0].queues

    async def exchange_publish_batch(self, messages: Iterable[QueueMessageLike],
                                     mandatory: bool = False) -> List[Confirm]:
        """Publishes messages in one call; returns their confirms in order. If one
        was not confirmed, raises its error with every confirm in ``error.results``."""
        keep: List[Any] = []
        array, count = queue_array(messages, keep)
        if not count:
            return []
        confirms: List[Confirm] = await self._start("exchange", count, lib.ringbroker_exchange_publish_async,
                                                    array, count, 1 if mandatory else 0)
        return confirms

    def exchange_publish_nowait(self, messages: Iterable[QueueMessageLike], mandatory: bool = False) -> None:
        """:meth:`Broker.exchange_publish_nowait` (fire and forget; never blocks)."""
        self._broker.exchange_publish_nowait(messages, mandatory)

    async def consume_queue(self, queue: str, *, prefetch: Optional[int] = None,
                            no_ack: Optional[bool] = None) -> "AsyncConsumer":
        """:meth:`Broker.consume_queue`, as an :class:`AsyncConsumer`."""
        return AsyncConsumer(await self._blocking(self._broker.consume_queue, queue, prefetch=prefetch,
                                                  no_ack=no_ack))


_ADMIN = (
    "create_stream", "update_stream", "delete_stream", "stream_info", "create_consumer", "delete_consumer",
    "consumer_info", "declare_exchange", "delete_exchange", "bind_exchange", "declare_queue", "delete_queue",
    "purge_queue", "queue_info", "bind_queue", "unbind_queue",
)
"""The Broker methods AsyncBroker offers as coroutines run in the default executor
(the C API has no asynchronous form for them)."""


def _admin(name: str) -> Callable[..., Any]:
    method = getattr(Broker, name)

    @functools.wraps(method)
    async def call(self: AsyncBroker, *args: Any, **kwargs: Any) -> Any:
        return await self._blocking(getattr(self._broker, name), *args, **kwargs)

    call.__doc__ = f":meth:`Broker.{name}`, run in the loop's default executor.\n\n{method.__doc__}"
    return call


for _name in _ADMIN:
    setattr(AsyncBroker, _name, _admin(_name))


class AsyncConsumer:
    """A consumer for asyncio: ``await c.next()``, ``await c.fetch()``, ``async for
    msg in c``. Receive from one task at a time (a second concurrent receive raises
    ``RuntimeError``). Cancelling a receive loses no message: a message is only taken
    from the consumer by a call that returns it at once, or keeps it buffered here
    for the next receive."""

    def __init__(self, consumer: Consumer) -> None:
        """Wraps a synchronous consumer; made by :class:`AsyncBroker`'s methods."""
        self._consumer = consumer
        self._loop = asyncio.get_running_loop()
        self._buffer: Deque[Message] = collections.deque()
        self._receiving = False
        self._waiter: Optional["asyncio.Future[None]"] = None  # set while waiting on the fd
        self._pending_error: Optional[Exception] = None  # raised by the next receive
        self._ended = False  # the sync consumer is closed or being closed: no more fd waits
        consumer._close_hooks.append(weakref.WeakMethod(self._sync_closing))

    @property
    def sync(self) -> Consumer:
        """The underlying (synchronous) consumer."""
        return self._consumer

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._consumer.closed

    def close(self) -> None:
        """Closes the consumer (as :meth:`Consumer.close`); messages buffered here are
        released (unacknowledged stream records and queue deliveries are delivered
        again)."""
        self._stop_watching()
        self._consumer.close()
        self._buffer.clear()

    def _stop_watching(self) -> None:
        """In the loop: no more waits on the fd; a wait in progress ends with
        ShuttingDown."""
        self._ended = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None:  # stop watching the fd before the consumer frees it
            self._loop.remove_reader(self._consumer.fileno())
            if not waiter.done():
                waiter.set_exception(ShuttingDown("the consumer was closed"))

    def _sync_closing(self) -> None:
        """The sync consumer is about to be closed and freed, maybe by another thread
        (``Broker.close()`` closes its consumers): the loop stops watching its fd first
        (waiting at most :data:`CLOSE_HANDOFF_S` for the loop to do so)."""
        try:
            running: Optional[asyncio.AbstractEventLoop] = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._stop_watching()
            return
        if self._loop.is_closed() or not self._loop.is_running():
            self._ended = True  # no wait can be in progress
            return
        done = threading.Event()

        def stop() -> None:
            try:
                self._stop_watching()
            finally:
                done.set()

        try:
            self._loop.call_soon_threadsafe(stop)
        except RuntimeError:  # the loop closed meanwhile
            return
        done.wait(CLOSE_HANDOFF_S)

    async def __aenter__(self) -> "AsyncConsumer":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def _take(self, max_messages: int) -> List[Message]:
        """Buffered messages first, then what ``try_fetch`` finds. If it fails after
        messages were taken from the buffer, they are returned and the error is raised
        by the next receive (as :meth:`Consumer.fetch` does)."""
        out: List[Message] = []
        while self._buffer and len(out) < max_messages:
            out.append(self._buffer.popleft())
        if len(out) < max_messages:
            error, self._pending_error = self._pending_error, None
            try:
                if error is not None:
                    raise error
                # One C call takes what this receive asks for (at least FETCH_PER_WAKE).
                batch = self._consumer.try_fetch(min(FETCH_MAX, max(FETCH_PER_WAKE, max_messages - len(out))))
            except Exception as e:
                if out:
                    self._pending_error = e
                    return out
                raise
            room = max_messages - len(out)
            out.extend(batch[:room])
            self._buffer.extend(batch[room:])
        return out

    async def _readable(self, deadline: Optional[float]) -> None:
        """Waits until the consumer's fd is readable (or the deadline passes: Timeout)."""
        if self._ended:
            raise ShuttingDown("the consumer was closed")
        future: "asyncio.Future[None]" = self._loop.create_future()
        fd = self._consumer.fileno()

        def ready() -> None:
            if not future.done():
                future.set_result(None)

        self._loop.add_reader(fd, ready)
        self._waiter = future
        try:
            if deadline is None:
                await future
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Timeout("no message within the timeout")
                try:
                    await asyncio.wait_for(future, remaining)
                except asyncio.TimeoutError:
                    raise Timeout("no message within the timeout") from None
        finally:
            if self._waiter is future:  # else close() already removed the reader
                self._waiter = None
                self._loop.remove_reader(fd)

    async def fetch(self, max_messages: int = 64, timeout: Optional[float] = None) -> List[Message]:
        """Waits up to ``timeout`` seconds (``None``: no limit) for a first message,
        then returns it with what else is ready, up to ``max_messages``; ``[]`` on
        timeout."""
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if self._receiving:
            raise RuntimeError("another task is receiving from this consumer")
        self._receiving = True
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                got = self._take(max_messages)
                if got:
                    return got
                try:
                    await self._readable(deadline)
                except Timeout:
                    return []
        finally:
            self._receiving = False

    async def next(self, timeout: Optional[float] = None) -> Message:
        """The next message, waiting up to ``timeout`` seconds (``None``: no limit).
        Raises :class:`Timeout`, or the consumer's error (:class:`ShuttingDown` once
        closed)."""
        got = await self.fetch(1, timeout)
        if not got:
            raise Timeout("no message within the timeout")
        return got[0]

    def __aiter__(self) -> "AsyncConsumer":
        return self

    async def __anext__(self) -> Message:
        """``async for``: ends when the consumer is closed or ends."""
        try:
            return await self.next()
        except ShuttingDown:
            raise StopAsyncIteration from None

    async def messages(self, idle_timeout: Optional[float] = None) -> AsyncIterator[Message]:
        """Yields messages until the consumer ends or, with ``idle_timeout``, until
        none came for that many seconds."""
        while True:
            try:
                batch = await self.fetch(FETCH_PER_WAKE, idle_timeout)
            except ShuttingDown:
                return
            if not batch:
                return
            for msg in batch:
                yield msg

    def ack(self, msg: Message) -> None:
        """:meth:`Consumer.ack`."""
        self._consumer.ack(msg)

    def ack_batch(self, msgs: Sequence[Message]) -> None:
        """:meth:`Consumer.ack_batch`."""
        self._consumer.ack_batch(msgs)

    def commit(self, msg: Message) -> None:
        """:meth:`Consumer.commit`."""
        self._consumer.commit(msg)

    def nack(self, msg: Message, requeue: bool = True, delay: float = 0.0) -> None:
        """:meth:`Consumer.nack`."""
        self._consumer.nack(msg, requeue=requeue, delay=delay)

    def ack_tag(self, delivery_tag: int, multiple: bool = False) -> None:
        """:meth:`QueueConsumer.ack_tag` (queue consumers)."""
        if not isinstance(self._consumer, QueueConsumer):
            raise TypeError("ack_tag is for queue consumers")
        self._consumer.ack_tag(delivery_tag, multiple)


async def open(data_dir: str, shards: Optional[int] = None, **options: Any) -> AsyncBroker:
    """:func:`ringbroker.open` in the default executor; the AsyncBroker owns the broker."""
    loop = asyncio.get_running_loop()
    broker = await loop.run_in_executor(None, functools.partial(_open, data_dir, shards, **options))
    return AsyncBroker(broker, owns=True)


async def connect(url: str = "ringbroker://127.0.0.1:7070", **options: Any) -> AsyncBroker:
    """:func:`ringbroker.connect` in the default executor; the AsyncBroker owns the
    broker."""
    loop = asyncio.get_running_loop()
    broker = await loop.run_in_executor(None, functools.partial(_connect, url, **options))
    return AsyncBroker(broker, owns=True)


__all__ = ["AsyncBroker", "AsyncConsumer", "connect", "open"]
