"""Cookbook 14: the hybrid layout, three models in one broker.

A shop's order flow:
- request-reply between services: the checkout asks the inventory service
  (`inventory.check`, a queue group of two responders) whether an item is in stock;
- domain events into a stream: each accepted order appends `order.placed` to the
  `orders` stream, keyed by customer; a projector keeps revenue per customer;
- background jobs on a work queue: each accepted order queues a confirmation email,
  sent by a worker that acknowledges each job once sent.

    python examples/python/hybrid.py [--url ringbroker://127.0.0.1:7070]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import threading
import uuid

import ringbroker

STOCK = {"book": 5, "lamp": 0, "pen": 100}
ORDERS = [("alice", "book", 12), ("bob", "lamp", 40), ("alice", "pen", 2), ("carol", "book", 12)]


def connect(url: str | None, data_dir: str) -> ringbroker.Broker:
    """A daemon's broker with --url, else an embedded one in a temporary folder."""
    return ringbroker.connect(url) if url else ringbroker.open(data_dir, shards=2, pin_to_cores=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a ringbrokerd, ringbroker://host:port (default: embedded)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir, connect(args.url, data_dir) as broker:
        run = uuid.uuid4().hex[:8]
        service, stream, emails = f"inventory.{run}.check", f"orders-{run}", f"emails-{run}"
        broker.create_stream(stream, [f"orders.{run}.>"], partitions=2, durability="always")
        broker.create_consumer(stream, "revenue", deliver="all")
        broker.declare_queue(emails, durable=True)

        responders = [broker.subscribe(service, "inventory") for _ in range(2)]

        def answer(sub: ringbroker.Subscription) -> None:
            for request in sub:  # until closed
                request.respond(b"yes" if STOCK.get(request.text(), 0) > 0 else b"no")

        threads = [threading.Thread(target=answer, args=(s,)) for s in responders]
        for t in threads:
            t.start()

        for customer, item, price in ORDERS:  # the checkout
            if broker.request(service, item, timeout=2.0).text() != "yes":
                print(f"checkout: {customer}'s {item} is out of stock, order refused")
                continue
            placed = broker.stream_publish(f"orders.{run}.placed", json.dumps({"item": item, "price": price}),
                                           key=customer)
            broker.exchange_publish("", emails, f"to {customer}: your {item} is on its way", persistent=True)
            print(f"checkout: {customer}'s {item} accepted (event at p{placed.partition}@{placed.offset}, "
                  f"email queued)")
        for s in responders:
            s.close()
        for t in threads:
            t.join()

        sent = []
        with broker.consume_queue(emails, prefetch=10) as jobs:  # the email worker
            for job in jobs.messages(idle_timeout=0.5):
                sent.append(job.text())
                job.ack()
        print(f"email worker: sent {len(sent)} emails")

        revenue = collections.Counter()
        with broker.consume_stream(stream, "revenue") as events:  # the projector
            for event in events.messages(idle_timeout=0.5):
                revenue[event.key.decode()] += json.loads(event.bytes())["price"]
                event.ack()
        print(f"projector: revenue per customer {dict(sorted(revenue.items()))}")
        broker.delete_queue(emails)
        broker.delete_stream(stream)


if __name__ == "__main__":
    main()
