"""What experiment tracking costs: import time, first use of a new SQLite store, and time per epoch.

    python benchmarks/tracking_overhead.py [--repeats 3] [--epochs 20]

Everything is measured in this one run, interleaved, medians of --repeats; ratios are against the untracked
baseline measured alongside. Tracking off is the same object graph as before tracking existed (`attach` returns
the reporter itself), which the script checks before it times anything.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def import_seconds(statement: str) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def write_data(folder: Path, rows: int = 4000) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 8))
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1)
    lines = [",".join([*(f"f{i}" for i in range(8)), "label"])]
    lines += [",".join([*(f"{v:.5f}" for v in row), str(label)]) for row, label in zip(x, y, strict=True)]
    (folder / "data.csv").write_text("\n".join(lines) + "\n")
    return folder / "data.csv"


def timed(method, spent: list[float]):
    def wrapper(*args):
        t = time.perf_counter()
        method(*args)
        spent.append(time.perf_counter() - t)

    return wrapper


class EpochClock:  # a Callback (duck-typed, so this module imports no torch before the import timings)
    """Times each epoch from one on_epoch to the next (train step + evaluation + saves + trackers)."""

    def __init__(self):
        self.times: list[float] = []
        self.last = None

    def on_start(self, info):
        self.last = time.perf_counter()

    def on_progress(self, progress): ...

    def on_message(self, text): ...

    def on_diagnostics(self, rows, title): ...

    def on_end(self, summary): ...

    def on_epoch(self, report):
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now


def imports() -> None:
    print("import (fresh interpreter, seconds, median of 3):")
    base = statistics.median(import_seconds("import mlp_cli.train") for _ in range(3))
    for name, statement in [
        ("mlp_cli.tracking (tracking off)", "import mlp_cli.train, mlp_cli.tracking"),
        ("+ mlflow client", "import mlp_cli.train; from mlflow.tracking import MlflowClient"),
        ("+ torch.utils.tensorboard", "import mlp_cli.train; from torch.utils.tensorboard import SummaryWriter"),
    ]:
        t = statistics.median(import_seconds(statement) for _ in range(3))
        print(f"  {name:34s} {t:6.2f} s   (+{t - base:5.2f} s over import mlp_cli.train = {base:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--skip-imports", action="store_true", help="only the store and per-epoch figures")
    args = parser.parse_args()
    if not args.skip_imports:
        imports()

    from mlp_cli.config import config_from_dict
    from mlp_cli.tracking import attach, mlflow_client
    from mlp_cli.train import Callback, Trainer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_data(tmp)
        first = []
        for i in range(2):
            t = time.perf_counter()
            mlflow_client(f"sqlite:///{tmp / f'first{i}.db'}")
            first.append(time.perf_counter() - t)
        t = time.perf_counter()
        mlflow_client(f"sqlite:///{tmp / 'first0.db'}")
        print(f"new SQLite store (tables + migrations): {first[0]:.2f} s then {first[1]:.2f} s; opening an existing one: "
              f"{time.perf_counter() - t:.2f} s")

        def config(tracking: dict, run: str):
            return config_from_dict({
                "task": "multiclass", "data": {"train": str(data), "target": "label"}, "model": {"hidden": [64, 64]},
                "train": {"epochs": args.epochs, "batch_size": 64, "early_stopping": 0, "device": "cpu", "threads": 1},
                "output_dir": str(tmp / run), "tracking": tracking,
            }, warn=False)

        off = config({}, "off")
        probe = Callback()
        assert attach(off, probe) is probe, "tracking off must hand the trainer the very same callback"
        variants = {
            "off": {},
            "mlflow (sqlite)": {"mlflow": {"uri": f"sqlite:///{tmp / 'first0.db'}", "experiment": "bench"}},
            "tensorboard": {"tensorboard": True},
            "tensorboard + histograms": {"tensorboard": {"histograms": True}},
        }
        per_epoch: dict[str, list[float]] = {name: [] for name in variants}
        in_tracker: dict[str, list[float]] = {name: [] for name in variants}
        for repeat in range(args.repeats):
            for name, tracking in variants.items():  # interleaved, so load on the machine hits every variant alike
                clock = EpochClock()
                cfg = config(tracking, f"{name.replace(' ', '_')}-{repeat}")
                callback = attach(cfg, clock)
                spent: list[float] = []
                for tracker in getattr(callback, "callbacks", [])[1:]:
                    tracker.on_epoch = timed(tracker.on_epoch, spent)
                Trainer(cfg, callback=callback, overwrite=True).run()
                per_epoch[name].append(statistics.median(clock.times[1:]))  # epoch 1 carries warm-up
                in_tracker[name].append(sum(spent) / len(clock.times))
        baseline = statistics.median(per_epoch["off"])
        print(f"time per epoch ({args.epochs} epochs, 3200 train rows, 64-64 MLP, 1 thread; median of {args.repeats} runs' medians):")
        for name, values in per_epoch.items():
            m = statistics.median(values)
            inside = statistics.median(in_tracker[name])
            print(f"  {name:26s} {m * 1000:8.2f} ms   x{m / baseline:5.2f}   of which in the trackers' on_epoch: "
                  f"{inside * 1000:6.2f} ms ({inside / baseline:.1%} of an untracked epoch)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
