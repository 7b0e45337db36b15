#!/usr/bin/env python3
"""Turns run.sh's results.tsv (round, workload, system, durability, msgs/s, p99 us, lost %)
into a markdown table: the median over rounds of each (workload, system, durability)
row, and ringbroker's ratio to each peer row of the same workload and durability class
(the part of the durability before its colon: a peer that acknowledges before fsync is compared
with ringbroker's `none` row, never with `always`)."""

import statistics
import sys
from collections import OrderedDict


def number(text):
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return None


def durability_class(text):
    """`none: no fsync per ack` -> `none` (the part before the colon)."""
    return text.split(":")[0].strip()


def main(path, cores):
    rows = OrderedDict()
    for line in open(path):
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 7:
            continue
        _, workload, system, durability, rate, p99, lost = parts
        row = rows.setdefault(
            (workload, system, durability), {"rates": [], "p99": [], "lost": [], "failed": 0}
        )
        if number(lost) is not None:
            row["lost"].append(number(lost))
        if number(rate) is None:
            row["failed"] += 1
        else:
            row["rates"].append(number(rate))
        if number(p99) is not None:
            row["p99"].append(number(p99))

    def median(values):
        return statistics.median(values) if values else None

    def ours(workload, durability):
        for (w, s, d), row in rows.items():
            if w == workload and s == "ringbroker" and durability_class(d) == durability_class(durability):
                return row
        return None

    print(f"Machine: {cores} cores; medians over rounds; ratio = ringbroker msgs/s / peer msgs/s.")
    print("p99 is as each tool reports it; - where the tool gives none.\n")
    print("| workload | system | durability | msgs/s | p99 µs | lost % (at most once) | ringbroker ÷ peer | runs failed |")
    print("|---|---|---|---|---|---|---|---|")
    for (workload, system, durability), row in rows.items():
        rate = median(row["rates"])
        p99 = median(row["p99"])
        ratio = ""
        if system != "ringbroker":
            mine = ours(workload, durability)
            mine_rate = median(mine["rates"]) if mine else None
            if mine_rate and rate:
                ratio = f"{mine_rate / rate:.2f}×"
            elif mine is None:
                ratio = "no like-for-like ringbroker row"
        rate_text = f"{rate:,.0f}" if rate else "-"
        p99_text = "-" if p99 is None else f"{p99:,.1f}"
        lost = f"{max(row['lost']):.1f} (worst)" if row["lost"] else "-"
        print(f"| {workload} | {system} | {durability} | {rate_text} | {p99_text} | {lost} | {ratio} | {row['failed']} |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "?")
