"""Typed exceptions for the C API's statuses.

Every status the library can return has one exception class here, named after the
status (``RINGBROKER_NOT_FOUND`` is :class:`NotFound`); all derive from
:class:`RingbrokerError`, which carries the status code (``.code``), its name
(``.status``) and the library's message (``ringbroker_last_error_message()`` of the
failed call, or the message of a failed asynchronous completion). A few also derive
from the built-in exception of the same meaning (``Timeout`` is a ``TimeoutError``,
``InvalidArgument`` a ``ValueError``, ``Disconnected`` a ``ConnectionError``), so
generic handlers catch them too.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

from ._native import ffi, lib


class RingbrokerError(Exception):
    """A ringbroker call failed. ``code`` is the status, ``status`` its name (as the
    header spells it, without the prefix), ``message`` what the library said.
    ``results`` holds the per-item outcomes of a batch publish that failed part-way
    (``None`` for other calls)."""

    code: int = -1

    def __init__(self, message: str = "", code: Optional[int] = None) -> None:
        if code is not None:
            self.code = code
        self.message = message
        self.status = status_name(self.code)
        self.results: Optional[list[Any]] = None
        super().__init__(f"{self.status}: {message}" if message else self.status)


def status_name(code: int) -> str:
    """The name of status ``code`` (``"NOT_FOUND"``), or ``"UNKNOWN"``."""
    name: str = ffi.string(lib.ringbroker_status_name(code)).decode()
    return name


def _status(name: str) -> int:
    return int(getattr(lib, "RINGBROKER_" + name))


class Malformed(RingbrokerError):
    """Bytes from the server could not be decoded."""

    code = _status("MALFORMED")


class FrameTooLarge(RingbrokerError):
    """A frame exceeded the maximum frame size (a publish too large for the server)."""

    code = _status("FRAME_TOO_LARGE")


class UnknownOp(RingbrokerError):
    """The server does not know an operation."""

    code = _status("UNKNOWN_OP")


class OutOfState(RingbrokerError):
    """An operation not valid in the connection's state."""

    code = _status("OUT_OF_STATE")


class VersionUnsupported(RingbrokerError):
    """Client and server share no protocol version."""

    code = _status("VERSION_UNSUPPORTED")


class AuthFailed(RingbrokerError, PermissionError):
    """The auth token is missing or wrong."""

    code = _status("AUTH_FAILED")


class NotFound(RingbrokerError, LookupError):
    """The stream, consumer, exchange, queue or subscription does not exist, or a
    consumer ended (the message says why)."""

    code = _status("NOT_FOUND")


class AlreadyExists(RingbrokerError):
    """It exists with a different definition."""

    code = _status("ALREADY_EXISTS")


class InvalidArgument(RingbrokerError, ValueError):
    """An invalid argument, an unknown or malformed config key, an invalid name or
    definition (the message says which)."""

    code = _status("INVALID_ARGUMENT")


class NoResponders(RingbrokerError):
    """A request matched no subscriber."""

    code = _status("NO_RESPONDERS")


class Timeout(RingbrokerError, TimeoutError):
    """Nothing came within the timeout."""

    code = _status("TIMEOUT")


class Backpressure(RingbrokerError):
    """The engine is saturated; retry later."""

    code = _status("BACKPRESSURE")


class ShuttingDown(RingbrokerError):
    """The broker is stopping, or the handle (or consumer) was closed."""

    code = _status("SHUTTING_DOWN")


class Refused(RingbrokerError):
    """The engine refused the operation (a full queue that rejects publishes, a record
    over the stream's size limit, a delete of something in use)."""

    code = _status("REFUSED")


class Locked(RingbrokerError):
    """An exclusive queue belongs to another connection, or another broker has the
    data directory."""

    code = _status("LOCKED")


class Unroutable(RingbrokerError):
    """A mandatory publish reached no queue."""

    code = _status("UNROUTABLE")


class SlowConsumer(RingbrokerError):
    """The server closed the connection: this client did not read."""

    code = _status("SLOW_CONSUMER")


class IdleTimeout(RingbrokerError):
    """The server closed the idle connection."""

    code = _status("IDLE_TIMEOUT")


class Internal(RingbrokerError):
    """A bug (a panic caught at the boundary) or an I/O failure."""

    code = _status("INTERNAL")


class IdInUse(RingbrokerError):
    """An id already in use on the connection."""

    code = _status("ID_IN_USE")


class Disconnected(RingbrokerError, ConnectionError):
    """The connection to the daemon dropped or could not be made."""

    code = _status("DISCONNECTED")


class WouldBlock(RingbrokerError):
    """A ``try_`` call found nothing ready (the binding turns this into ``None``)."""

    code = _status("WOULD_BLOCK")


class WrongKind(RingbrokerError):
    """The call does not apply to this kind of object (an ack on a subject
    subscription, a stream call on a queue consumer)."""

    code = _status("WRONG_KIND")


ERRORS: Dict[int, Type[RingbrokerError]] = {
    cls.code: cls
    for cls in (
        Malformed, FrameTooLarge, UnknownOp, OutOfState, VersionUnsupported, AuthFailed,
        NotFound, AlreadyExists, InvalidArgument, NoResponders, Timeout, Backpressure,
        ShuttingDown, Refused, Locked, Unroutable, SlowConsumer, IdleTimeout, Internal,
        IdInUse, Disconnected, WouldBlock, WrongKind,
    )
}
"""Each status code (except OK) to its exception class."""


def error_for(code: int, message: str) -> RingbrokerError:
    """The exception for status ``code`` with ``message`` (a plain
    :class:`RingbrokerError` for a code this binding does not know)."""
    cls = ERRORS.get(code)
    if cls is None:
        return RingbrokerError(message, code)
    return cls(message)


def last_error(code: int) -> RingbrokerError:
    """The exception for a call that just returned ``code`` on this thread, with the
    library's message for it."""
    return error_for(code, ffi.string(lib.ringbroker_last_error_message()).decode("utf-8", "replace"))


def check(code: int) -> None:
    """Raises the exception for ``code`` unless it is ``RINGBROKER_OK``."""
    if code != 0:
        raise last_error(code)
