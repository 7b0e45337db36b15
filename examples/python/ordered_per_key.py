"""Cookbook 7: ordered processing per key across 3 partitions.

Orders of many customers go into a stream of 3 partitions, keyed by customer: all
records of one key land in one partition, in order. A consumer group of three members
splits the partitions; each member sees every customer it owns in publish order, while
different customers are processed in parallel.

    python examples/python/ordered_per_key.py [--url ringbroker://127.0.0.1:7070]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import threading
import uuid

import ringbroker

CUSTOMERS = ["alice", "bob", "carol", "dave", "erin", "frank"]
STEPS = ["created", "paid", "packed", "shipped"]


def connect(url: str | None, data_dir: str) -> ringbroker.Broker:
    """A daemon's broker with --url, else an embedded one in a temporary folder."""
    return ringbroker.connect(url) if url else ringbroker.open(data_dir, shards=2, pin_to_cores=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a ringbrokerd, ringbroker://host:port (default: embedded)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir, connect(args.url, data_dir) as broker:
        run = uuid.uuid4().hex[:8]
        stream, subject = f"orders-{run}", f"orders.{run}"
        broker.create_stream(stream, [subject], partitions=3)
        broker.create_consumer(stream, "fulfilment", deliver="all")
        members = [broker.consume_stream(stream, "fulfilment") for _ in range(3)]
        records = [(subject, step, customer) for step in STEPS for customer in CUSTOMERS]
        results = broker.stream_publish_batch(records)
        partition_of = {r[2]: res.partition for r, res in zip(records, results)}
        print(f"published {len(records)} records; partitions by customer: {partition_of}")
        seen = collections.defaultdict(list)
        lock = threading.Lock()

        def process(member: ringbroker.StreamConsumer, name: str) -> None:
            for record in member.messages(idle_timeout=1.0):
                with lock:
                    seen[record.key.decode()].append((name, record.partition, record.text()))
                record.ack()

        threads = [threading.Thread(target=process, args=(m, f"member-{i}")) for i, m in enumerate(members)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        in_order = 0
        for customer in CUSTOMERS:
            steps = [s for _, _, s in seen[customer]]
            owners = {(n, p) for n, p, _ in seen[customer]}
            ok = steps == STEPS and len(owners) == 1
            in_order += ok
            print(f"{customer}: {' -> '.join(steps)} on {sorted(owners)}" + ("" if ok else "  OUT OF ORDER"))
        print(f"{in_order} of {len(CUSTOMERS)} customers processed in order")
        for m in members:
            m.close()
        broker.delete_stream(stream)


if __name__ == "__main__":
    main()
