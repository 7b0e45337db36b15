"""Cookbook 10: CQRS projectors over one stream.

Commands append events (`opened`, `deposited`, `withdrawn`) to one `ledger` stream,
keyed by account so each account's events stay in order. Two projectors, each a
durable consumer with its own position, build different read models from the same
events: current balances, and a per-kind activity report. A third read model added
later (`big-movements`) replays the whole history from the first record.

    python examples/python/cqrs_projectors.py [--url ringbroker://127.0.0.1:7070]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import uuid

import ringbroker

COMMANDS = [("acc-1", "opened", 0), ("acc-2", "opened", 0), ("acc-1", "deposited", 100),
            ("acc-2", "deposited", 500), ("acc-1", "withdrawn", 30), ("acc-2", "withdrawn", 450),
            ("acc-1", "deposited", 5)]


def connect(url: str | None, data_dir: str) -> ringbroker.Broker:
    """A daemon's broker with --url, else an embedded one in a temporary folder."""
    return ringbroker.connect(url) if url else ringbroker.open(data_dir, shards=2, pin_to_cores=False)


def project(broker: ringbroker.Broker, stream: str, name: str, apply) -> None:
    """Feeds every new event to ``apply`` and commits what it applied."""
    with broker.consume_stream(stream, name) as events:
        for event in events.messages(idle_timeout=0.5):
            apply(event.key.decode(), event.subject.rsplit(".", 1)[1], json.loads(event.bytes()))
            event.ack()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a ringbrokerd, ringbroker://host:port (default: embedded)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir, connect(args.url, data_dir) as broker:
        run = uuid.uuid4().hex[:8]
        stream, root = f"ledger-{run}", f"ledger.{run}"
        broker.create_stream(stream, [f"{root}.>"], partitions=2, durability="always")
        for name in ("balances", "activity"):
            broker.create_consumer(stream, name, deliver="all")
        broker.stream_publish_batch([(f"{root}.{kind}", json.dumps({"amount": amount}), account)
                                     for account, kind, amount in COMMANDS])
        print(f"appended {len(COMMANDS)} events")
        balances: dict = {}
        activity = collections.Counter()

        def balance(account: str, kind: str, event: dict) -> None:
            sign = {"opened": 0, "deposited": 1, "withdrawn": -1}[kind]
            balances[account] = balances.get(account, 0) + sign * event["amount"]

        project(broker, stream, "balances", balance)
        project(broker, stream, "activity", lambda _a, kind, _e: activity.update([kind]))
        print(f"balances: {dict(sorted(balances.items()))}")
        print(f"activity: {dict(sorted(activity.items()))}")
        broker.stream_publish(f"{root}.withdrawn", json.dumps({"amount": 20}), key="acc-1")
        project(broker, stream, "balances", balance)
        print(f"balances after one more event: {dict(sorted(balances.items()))}")
        big = []
        broker.create_consumer(stream, "big-movements", deliver="all")
        project(broker, stream, "big-movements",
                lambda account, kind, e: big.append(f"{account} {kind} {e['amount']}") if e["amount"] >= 100 else None)
        print(f"big-movements, built later from the whole history: {sorted(big)}")
        broker.delete_stream(stream)


if __name__ == "__main__":
    main()
