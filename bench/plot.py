#!/usr/bin/env python3
"""Plots a shardline-bench comparison (report.json) as PNG files a person can
look at: latency percentiles on a log axis, and throughput over time, one
pair of images per workload and durability setting.

Usage: python3 bench/plot.py <report.json> <out_dir>
"""
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PERCENTILES = ["p50", "p99", "p99.9", "p99.99", "max"]
COLORS = {"shardline": "tab:blue", "kafka": "tab:orange"}


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def plot_latency(comparison, out_dir):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, (key, title) in zip(axes, [("produce_latency_ms", "produce ack latency"), ("e2e_latency_ms", "end-to-end latency")]):
        for broker in ("shardline", "kafka"):
            values = [max(v, 1e-3) for v in comparison[broker][key]]
            axis.plot(PERCENTILES, values, marker="o", label=broker, color=COLORS[broker])
        axis.set_yscale("log")
        axis.set_ylabel("milliseconds (log)")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    fig.suptitle(f"{comparison['workload']} — {comparison['durability']} (medians of {comparison['shardline']['runs']} runs)")
    fig.tight_layout()
    path = os.path.join(out_dir, f"latency-{slug(comparison['workload'])}-{slug(comparison['durability'])}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_throughput(comparison, out_dir):
    fig, axis = plt.subplots(figsize=(8, 4))
    seen = set()
    for run in comparison["runs"]:
        broker = run["broker"]
        seconds = [s["second"] for s in run["seconds"]]
        mb = [s["produced_bytes"] / 1e6 for s in run["seconds"]]
        axis.plot(seconds, mb, color=COLORS.get(broker, "gray"), alpha=0.7, label=None if broker in seen else broker)
        seen.add(broker)
    axis.axvline(0, color="gray", linestyle="--", linewidth=1)
    axis.set_xlabel("second (negative: warm-up)")
    axis.set_ylabel("produced MB/s")
    axis.set_title(f"{comparison['workload']} — {comparison['durability']}: throughput over time, every run")
    axis.grid(True, alpha=0.3)
    axis.legend()
    fig.tight_layout()
    path = os.path.join(out_dir, f"throughput-{slug(comparison['workload'])}-{slug(comparison['durability'])}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as handle:
        comparisons = json.load(handle)
    os.makedirs(sys.argv[2], exist_ok=True)
    for comparison in comparisons:
        print(plot_latency(comparison, sys.argv[2]))
        print(plot_throughput(comparison, sys.argv[2]))


if __name__ == "__main__":
    main()
