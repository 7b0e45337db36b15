"""Cookbook 3: fire-and-forget telemetry on subjects.

Hosts publish readings on `telemetry.<host>.<metric>` in batches (one C call per
batch, at most once, nothing stored). A CPU dashboard subscribes to `telemetry.*.cpu`,
an archiver to everything under `telemetry.>`; each gets what its pattern matches and
prints averages. Readings published while nobody listens are simply gone: that is the
contract of subjects.

    python examples/python/telemetry.py [--url ringbroker://127.0.0.1:7070]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import uuid

import ringbroker

HOSTS = ["web-1", "web-2", "db-1"]
ROUNDS = 20


def connect(url: str | None, data_dir: str) -> ringbroker.Broker:
    """A daemon's broker with --url, else an embedded one in a temporary folder."""
    return ringbroker.connect(url) if url else ringbroker.open(data_dir, shards=2, pin_to_cores=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a ringbrokerd, ringbroker://host:port (default: embedded)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir, connect(args.url, data_dir) as broker:
        root = f"telemetry{uuid.uuid4().hex[:8]}"
        broker.publish(f"{root}.web-1.cpu", b"99")  # nobody listens yet: dropped
        with broker.subscribe(f"{root}.*.cpu") as dashboard, broker.subscribe(f"{root}.>") as archive:
            for r in range(ROUNDS):
                batch = []
                for h, host in enumerate(HOSTS):
                    batch.append((f"{root}.{host}.cpu", str(10 * (h + 1) + r % 5)))
                    batch.append((f"{root}.{host}.mem", str(40 + h)))
                broker.publish_batch(batch)
            print(f"published {ROUNDS * len(HOSTS) * 2} readings in {ROUNDS} batches")
            cpu = collections.defaultdict(list)
            for msg in dashboard.messages(idle_timeout=0.5):
                cpu[msg.subject.split(".")[1]].append(float(msg.text()))
            for host in HOSTS:
                values = cpu[host]
                print(f"dashboard: {host} cpu average {sum(values) / len(values):.1f} over {len(values)} readings")
            archived = sum(1 for _ in archive.messages(idle_timeout=0.5))
            print(f"archive: {archived} readings")


if __name__ == "__main__":
    main()
