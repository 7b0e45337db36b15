"""Cookbook 2: broadcast fan-out to independent queues.

One fanout exchange, three queues bound to it (email, sms, audit): every
announcement published once reaches all three, and each queue is consumed at its own
pace by its own service. The audit service is slow and reads later; it still gets
everything, because its queue kept the messages.

    python examples/python/broadcast_fanout.py [--url ringbroker://127.0.0.1:7070]
"""

from __future__ import annotations

import argparse
import tempfile
import uuid

import ringbroker

ANNOUNCEMENTS = ["maintenance at 02:00", "new pricing", "welcome, eu-west"]


def connect(url: str | None, data_dir: str) -> ringbroker.Broker:
    """A daemon's broker with --url, else an embedded one in a temporary folder."""
    return ringbroker.connect(url) if url else ringbroker.open(data_dir, shards=2, pin_to_cores=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a ringbrokerd, ringbroker://host:port (default: embedded)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir, connect(args.url, data_dir) as broker:
        run = uuid.uuid4().hex[:8]
        exchange = f"announcements-{run}"
        services = ["email", "sms", "audit"]
        broker.declare_exchange(exchange, "fanout")
        for service in services:
            broker.declare_queue(f"{service}-{run}")
            broker.bind_queue(f"{service}-{run}", exchange)
        for text in ANNOUNCEMENTS:
            reached = broker.exchange_publish(exchange, "", text, persistent=True)
            print(f"published {text!r} to {reached} queues")
        for service in services:
            with broker.consume_queue(f"{service}-{run}") as inbox:
                got = []
                for msg in inbox.messages(idle_timeout=0.5):
                    got.append(msg.text())
                    msg.ack()
            print(f"{service}: received {len(got)}: {', '.join(got)}")
            if got == ANNOUNCEMENTS:
                print(f"{service}: got every announcement in order")
        for service in services:
            broker.delete_queue(f"{service}-{run}")
        broker.delete_exchange(exchange)


if __name__ == "__main__":
    main()
