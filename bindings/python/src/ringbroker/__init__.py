"""ringbroker for Python: an embeddable message broker (NATS-style subjects with
request-reply, RabbitMQ-style exchanges and queues, Kafka-style partitioned streams),
embedded in this process or in a ``ringbrokerd``, through one :class:`Broker` type.

>>> import ringbroker
>>> with ringbroker.open(data_dir="/tmp/rb-doc", shards=1) as broker:   # doctest: +SKIP
...     with broker.subscribe("greet.*") as sub:
...         broker.publish("greet.world", b"hello")
...         print(sub.next(timeout=1).text())
hello

The binding is a thin layer over the C API (``include/ringbroker.h``), compiled with
cffi in API mode. See ``docs/python.md`` in the repository for the guide, and
:mod:`ringbroker.aio` for asyncio.
"""

from __future__ import annotations

from typing import Any, Optional

from ._native import ffi as _ffi, lib as _lib

if _lib.ringbroker_abi_version() != _lib.RINGBROKER_ABI_VERSION:  # pragma: no cover
    raise ImportError(
        f"libringbroker implements ABI {_lib.ringbroker_abi_version()}, "
        f"the binding was built for {_lib.RINGBROKER_ABI_VERSION}: rebuild the package"
    )

from ._cdata import make_config as _make_config
from ._outgoing import QueueMessage, Record, SubjectMessage
from .broker import Broker, Confirm, ConsumerInfo, PublishResult, QueueInfo, StreamInfo
from .consumer import Consumer, QueueConsumer, StreamConsumer, Subscription
from .errors import (
    AlreadyExists,
    AuthFailed,
    Backpressure,
    Disconnected,
    FrameTooLarge,
    IdInUse,
    IdleTimeout,
    Internal,
    InvalidArgument,
    Locked,
    Malformed,
    NoResponders,
    NotFound,
    OutOfState,
    Refused,
    RingbrokerError,
    ShuttingDown,
    SlowConsumer,
    Timeout,
    UnknownOp,
    Unroutable,
    VersionUnsupported,
    WouldBlock,
    WrongKind,
    check as _check,
)
from .message import Message

__version__: str = _ffi.string(_lib.ringbroker_version()).decode()
"""The library's version (the package is versioned with it)."""

ABI_VERSION: int = int(_lib.ringbroker_abi_version())
"""The C ABI version of the library this package is linked with."""

DEFAULT_URL = "ringbroker://127.0.0.1:7070"
"""Where :func:`connect` goes by default."""


def open(data_dir: str, shards: Optional[int] = None, *, pin_to_cores: Optional[bool] = None,
         **options: Any) -> Broker:
    """Starts an embedded broker on ``data_dir`` (created if missing; locked, so one
    broker per directory) with ``shards`` shards (default: one per core; each shard
    pins a thread to a core unless ``pin_to_cores=False``). Raises :class:`Locked`
    if another broker has the directory, :class:`InvalidArgument` for a bad option,
    :class:`Internal` if the directory or the shards could not be set up."""
    config = _make_config(dict(data_dir=str(data_dir), shards=shards, pin_to_cores=pin_to_cores, **options))
    out = _ffi.new("ringbroker_t **")
    _check(_lib.ringbroker_open(config, out))
    return Broker(out[0], str(data_dir))


def connect(url: str = DEFAULT_URL, *, auth_token: Optional[str] = None, client_name: Optional[str] = None,
            connect_timeout_ms: Optional[int] = None, request_timeout_ms: Optional[int] = None,
            reconnect: Optional[bool] = None, **options: Any) -> Broker:
    """Connects to a ``ringbrokerd`` at ``url`` (``ringbroker://host[:port]``, port
    7070 by default). With ``reconnect`` (the default) a dropped connection is
    re-made and subscriptions and consumers re-created. Raises
    :class:`Disconnected` (could not connect), :class:`AuthFailed`,
    :class:`VersionUnsupported`, :class:`InvalidArgument` (bad URL or option)."""
    settings = dict(auth_token=auth_token, client_name=client_name, connect_timeout_ms=connect_timeout_ms,
                    request_timeout_ms=request_timeout_ms, reconnect=reconnect, **options)
    config = _make_config(settings) if any(v is not None for v in settings.values()) else _ffi.NULL
    out = _ffi.new("ringbroker_t **")
    _check(_lib.ringbroker_connect(url.encode("utf-8"), config, out))
    return Broker(out[0], url)


def status_name(code: int) -> str:
    """The name of a status code as the header spells it without the prefix
    (``"NOT_FOUND"``), or ``"UNKNOWN"``."""
    name: str = _ffi.string(_lib.ringbroker_status_name(code)).decode()
    return name


__all__ = [
    "ABI_VERSION", "DEFAULT_URL", "AlreadyExists", "AuthFailed", "Backpressure", "Broker", "Confirm",
    "Consumer", "ConsumerInfo", "Disconnected", "FrameTooLarge", "IdInUse", "IdleTimeout", "Internal",
    "InvalidArgument", "Locked", "Malformed", "Message", "NoResponders", "NotFound", "OutOfState",
    "PublishResult", "QueueConsumer", "QueueInfo", "QueueMessage", "Record", "Refused", "RingbrokerError",
    "ShuttingDown", "SlowConsumer", "StreamConsumer", "StreamInfo", "SubjectMessage", "Subscription",
    "Timeout", "UnknownOp", "Unroutable", "VersionUnsupported", "WouldBlock", "WrongKind", "connect",
    "open", "status_name",
]

