"""Benchmark `mlp tune --workers K`: wall time of one study of N trials with 1 and with K worker processes.

Usage:  python benchmarks/bench_tune.py [--trials 8] [--workers 2] [--repeats 3] [--epochs 20] [--rows 4000]

Each repeat runs `mlp tune --quiet` on a fresh SQLite storage, once per worker count, interleaved (1, K, 1, K, ...),
as separate processes (so process start-up and imports count, as they do for a user); it prints every wall time,
the medians and their ratio, and the load average before and after. The space holds no hopeless values and the
pruner is off, so every repeat trains the same number of epochs. Workers only pay off when trials outlast the
start-up of a process that imports torch (a few seconds), and only on cores no one else is using: read the ratio
together with the load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def config(folder: Path, epochs: int, rows: int) -> Path:
    data = {
        "task": "regression",
        "data": {"synthetic": {"name": "sine", "n": rows, "noise": 0.1, "seed": 0}, "val_fraction": 0.2},
        "model": {"hidden": [32, 32]},
        "train": {"epochs": epochs, "batch_size": 32, "lr": 0.01, "early_stopping": 0},
        "output_dir": str(folder / "run"),
        "search": {"sampler": "random", "pruner": "none",
                   "space": {"train.lr": {"type": "float", "low": 3e-3, "high": 3e-2, "log": True}}},
    }
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def one(path: Path, trials: int, workers: int) -> float:
    shutil.rmtree(path.parent / "run", ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mlp_cli", "tune", str(path), "--trials", str(trials), "--workers", str(workers),
                    "--quiet"], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rows", type=int, default=4000)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}  cores: {len(os.sched_getaffinity(0))}")
    times: dict[int, list[float]] = {1: [], args.workers: []}
    with tempfile.TemporaryDirectory() as tmp:
        path = config(Path(tmp), args.epochs, args.rows)
        for repeat in range(args.repeats):
            for workers in times:
                seconds = one(path, args.trials, workers)
                times[workers].append(seconds)
                print(f"repeat {repeat}: {workers} worker(s): {seconds:.1f} s", flush=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    for workers, median in medians.items():
        print(f"{args.trials} trials, {workers} worker(s): median {median:.1f} s")
    print(f"speed-up of {args.workers} workers over 1: {medians[1] / medians[args.workers]:.2f}x")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
