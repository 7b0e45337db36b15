#!/usr/bin/env python3
"""Medians over rounds of benches/bindings/run.sh results, with ratios against the
peers measured from the same language in the same run.

    table.py results.jsonl NPROC > bindings.md
"""
import json
import statistics
import sys
from collections import defaultdict

CLIENTS = ["ringbroker-embedded", "ringbroker-embedded-asyncio", "ringbroker-remote",
           "ringbroker-remote-asyncio", "nats", "rabbitmq"]
PEERS = ["nats", "rabbitmq"]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt_rate(v):
    return "-" if v is None else f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.0f}k"


def fmt_us(v):
    return "-" if v is None else f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    nproc = sys.argv[2] if len(sys.argv) > 2 else "?"
    cells = defaultdict(lambda: defaultdict(list))
    for r in rows:
        key = (r["lang"], r["workload"], r["client"])
        for field in ("msgs_per_s", "p50_us", "p99_us"):
            cells[key][field].append(r.get(field))
        sent, received = r.get("sent"), r.get("received")
        if sent:
            cells[key]["lost"].append(100.0 * max(0, sent - (received or 0)) / sent)
    rounds = len({r["round"] for r in rows})
    print(f"Medians over {rounds} round(s) on {nproc} cores; ratios are against the peer "
          "measured from the same language in the same run (throughput: higher is better; "
          "p99: lower is better).\n")
    print("| language | workload | client | msgs/s | p50 µs | p99 µs | lost % "
          "| msgs/s vs nats | p99 vs nats | msgs/s vs rabbitmq | p99 vs rabbitmq |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    langs = sorted({k[0] for k in cells})
    for lang in langs:
        workloads = sorted({k[1] for k in cells if k[0] == lang})
        for wl in workloads:
            med = {}
            for client in CLIENTS:
                c = cells.get((lang, wl, client))
                if c:
                    med[client] = {f: median(c[f]) for f in ("msgs_per_s", "p50_us", "p99_us", "lost")}
            for client, m in med.items():
                vs = []
                for peer in PEERS:
                    p = med.get(peer)
                    if client.startswith("ringbroker") and p:
                        vs += [ratio(m["msgs_per_s"], p["msgs_per_s"]), ratio(m["p99_us"], p["p99_us"])]
                    else:
                        vs += ["", ""]
                lost = "-" if m["lost"] is None else f"{m['lost']:.1f}"
                print(f"| {lang} | {wl} | {client} | {fmt_rate(m['msgs_per_s'])} | {fmt_us(m['p50_us'])} "
                      f"| {fmt_us(m['p99_us'])} | {lost} | " + " | ".join(vs) + " |")


if __name__ == "__main__":
    main()
