"""Whole-process time of `mlp predict model.onnx` (onnxruntime, no torch) against `mlp predict best.pt` (torch).

Usage:
    python benchmarks/export_predict.py --rows 1000 100000 --reps 5

Trains one small multiclass run (8 features, hidden [64, 64]), exports it with `mlp export`, then for each row
count runs both commands as fresh processes, interleaved (A B A B ...) so a noisy neighbour slows both alike,
and prints the median of each and their ratio. Process start-up (imports) is included on purpose: that is what a
user waits for. The two CSVs are compared as well: same predicted labels, probabilities within 1e-5.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "export_predict"
MLP = [sys.executable, "-m", "mlp_cli"]


def write_rows(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 4, n)
    x = rng.normal(size=(n, 8)) + label[:, None] * 0.7
    lines = [",".join([f"b{j}" for j in range(8)] + ["label"])]
    lines += [",".join(f"{v:.5f}" for v in row) + f",c{c}" for row, c in zip(x, label, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(args: list, cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(MLP + [str(a) for a in args], cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--reps", type=int, default=5)
    options = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    write_rows(OUT / "train.csv", 20_000, seed=0)
    (OUT / "run.yaml").write_text(yaml.safe_dump({
        "task": "multiclass",
        "data": {"train": "train.csv", "target": "label"},
        "model": {"hidden": [64, 64]},
        "train": {"epochs": 3, "batch_size": 256},
        "output_dir": "run",
    }))
    run(["train", "run.yaml", "--quiet", "--overwrite"], OUT)
    run(["export", "run/best.pt", "-o", "run/model.onnx"], OUT)
    size = (OUT / "run" / "model.onnx").stat().st_size
    print(f"model.onnx: {size:,} bytes; best.pt: {(OUT / 'run' / 'best.pt').stat().st_size:,} bytes")
    print(f"{'rows':>9}  {'torch (best.pt)':>16}  {'onnxruntime':>12}  {'onnx / torch':>12}")
    for n in options.rows:
        data = write_rows(OUT / f"rows_{n}.csv", n, seed=n)
        variants = {"torch": ["predict", "run/best.pt", data.name, "-o", "torch.csv"],
                    "onnx": ["predict", "run/model.onnx", data.name, "-o", "onnx.csv"]}
        for args in variants.values():  # warm the page cache once for both
            run(args, OUT)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(options.reps):
            for name, args in variants.items():
                times[name].append(run(args, OUT))
        torch_s, onnx_s = statistics.median(times["torch"]), statistics.median(times["onnx"])
        print(f"{n:>9,}  {torch_s:>15.2f}s  {onnx_s:>11.2f}s  {onnx_s / torch_s:>12.2f}")
        check(OUT / "torch.csv", OUT / "onnx.csv")


def check(torch_csv: Path, onnx_csv: Path) -> None:
    import pyarrow.csv as pacsv

    a, b = pacsv.read_csv(torch_csv), pacsv.read_csv(onnx_csv)
    assert a.column_names == b.column_names and a.column("prediction").equals(b.column("prediction"))
    worst = max(float(np.max(np.abs(a.column(c).to_numpy() - b.column(c).to_numpy()))) for c in a.column_names[1:])
    assert worst <= 1e-5, worst
    print(f"{'':>9}  same labels; probabilities within {worst:.1g}")


if __name__ == "__main__":
    main()
