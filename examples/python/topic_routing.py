"""Cookbook 5: topic routing with `*` and `#`.

A topic exchange routes on dot-separated routing keys: `*` matches exactly one word,
`#` zero or more. Three queues bind with different patterns; six messages show which
queue gets what, and one message no binding matches is reported unroutable because it
is published as mandatory.

    python examples/python/topic_routing.py [--url ringbroker://127.0.0.1:7070]
"""

from __future__ import annotations

import argparse
import tempfile
import uuid

import ringbroker

BINDINGS = {
    "eu-orders": "orders.eu.*",    # one word after orders.eu
    "all-orders": "orders.#",      # orders and anything below it
    "all-created": "*.*.created",  # created events of any domain and region
}
KEYS = ["orders.eu.created", "orders.us.created", "orders.eu.paid", "orders", "payments.eu.created",
        "orders.eu.created.late"]


def connect(url: str | None, data_dir: str) -> ringbroker.Broker:
    """A daemon's broker with --url, else an embedded one in a temporary folder."""
    return ringbroker.connect(url) if url else ringbroker.open(data_dir, shards=2, pin_to_cores=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a ringbrokerd, ringbroker://host:port (default: embedded)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir, connect(args.url, data_dir) as broker:
        run = uuid.uuid4().hex[:8]
        exchange = f"events-{run}"
        broker.declare_exchange(exchange, "topic")
        for queue, pattern in BINDINGS.items():
            broker.declare_queue(f"{queue}-{run}")
            broker.bind_queue(f"{queue}-{run}", exchange, pattern)
        for key in KEYS:
            print(f"{key}: reached {broker.exchange_publish(exchange, key, key)} queue(s)")
        try:
            broker.exchange_publish(exchange, "inventory.low", b"?", mandatory=True)
        except ringbroker.Unroutable as e:
            print(f"inventory.low: unroutable ({e.message})")
        for queue, pattern in BINDINGS.items():
            with broker.consume_queue(f"{queue}-{run}", no_ack=True) as c:
                keys = [m.routing_key for m in c.messages(idle_timeout=0.5)]
            print(f"{queue} ({pattern}): {', '.join(keys)}")
        for queue in BINDINGS:
            broker.delete_queue(f"{queue}-{run}")
        broker.delete_exchange(exchange)


if __name__ == "__main__":
    main()
