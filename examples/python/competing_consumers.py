"""Cookbook 4: competing consumers with prefetch 1 (a slow and a fast worker).

Twenty jobs on one queue, two workers consuming it with a prefetch of 1: a worker
gets the next job only after acknowledging the last, so the fast worker (10 ms a
job) ends up doing most of them while the slow one (100 ms a job) does a few, and no
job waits behind the slow worker. With a large prefetch the queue would have split
them evenly up front.

    python examples/python/competing_consumers.py [--url ringbroker://127.0.0.1:7070]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import threading
import time
import uuid

import ringbroker

JOBS = 20


def connect(url: str | None, data_dir: str) -> ringbroker.Broker:
    """A daemon's broker with --url, else an embedded one in a temporary folder."""
    return ringbroker.connect(url) if url else ringbroker.open(data_dir, shards=2, pin_to_cores=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a ringbrokerd, ringbroker://host:port (default: embedded)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir, connect(args.url, data_dir) as broker:
        queue = f"work-{uuid.uuid4().hex[:8]}"
        broker.declare_queue(queue)
        done = collections.Counter()
        lock = threading.Lock()

        def work(name: str, seconds: float) -> None:
            with broker.consume_queue(queue, prefetch=1) as jobs:
                for job in jobs.messages(idle_timeout=1.0):
                    time.sleep(seconds)  # the work
                    job.ack()
                    with lock:
                        done[name] += 1

        workers = [threading.Thread(target=work, args=("fast", 0.01)),
                   threading.Thread(target=work, args=("slow", 0.1))]
        for w in workers:
            w.start()
        time.sleep(0.2)  # both consumers are attached before the jobs come
        broker.exchange_publish_batch([("", queue, f"job-{i}") for i in range(JOBS)])
        for w in workers:
            w.join()
        print(f"fast worker did {done['fast']} jobs, slow worker did {done['slow']}")
        print(f"{sum(done.values())} of {JOBS} jobs done")
        if done["fast"] > done["slow"]:
            print("the fast worker took more: prefetch 1 balances by speed")
        broker.delete_queue(queue)


if __name__ == "__main__":
    main()
