"""Cookbook 12: a stream-processing pipeline.

    clicks --(filter bots, enrich with country)--> enriched --(5-minute tumbling
    window count per country)--> click-counts

Raw click events (with their own event time, spread over 15 minutes) go into a
`clicks` stream. Stage 1, a durable consumer, drops bot traffic, adds the user's
country and writes to `enriched`. Stage 2 counts clicks per country in 5-minute
tumbling windows of event time: a window is emitted to `click-counts` once an event
from a later window shows it is over (the watermark), and the last one when the input
goes quiet. Each stage acknowledges its input only after its output is stored.

    python examples/python/stream_pipeline.py [--url ringbroker://127.0.0.1:7070]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import uuid

import ringbroker

WINDOW_S = 300
START = 1_700_000_000 - 1_700_000_000 % WINDOW_S  # a window boundary
COUNTRY = {"u1": "FR", "u2": "DE", "u3": "FR", "u4": "JP"}


def connect(url: str | None, data_dir: str) -> ringbroker.Broker:
    """A daemon's broker with --url, else an embedded one in a temporary folder."""
    return ringbroker.connect(url) if url else ringbroker.open(data_dir, shards=2, pin_to_cores=False)


def clicks() -> list:
    """45 clicks, one every 20 s of event time; every fifth is a bot."""
    users = list(COUNTRY)
    return [{"user": users[i % 4], "page": f"/p/{i % 3}", "ts": START + 20 * i,
             "agent": "bot" if i % 5 == 4 else "browser"} for i in range(45)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a ringbrokerd, ringbroker://host:port (default: embedded)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir, connect(args.url, data_dir) as broker:
        run = uuid.uuid4().hex[:8]
        for name in ("clicks", "enriched", "counts"):
            broker.create_stream(f"{name}-{run}", [f"{name}.{run}"], partitions=1)
        broker.stream_publish_batch([(f"clicks.{run}", json.dumps(c), c["user"]) for c in clicks()])
        print("stored 45 raw clicks over 15 minutes of event time")

        # Stage 1: filter and enrich.
        broker.create_consumer(f"clicks-{run}", "enrich", deliver="all")
        kept = dropped = 0
        with broker.consume_stream(f"clicks-{run}", "enrich") as raw:
            while batch := raw.fetch(64, 0.5):
                out = []
                for msg in batch:
                    click = json.loads(msg.bytes())
                    if click["agent"] == "bot":
                        dropped += 1
                        continue
                    click["country"] = COUNTRY[click["user"]]
                    out.append((f"enriched.{run}", json.dumps(click), click["user"]))
                broker.stream_publish_batch(out)
                kept += len(out)
                raw.ack_batch(batch)
        print(f"stage 1: kept {kept}, dropped {dropped} bot clicks")

        # Stage 2: 5-minute tumbling windows of event time.
        windows: dict = collections.defaultdict(collections.Counter)
        emitted = []

        def emit(window: int) -> None:
            counts = dict(sorted(windows.pop(window).items()))
            result = {"window_start": window, "counts": counts}
            broker.stream_publish(f"counts.{run}", json.dumps(result), key=str(window))
            emitted.append(result)

        broker.create_consumer(f"enriched-{run}", "window", deliver="all")
        with broker.consume_stream(f"enriched-{run}", "window") as enriched:
            while batch := enriched.fetch(64, 0.5):
                for msg in batch:
                    click = json.loads(msg.bytes())
                    window = click["ts"] - click["ts"] % WINDOW_S
                    for done in [w for w in windows if w < window]:  # the watermark passed them
                        emit(done)
                    windows[window][click["country"]] += 1
                enriched.ack_batch(batch)
            for window in sorted(windows):  # input quiet: flush
                emit(window)

        with broker.consume_stream(f"counts-{run}", deliver="all") as results:
            for msg in results.messages(idle_timeout=0.5):
                r = json.loads(msg.bytes())
                print(f"window +{(r['window_start'] - START) // 60:>2} min: {r['counts']}")
        total = sum(sum(r["counts"].values()) for r in emitted)
        print(f"{len(emitted)} windows, {total} clicks counted")
        for name in ("clicks", "enriched", "counts"):
            broker.delete_stream(f"{name}-{run}")


if __name__ == "__main__":
    main()
