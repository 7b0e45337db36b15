"""Cookbook 13: exactly-once publishing with a message-id dedup window.

A producer publishes payments with a `Msg-Id` each (`msg_id=`). Its connection
"times out" before it learns the outcome, so it retries the whole batch: the stream
recognises every id it stored within its dedup window (60 s) and does not store them
again (`duplicate` is true, with the original partition and offset). A consumer then
sees each payment exactly once.

    python examples/python/exactly_once.py [--url ringbroker://127.0.0.1:7070]
"""

from __future__ import annotations

import argparse
import tempfile
import uuid

import ringbroker


def connect(url: str | None, data_dir: str) -> ringbroker.Broker:
    """A daemon's broker with --url, else an embedded one in a temporary folder."""
    return ringbroker.connect(url) if url else ringbroker.open(data_dir, shards=2, pin_to_cores=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a ringbrokerd, ringbroker://host:port (default: embedded)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir, connect(args.url, data_dir) as broker:
        run = uuid.uuid4().hex[:8]
        stream, subject = f"payments-{run}", f"payments.{run}"
        broker.create_stream(stream, [subject], partitions=2, dedup_window_ms=60_000)
        payments = [ringbroker.Record(subject, f"pay {i} EUR", f"customer-{i % 2}", {"Msg-Id": f"payment-{i}"})
                    for i in range(5)]
        first = broker.stream_publish_batch(payments[:3])
        print(f"first try: stored {sum(not r.duplicate for r in first)} (then the connection 'timed out')")
        retry = broker.stream_publish_batch(payments)
        print(f"retry of all 5: {sum(r.duplicate for r in retry)} duplicates, "
              f"{sum(not r.duplicate for r in retry)} newly stored")
        same = all((a.partition, a.offset) == (b.partition, b.offset) for a, b in zip(first, retry))
        print(f"duplicates report the original position: {same}")
        print(f"stream holds {broker.stream_info(stream).records} records")
        with broker.consume_stream(stream, deliver="all") as reader:
            seen = sorted(m.headers["Msg-Id"].decode() for m in reader.messages(idle_timeout=0.5))
        print(f"consumer saw: {seen}")
        if seen == [f"payment-{i}" for i in range(5)]:
            print("each payment exactly once")
        broker.delete_stream(stream)


if __name__ == "__main__":
    main()
