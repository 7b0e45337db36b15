"""Runs every cookbook example, embedded and against a ringbrokerd this module starts
on an ephemeral loopback port (and stops by pid), and checks what each printed.

Run by scripts/test-python; the daemon binary is ``$RINGBROKERD`` or
``target/debug/ringbrokerd``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
RUN_LIMIT_S = 60

# Each example and lines its output must contain.
EXPECTED = {
    "task_queue.py": ["producer: 10 jobs confirmed", "failed, requeued", "(redelivered)",
                      "all 10 tasks done exactly once", "0 left in the queue"],
    "broadcast_fanout.py": ["to 3 queues", "email: got every announcement in order",
                            "sms: got every announcement in order", "audit: got every announcement in order"],
    "telemetry.py": ["published 120 readings", "web-1 cpu average 12.0 over 20 readings",
                     "db-1 cpu average 32.0 over 20 readings", "archive: 120 readings"],
    "competing_consumers.py": ["20 of 20 jobs done", "the fast worker took more"],
    "topic_routing.py": ["orders.eu.created: reached 3 queue(s)", "inventory.low: unroutable",
                         "eu-orders (orders.eu.*): orders.eu.created, orders.eu.paid",
                         "all-created (*.*.created): orders.eu.created, orders.us.created, payments.eu.created"],
    "event_log_replay.py": ["audit: 12 events, event-0 .. event-11", "recent: 7 events, event-5 .. event-11",
                            "live: 2 events, event-10 .. event-11", "audit again: 0 new events"],
    "ordered_per_key.py": ["published 24 records", "6 of 6 customers processed in order"],
    "offline_catchup.py": ["online: mailer handled ['user-0', 'user-1', 'user-2']",
                           "back online: caught up on 5 events", "nothing lost, nothing repeated"],
    "dead_letter_retry.py": ["flaky: done on attempt 2", "poison: attempt 3 failed, parked",
                             "done: ['flaky', 'good']; parked: ['poison']"],
    "cqrs_projectors.py": ["balances: {'acc-1': 75, 'acc-2': 50}",
                           "activity: {'deposited': 3, 'opened': 2, 'withdrawn': 2}",
                           "balances after one more event: {'acc-1': 55, 'acc-2': 50}",
                           "['acc-1 deposited 100', 'acc-2 deposited 500', 'acc-2 withdrawn 450']"],
    "saga.py": ["order-1: order.created -> payment.completed -> stock.reserved => confirmed",
                "order-2: order.created -> payment.failed => cancelled (payment failed)",
                "order-3: order.created -> payment.completed -> stock.failed -> payment.refunded => cancelled"],
    "stream_pipeline.py": ["stage 1: kept 36, dropped 9 bot clicks",
                           "window +10 min: {'DE': 3, 'FR': 6, 'JP': 3}", "3 windows, 36 clicks counted"],
    "exactly_once.py": ["retry of all 5: 3 duplicates, 2 newly stored",
                        "duplicates report the original position: True", "stream holds 5 records",
                        "each payment exactly once"],
    "hybrid.py": ["bob's lamp is out of stock, order refused", "email worker: sent 3 emails",
                  "projector: revenue per customer {'alice': 14, 'carol': 12}"],
}


def test_every_example_is_checked():
    examples = {p.name for p in HERE.glob("*.py") if not p.name.startswith("test_")}
    assert examples == set(EXPECTED)


@pytest.fixture(scope="module")
def daemon_url(tmp_path_factory):
    binary = Path(os.environ.get("RINGBROKERD", REPO / "target" / "debug" / "ringbrokerd"))
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run `cargo build -p ringbrokerd` (scripts/test-python does)")
    work = tmp_path_factory.mktemp("examples-daemon")
    log = work / "ringbrokerd.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(binary), "--data-dir", str(work / "data"), "--listen", "127.0.0.1:0",
                                    "--admin", "off", "--shards", "2"],
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        url = None
        deadline = time.monotonic() + 10
        while url is None and time.monotonic() < deadline and process.poll() is None:
            match = re.search(r"ringbroker://127\.0\.0\.1:\d+", log.read_text(errors="replace"))
            url = match.group(0) if match else None
            if url is None:
                time.sleep(0.05)
        if url is None:
            pytest.fail(f"ringbrokerd did not start:\n{log.read_text(errors='replace')}")
        yield url
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(5)


def run_example(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(HERE / name), *args], capture_output=True, text=True,
                          timeout=RUN_LIMIT_S)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_embedded(name):
    out = run_example(name)
    for line in EXPECTED[name]:
        assert line in out, f"{name} did not print {line!r}:\n{out}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_remote(name, daemon_url):
    out = run_example(name, "--url", daemon_url)
    for line in EXPECTED[name]:
        assert line in out, f"{name} --url did not print {line!r}:\n{out}"
