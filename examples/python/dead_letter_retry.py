"""Cookbook 9: a dead-letter queue plus a TTL retry loop.

Jobs go to `work`. A job that fails is rejected without requeue, so `work`
dead-letters it to the `retry` exchange; the `retry` queue holds it for its message
TTL (300 ms) and then dead-letters it back to `work`: a delayed retry with no timer
in the application. After 3 failed attempts the worker parks the job in a `parked`
queue for a human to look at.

    python examples/python/dead_letter_retry.py [--url ringbroker://127.0.0.1:7070]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
import uuid

import ringbroker

ATTEMPTS_MAX = 3
FLAKY_FAILURES = 1  # the flaky job fails once, then works


def connect(url: str | None, data_dir: str) -> ringbroker.Broker:
    """A daemon's broker with --url, else an embedded one in a temporary folder."""
    return ringbroker.connect(url) if url else ringbroker.open(data_dir, shards=2, pin_to_cores=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a ringbrokerd, ringbroker://host:port (default: embedded)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir, connect(args.url, data_dir) as broker:
        run = uuid.uuid4().hex[:8]
        work_x, retry_x = f"work-x-{run}", f"retry-x-{run}"
        work, retry, parked = f"work-{run}", f"retry-{run}", f"parked-{run}"
        broker.declare_exchange(work_x, "direct")
        broker.declare_exchange(retry_x, "direct")
        broker.declare_queue(work, dead_letter_exchange=retry_x, dead_letter_routing_key="job")
        broker.declare_queue(retry, message_ttl_ms=300, dead_letter_exchange=work_x, dead_letter_routing_key="job")
        broker.declare_queue(parked)
        broker.bind_queue(work, work_x, "job")
        broker.bind_queue(retry, retry_x, "job")
        broker.exchange_publish_batch([(work_x, "job", name) for name in ("good", "flaky", "poison")])
        attempts = collections.Counter()
        done = []
        start = time.monotonic()
        with broker.consume_queue(work) as jobs:
            for job in jobs.messages(idle_timeout=2.0):
                name = job.text()
                attempts[name] += 1
                at = f"{time.monotonic() - start:.1f}s"
                fails = name == "poison" or (name == "flaky" and attempts[name] <= FLAKY_FAILURES)
                if not fails:
                    done.append(name)
                    print(f"{at} {name}: done on attempt {attempts[name]}")
                    job.ack()
                elif attempts[name] < ATTEMPTS_MAX:
                    print(f"{at} {name}: attempt {attempts[name]} failed, retry after the TTL")
                    job.nack(requeue=False)  # dead-lettered to the retry queue
                else:
                    broker.exchange_publish("", parked, job.data, persistent=True)
                    job.ack()
                    print(f"{at} {name}: attempt {attempts[name]} failed, parked")
                if len(done) == 2 and broker.queue_info(parked).messages == 1:
                    break
        with broker.consume_queue(parked) as inbox:
            held = [m.text() for m in inbox.messages(idle_timeout=0.5)]
        print(f"done: {sorted(done)}; parked: {held}; attempts: {dict(sorted(attempts.items()))}")
        for queue in (work, retry, parked):
            broker.delete_queue(queue)
        broker.delete_exchange(work_x)
        broker.delete_exchange(retry_x)


if __name__ == "__main__":
    main()
