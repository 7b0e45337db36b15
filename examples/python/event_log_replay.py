"""Cookbook 6: an event log replayed by three consumer groups at different offsets.

One stream keeps every account event. Three durable consumers read it independently:
`audit` from the first record, `recent` from offset 5, `live` only what is published
after it was created. Each keeps its own position; reading by one group does not
take records from another (unlike a queue).

    python examples/python/event_log_replay.py [--url ringbroker://127.0.0.1:7070]
"""

from __future__ import annotations

import argparse
import tempfile
import uuid

import ringbroker


def connect(url: str | None, data_dir: str) -> ringbroker.Broker:
    """A daemon's broker with --url, else an embedded one in a temporary folder."""
    return ringbroker.connect(url) if url else ringbroker.open(data_dir, shards=2, pin_to_cores=False)


def read_all(broker: ringbroker.Broker, stream: str, group: str) -> list:
    with broker.consume_stream(stream, group) as member:
        events = []
        for record in member.messages(idle_timeout=0.5):
            events.append(record.text())
            record.ack()
        return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a ringbrokerd, ringbroker://host:port (default: embedded)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir, connect(args.url, data_dir) as broker:
        run = uuid.uuid4().hex[:8]
        stream, subject = f"accounts-{run}", f"accounts.{run}.events"
        broker.create_stream(stream, [subject], partitions=1, durability="always")
        broker.stream_publish_batch([(subject, f"event-{i}") for i in range(10)])
        print(f"stored 10 events in {stream}")
        broker.create_consumer(stream, "audit", deliver="all")
        broker.create_consumer(stream, "recent", deliver="offset:5")
        broker.create_consumer(stream, "live", deliver="new")
        broker.stream_publish_batch([(subject, f"event-{i}") for i in range(10, 12)])
        print("stored 2 more events after the groups were created")
        for group in ("audit", "recent", "live"):
            events = read_all(broker, stream, group)
            print(f"{group}: {len(events)} events, {events[0]} .. {events[-1]}")
        print(f"audit again: {len(read_all(broker, stream, 'audit'))} new events (its position is kept)")
        broker.delete_stream(stream)


if __name__ == "__main__":
    main()
