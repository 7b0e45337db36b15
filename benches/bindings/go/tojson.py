#!/usr/bin/env python3
"""Reads `go test -bench` output on stdin; prints each benchmark result as one JSON
line of the benches/bindings/run.sh contract on stdout, and every other line on stderr.

    BenchmarkPubSub/nats-2  1  850.1 ns/op  1176000 msgs/s  5000000 received  5000000 sent
 -> {"client": "nats", "workload": "pubsub-64B", "msgs_per_s": 1176000.0, ...}
"""
import json
import re
import sys

WORKLOADS = {"PubSub": "pubsub-64B", "RequestReply": "request-reply-64B",
             "PublishBatch": "publish-batch-64B"}
# Name/sub-name, the -GOMAXPROCS suffix, N, then value-unit pairs.
LINE = re.compile(r"^Benchmark(\w+)/(\S+?)(?:-\d+)?\s+\d+\s+(.*)$")
# The testing package prints a result's name before the run and the numbers after:
# text written to stderr meanwhile splits the line. Join them again.
NAME_ONLY = re.compile(r"^Benchmark\S+(\s*$|\s+[^\s\d])")

name = None
for line in sys.stdin:
    if name and re.match(r"^\d+\s", line):
        line, name = name + " " + line, None
    m = LINE.match(line.rstrip("\n"))
    if not m and NAME_ONLY.match(line):
        name = line.split()[0]
    if not m or m.group(1) not in WORKLOADS:
        sys.stderr.write(line)
        sys.stderr.flush()
        continue
    fields = m.group(3).split()
    metrics = {unit: float(value) for value, unit in zip(fields[0::2], fields[1::2])}
    sys.stderr.write(line)
    print(json.dumps({
        "client": m.group(2),
        "workload": WORKLOADS[m.group(1)],
        "msgs_per_s": metrics.get("msgs/s", 0.0),
        "p50_us": metrics.get("p50-us"),
        "p99_us": metrics.get("p99-us"),
        "sent": int(metrics.get("sent", 0)),
        "received": int(metrics.get("received", 0)),
    }), flush=True)
