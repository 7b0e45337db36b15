"""Cookbook 1: a task queue with acknowledgements.

A producer puts 10 jobs on a durable work queue (persistent messages, confirmed);
two workers take them with a prefetch of 2 and acknowledge each when done. Job 7
fails the first time: its worker rejects it with requeue, and it comes back marked
redelivered, to be done on the second try. Nothing is lost, nothing is done twice
successfully.

    python examples/python/task_queue.py                      # embedded broker
    python examples/python/task_queue.py --url ringbroker://127.0.0.1:7070
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import uuid

import ringbroker

JOBS = 10


def connect(url: str | None, data_dir: str) -> ringbroker.Broker:
    """A daemon's broker with --url, else an embedded one in a temporary folder."""
    return ringbroker.connect(url) if url else ringbroker.open(data_dir, shards=2, pin_to_cores=False)


def worker(broker: ringbroker.Broker, queue: str, name: str, done: list, lock: threading.Lock) -> None:
    with broker.consume_queue(queue, prefetch=2) as jobs:
        for job in jobs.messages(idle_timeout=1.0):
            text = job.text()
            if text == "job-7" and not job.redelivered:
                print(f"{name}: {text} failed, requeued")
                job.nack(requeue=True)
                continue
            with lock:
                done.append(text)
            print(f"{name}: did {text}" + (" (redelivered)" if job.redelivered else ""))
            job.ack()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a ringbrokerd, ringbroker://host:port (default: embedded)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir, connect(args.url, data_dir) as broker:
        queue = f"tasks-{uuid.uuid4().hex[:8]}"
        broker.declare_queue(queue, durable=True)
        confirms = broker.exchange_publish_batch(
            [ringbroker.QueueMessage("", queue, f"job-{i}", persistent=True) for i in range(JOBS)],
            mandatory=True)
        print(f"producer: {len(confirms)} jobs confirmed on {queue}")
        done: list = []
        lock = threading.Lock()
        workers = [threading.Thread(target=worker, args=(broker, queue, f"worker-{n}", done, lock))
                   for n in (1, 2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        left = broker.queue_info(queue)
        print(f"done: {len(done)} jobs, {len(set(done))} distinct, {left.messages} left in the queue")
        if sorted(done) == sorted(f"job-{i}" for i in range(JOBS)):
            print(f"all {JOBS} tasks done exactly once")
        broker.delete_queue(queue)


if __name__ == "__main__":
    main()
