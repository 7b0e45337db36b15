"""Cookbook 11: a saga by choreography, with compensating events.

No coordinator: services react to each other's events in one `saga` stream (keyed by
order, so an order's events stay in order). Each reaction is a durable consumer with
a subject filter:

    order.created     -> payments charges   -> payment.completed | payment.failed
    payment.completed -> inventory reserves -> stock.reserved    | stock.failed
    stock.failed      -> payments refunds   -> payment.refunded   (the compensation)
    stock.reserved / payment.failed / payment.refunded -> orders confirm or cancel

Order 1 goes through; order 2's payment fails; order 3 is paid but out of stock, so
its payment is refunded and the order cancelled.

    python examples/python/saga.py [--url ringbroker://127.0.0.1:7070]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import uuid

import ringbroker

ORDERS = {"order-1": ("alice", "book"), "order-2": ("bob", "book"), "order-3": ("carol", "piano")}
BROKE = {"bob"}          # payments fail for these customers
OUT_OF_STOCK = {"piano"}  # inventory fails for these items
ROUNDS_MAX = 50


def connect(url: str | None, data_dir: str) -> ringbroker.Broker:
    """A daemon's broker with --url, else an embedded one in a temporary folder."""
    return ringbroker.connect(url) if url else ringbroker.open(data_dir, shards=2, pin_to_cores=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a ringbrokerd, ringbroker://host:port (default: embedded)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir, connect(args.url, data_dir) as broker:
        run = uuid.uuid4().hex[:8]
        stream, root = f"saga-{run}", f"saga.{run}"
        broker.create_stream(stream, [f"{root}.>"], partitions=2)
        history = collections.defaultdict(list)
        outcome = {}

        def emit(order: str, event: str) -> None:
            broker.stream_publish(f"{root}.{event}", order, key=order)

        def charge(order: str, _event: str) -> None:
            customer, _ = ORDERS[order]
            emit(order, "payment.failed" if customer in BROKE else "payment.completed")

        def reserve(order: str, _event: str) -> None:
            _, item = ORDERS[order]
            emit(order, "stock.failed" if item in OUT_OF_STOCK else "stock.reserved")

        def refund(order: str, _event: str) -> None:
            emit(order, "payment.refunded")

        def decide(order: str, event: str) -> None:
            if event == "stock.reserved":
                outcome[order] = "confirmed"
            elif event == "payment.failed":
                outcome[order] = "cancelled (payment failed)"
            elif event == "payment.refunded":
                outcome[order] = "cancelled (out of stock, payment refunded)"

        reactions = {  # durable consumer: (filter, handler)
            "payments-charge": (f"{root}.order.created", charge),
            "inventory-reserve": (f"{root}.payment.completed", reserve),
            "payments-refund": (f"{root}.stock.failed", refund),
            "orders-outcome": (f"{root}.>", decide),
        }
        members = {}
        for name, (pattern, _) in reactions.items():
            broker.create_consumer(stream, name, deliver="all", filter=pattern)
            members[name] = broker.consume_stream(stream, name)
        for order in ORDERS:
            emit(order, "order.created")
        for _ in range(ROUNDS_MAX):  # each round lets every service react to what is new
            handled = 0
            for name, (_, handler) in reactions.items():
                for msg in members[name].fetch(64, 0.2):
                    event = msg.subject[len(root) + 1:]
                    if name == "orders-outcome":
                        history[msg.text()].append(event)
                    handler(msg.text(), event)
                    msg.ack()
                    handled += 1
            if not handled:
                break
        for order in ORDERS:
            print(f"{order}: {' -> '.join(history[order])} => {outcome.get(order, 'pending')}")
        for member in members.values():
            member.close()
        broker.delete_stream(stream)


if __name__ == "__main__":
    main()
