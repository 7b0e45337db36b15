"""Fixtures: every test taking ``broker`` runs twice, against an embedded broker (a
fresh data directory per test) and against a ``ringbrokerd`` this session starts on
an ephemeral loopback port and stops by pid at the end.

The daemon binary is ``$RINGBROKERD`` or ``target/debug/ringbrokerd`` of the
repository (``cargo build -p ringbrokerd``; scripts/test-python builds it).
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

import ringbroker

REPO = Path(__file__).resolve().parents[3]
DAEMON_START_S = 10.0
_names = itertools.count(1)


class Daemon:
    """A ringbrokerd started for the session."""

    def __init__(self, process: subprocess.Popen, url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log


def start_daemon(workdir: Path, *extra: str) -> Daemon:
    """Starts a ringbrokerd on an ephemeral loopback port with ``extra`` flags."""
    binary = Path(os.environ.get("RINGBROKERD", REPO / "target" / "debug" / "ringbrokerd"))
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run `cargo build -p ringbrokerd` (scripts/test-python does)")
    log = workdir / "ringbrokerd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(binary), "--data-dir", str(workdir / "data"), "--listen", "127.0.0.1:0", "--admin", "off",
             "--shards", "2", *extra],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + DAEMON_START_S
    while time.monotonic() < deadline:
        match = re.search(r"ringbroker://127\.0\.0\.1:\d+", log.read_text(errors="replace"))
        if match:
            return Daemon(process, match.group(0), log)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    process.wait(5)
    pytest.fail(f"ringbrokerd did not start:\n{log.read_text(errors='replace')}")


def stop_daemon(daemon: Daemon) -> None:
    """Stops a daemon by its pid (SIGTERM, then SIGKILL after 10 s)."""
    if daemon.process.poll() is None:
        os.kill(daemon.process.pid, signal.SIGTERM)
        try:
            daemon.process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(daemon.process.pid, signal.SIGKILL)
            daemon.process.wait(5)


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The session's ringbrokerd."""
    d = start_daemon(tmp_path_factory.mktemp("ringbrokerd"))
    try:
        yield d
    finally:
        stop_daemon(d)


@pytest.fixture(scope="session")
def strict_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A second ringbrokerd that wants an auth token (``secret``) and takes frames of at
    most 1 KiB."""
    d = start_daemon(tmp_path_factory.mktemp("ringbrokerd-strict"), "--auth-token", "secret",
                     "--max-frame", "1024")
    try:
        yield d
    finally:
        stop_daemon(d)


@pytest.fixture
def ns() -> str:
    """A prefix unique to this test, for names and subjects (the daemon is shared)."""
    return f"t{os.getpid()}x{next(_names)}"


@pytest.fixture(params=["embedded", "remote"])
def mode(request: pytest.FixtureRequest) -> str:
    """``embedded`` or ``remote``."""
    return request.param


@pytest.fixture
def broker(mode: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ringbroker.Broker]:
    """A broker of this test's mode, closed at the end."""
    if mode == "embedded":
        b = ringbroker.open(str(tmp_path / "broker"), shards=2, pin_to_cores=False)
    else:
        d = request.getfixturevalue("daemon")
        b = ringbroker.connect(d.url, reconnect=False)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def opener(mode: str, request: pytest.FixtureRequest, tmp_path: Path):
    """A function making another broker of this test's mode (embedded: on a fresh
    directory each call, or ``path``), for tests that need several or close one."""
    made = []
    counter = itertools.count()

    def make(path: "Path | None" = None) -> ringbroker.Broker:
        if mode == "embedded":
            b = ringbroker.open(str(path or tmp_path / f"b{next(counter)}"), shards=2, pin_to_cores=False)
        else:
            b = ringbroker.connect(request.getfixturevalue("daemon").url, reconnect=False)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()
