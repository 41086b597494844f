"""Draws compare.sh's concurrency sweep: rps and p99 against concurrency, per store.

Usage: plot_sweep.py SWEEP_CSV OUT_PNG [SUBTITLE]
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    subtitle = sys.argv[3] if len(sys.argv) > 3 else ""
    series: dict[str, list[tuple[int, float, float]]] = {}
    with open(src, newline="") as f:
        for row in csv.DictReader(f):
            if not row["rps"]:
                continue
            key = f"{row['store']} {row['path']}"
            series.setdefault(key, []).append(
                (int(row["concurrency"]), float(row["rps"]), float(row["p99_us"]) / 1000.0)
            )
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, points in sorted(series.items()):
        points.sort()
        xs = [p[0] for p in points]
        left.plot(xs, [p[1] for p in points], marker="o", label=name)
        right.plot(xs, [p[2] for p in points], marker="o", label=name)
    for ax, label in ((left, "requests per second"), (right, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency (requests in flight)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    right.set_yscale("log")
    fig.suptitle(f"Tollgate CheckRequest, 10,000 keys, 2 shared cores, loopback. {subtitle}")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main()
