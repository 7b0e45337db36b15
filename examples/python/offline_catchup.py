"""Cookbook 8: an offline consumer catches up after a restart.

A durable stream consumer (`mailer`) reads and acknowledges the first events, then
goes away: embedded, the whole broker is closed and reopened on the same data
directory (a process restart); with --url, the consumer's connection is closed and a
new one made. Events published meanwhile wait in the stream; when the consumer comes
back it resumes after the last acknowledged record, with nothing lost and nothing
repeated.

    python examples/python/offline_catchup.py [--url ringbroker://127.0.0.1:7070]
"""

from __future__ import annotations

import argparse
import tempfile
import uuid

import ringbroker


def connect(url: str | None, data_dir: str) -> ringbroker.Broker:
    """A daemon's broker with --url, else an embedded one on data_dir."""
    return ringbroker.connect(url) if url else ringbroker.open(data_dir, shards=2, pin_to_cores=False)


def read(broker: ringbroker.Broker, stream: str) -> list:
    with broker.consume_stream(stream, "mailer") as mailer:
        seen = []
        for event in mailer.messages(idle_timeout=0.5):
            seen.append(event.text())
            event.ack()
        return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a ringbrokerd, ringbroker://host:port (default: embedded)")
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    stream, subject = f"signups-{run}", f"signups.{run}"
    with tempfile.TemporaryDirectory() as data_dir:
        with connect(args.url, data_dir) as broker:
            broker.create_stream(stream, [subject], durability="always")
            broker.create_consumer(stream, "mailer", deliver="all")
            broker.stream_publish_batch([(subject, f"user-{i}") for i in range(3)])
            print(f"online: mailer handled {read(broker, stream)}")
        print("mailer offline" + (" (broker restarted)" if not args.url else " (connection closed)"))
        with connect(args.url, data_dir) as broker:
            broker.stream_publish_batch([(subject, f"user-{i}") for i in range(3, 8)])
            print("5 signups while the mailer was away")
        with connect(args.url, data_dir) as broker:
            missed = read(broker, stream)
            print(f"back online: caught up on {len(missed)} events: {missed}")
            if missed == [f"user-{i}" for i in range(3, 8)]:
                print("nothing lost, nothing repeated")
            broker.delete_stream(stream)


if __name__ == "__main__":
    main()
