"""What every module of the binding shares about crossing into the C library: configs
made from keyword options, byte and string arguments, and the ``_Guard`` that keeps
a C object from being freed while a call uses it.

The C objects are not safe to free while another thread is inside a call on them
(docs/c-api.md, "Statuses and errors"). Each wrapper therefore counts the calls in
flight through a ``_Guard``: ``close()`` marks the object closed (later calls raise
:class:`~ringbroker.ShuttingDown`) and the C object is freed by whichever thread
leaves it last.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable, List, Mapping, Optional, Tuple, Union

from ._native import ffi, lib
from .errors import InvalidArgument, ShuttingDown, check

Bytes = Union[bytes, bytearray, memoryview, str]
"""What a payload, a key or a header value may be given as (``str`` is UTF-8 encoded)."""

Headers = Union[Mapping[str, Bytes], Iterable[Tuple[str, Bytes]]]
"""Headers: a mapping or (name, value) pairs (a name may repeat in pairs)."""

NO_BYTES = (ffi.NULL, 0)


def encode(text: str) -> bytes:
    """The UTF-8 encoding of ``text`` for a NUL-terminated C string argument (cffi adds
    the NUL). Raises :class:`~ringbroker.InvalidArgument` if ``text`` holds a NUL,
    where C would cut it short."""
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    if "\0" in text:
        raise InvalidArgument(f"{text!r} holds a NUL character")
    return text.encode("utf-8")


def optional_text(text: Optional[str]) -> Any:
    """``encode(text)``, or NULL for ``None``."""
    return ffi.NULL if text is None else encode(text)


def byte_arg(data: Optional[Bytes]) -> Tuple[Any, int]:
    """A pointer and a length for ``data`` without copying it (bytes-like objects are
    passed through ``ffi.from_buffer``; ``str`` is encoded first). The pointer is valid
    while the returned cdata lives: keep it until the call returns."""
    if data is None:
        return NO_BYTES
    if isinstance(data, str):
        data = data.encode("utf-8")
    length = len(data) if not isinstance(data, memoryview) else data.nbytes
    if length == 0:
        return NO_BYTES
    return ffi.from_buffer("uint8_t[]", data), length


def config_value(value: Any) -> bytes:
    """The text of a config value: booleans as ``true``/``false``, sequences
    comma-separated, everything else through ``str``."""
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value).encode("utf-8")
    return str(value).encode("utf-8")


def make_config(options: Mapping[str, Any]) -> Any:
    """A ``ringbroker_config *`` holding every option whose value is not ``None``,
    freed when the returned cdata is garbage (or by ``ffi.release``)."""
    out = ffi.new("ringbroker_config **")
    check(lib.ringbroker_config_new(out))
    config = ffi.gc(out[0], lib.ringbroker_config_free)
    for key, value in options.items():
        if value is not None:
            check(lib.ringbroker_config_set(config, encode(key), config_value(value)))
    return config


def header_array(headers: Optional[Headers], keep: List[Any]) -> Tuple[Any, int]:
    """A ``ringbroker_header[]`` for ``headers`` and its length; every buffer it points
    into is appended to ``keep``, which the caller holds until the call returns."""
    if not headers:
        return NO_BYTES
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    array = ffi.new("ringbroker_header[]", len(pairs))
    keep.append(array)
    for i, (name, value) in enumerate(pairs):
        name_c = ffi.new("char[]", encode(name))
        value_c, value_len = byte_arg(value)
        keep.append(name_c)
        keep.append(value_c)
        array[i].name = name_c
        array[i].value = value_c
        array[i].value_len = value_len
    return array, len(pairs)


class _Guard:
    """Counts the calls in flight on one C object and frees it after ``close()`` once
    none is left (see the module doc). ``what`` names the object in errors."""

    __slots__ = ("_lock", "_ptr", "_users", "_closed", "_free", "_what", "_drained", "_waiting")

    def __init__(self, ptr: Any, free: Optional[Callable[[Any], Any]], what: str) -> None:
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._ptr = ptr
        self._users = 0
        self._closed = False
        self._free = free
        self._what = what
        self._waiting = False  # a close(wait=True) frees the object itself

    @property
    def closed(self) -> bool:
        return self._closed

    # enter and leave run around every C call, so they take the lock with explicit
    # acquire/release: on CPython 3.11 that costs about half of a `with` block.

    def enter(self) -> Any:
        """Marks a call in flight and returns the pointer; raises ShuttingDown if the
        object was closed."""
        lock = self._lock
        lock.acquire()
        if self._closed:
            lock.release()
            raise ShuttingDown(f"the {self._what} is closed")
        self._users += 1
        ptr = self._ptr
        lock.release()
        return ptr

    def leave(self) -> None:
        """Ends a call; frees the object if it was closed meanwhile and this was the
        last call."""
        lock = self._lock
        lock.acquire()
        self._users -= 1
        if self._users or not self._closed:
            lock.release()
            return
        try:
            if self._waiting:
                self._drained.notify_all()
            else:
                # Freed under the lock: a retire() returning means the object is gone.
                self._free_now()
        finally:
            lock.release()

    def _free_now(self) -> None:
        """Frees the object (the lock is held)."""
        ptr, self._ptr = self._ptr, None
        if ptr is not None and self._free is not None:
            self._free(ptr)

    def close(self, wait: bool) -> Any:
        """Closes: later calls fail. Without ``wait`` the object is freed now if no call
        is in flight, else by the last one (returns None). With ``wait`` it waits until
        the calls in flight are done and returns the pointer for the caller to free
        (None if already closed)."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            if wait:
                self._waiting = True
                while self._users:
                    self._drained.wait()
                ptr, self._ptr = self._ptr, None
                return ptr
            if not self._users:
                self._free_now()
            return None

    def retire(self) -> None:
        """Closes (later calls fail), waits until no call is in flight and frees the
        object; also after a ``close(wait=False)`` that left the freeing to a call
        still in flight. When it returns, the object is freed."""
        with self._lock:
            self._closed = True
            self._waiting = True  # the last call to leave wakes us instead of freeing
            while self._users:
                self._drained.wait()
            self._free_now()
