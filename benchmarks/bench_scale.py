"""Scale benchmark: 1 vs 2 gloo processes, streamed vs in-memory epochs, and streaming's peak memory at 1M and 10M rows.

Usage:
    python benchmarks/bench_scale.py              # everything (about 4 minutes on 2 cores; writes ~1 GB of Parquet)
    python benchmarks/bench_scale.py --quick      # smaller tables
    python benchmarks/bench_scale.py --gpu        # on a machine with CUDA: rows/s of a wide MLP, GPU against CPU

Every figure comes from `mlp train` run as a subprocess on generated Parquet under benchmarks/out/scale/ (git-ignored,
removed at the end). Rows/s are training rows over the epoch times mlp itself records in metrics.csv; peak RSS is
the child's maximum resident set (for --nproc, the largest of the processes).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "scale"


def make_table(path: Path, rows: int, cols: int, seed: int = 0, row_group: int = 100_000) -> Path:
    """A classification table written in chunks, so generating 10M rows needs no more memory than 1M."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(cols, 4))
    writer = None
    for start in range(0, rows, row_group):
        n = min(row_group, rows - start)
        x = rng.normal(size=(n, cols)).astype(np.float32)
        label = np.argmax(x @ weights + 0.5 * rng.normal(size=(n, 4)), axis=1)
        table = pa.table({**{f"f{j}": x[:, j] for j in range(cols)}, "label": label.astype(np.int64)})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=row_group)
    writer.close()
    return path


def config_for(path: Path, folder: Path, hidden: list[int], batch: int, epochs: int, streaming: bool) -> Path:
    config = folder / f"{path.stem}-{'stream' if streaming else 'memory'}.yaml"
    config.write_text(json.dumps({
        "task": "multiclass",
        "data": {"train": str(path), "target": "label", "streaming": streaming, "val_fraction": 0.05, "test_fraction": 0.05},
        "model": {"hidden": hidden},
        "train": {"epochs": epochs, "batch_size": batch, "early_stopping": 0},
    }))
    return config


def run_mlp(config: Path, run_dir: Path, *extra: str) -> dict:
    """Train in a child process; epoch seconds from metrics.csv, peak RSS of the largest of its processes."""
    # A fresh wrapper process per run, so RUSAGE_CHILDREN's maximum belongs to this run alone.
    wrapper = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", wrapper, sys.executable, "-m", "mlp_cli", "train", str(config), f"output_dir={run_dir}",
         "--overwrite", "--quiet", *extra],
        capture_output=True, text=True,
    )
    wall = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"mlp train failed:\n{result.stderr}")
    peak = int(result.stdout.strip().splitlines()[-1])
    with (run_dir / "metrics.csv").open() as handle:
        epochs = [float(row["seconds"]) for row in csv.DictReader(handle)]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"epoch_s": statistics.median(epochs), "wall_s": wall, "peak_mb": peak / 1024,
            "rows": summary["train"]["n"], "val_loss": summary["val"]["loss"]}


def section_processes(folder: Path, rows: int) -> list[tuple]:
    table = make_table(folder / "procs.parquet", rows, 54)
    config = config_for(table, folder, [256, 256], 256, 2, streaming=False)
    one = run_mlp(config, folder / "p1")
    two = run_mlp(config, folder / "p2", "--nproc", "2")
    lines = [
        ("1 process, rows/s", f"{one['rows'] / one['epoch_s']:,.0f}", ""),
        ("2 gloo processes, rows/s", f"{two['rows'] / two['epoch_s']:,.0f}", f"{one['epoch_s'] / two['epoch_s']:.2f}x"),
        ("validation loss 1 vs 2 processes", f"{one['val_loss']:.6f} / {two['val_loss']:.6f}", ""),
    ]
    return lines


def section_streaming(folder: Path, rows: int) -> list[tuple]:
    table = make_table(folder / "stream.parquet", rows, 50)
    memory = run_mlp(config_for(table, folder, [64, 64], 256, 2, streaming=False), folder / "m")
    stream = run_mlp(config_for(table, folder, [64, 64], 256, 2, streaming=True), folder / "s")
    return [
        ("in-memory epoch s", f"{memory['epoch_s']:.2f}", f"peak RSS {memory['peak_mb']:,.0f} MB"),
        ("streamed epoch s", f"{stream['epoch_s']:.2f}", f"{stream['epoch_s'] / memory['epoch_s']:.2f}x in-memory (target <= 1.5x)"),
    ]


def section_memory(folder: Path, sizes: list[int]) -> list[tuple]:
    lines = []
    for rows in sizes:
        table = make_table(folder / f"rss{rows}.parquet", rows, 20)
        result = run_mlp(config_for(table, folder, [32], 1024, 1, streaming=True), folder / f"r{rows}")
        lines.append((f"streaming peak RSS, {rows:,} rows ({table.stat().st_size / 1e6:,.0f} MB file)", f"{result['peak_mb']:,.0f} MB",
                      f"{result['rows'] / result['epoch_s']:,.0f} rows/s"))
        table.unlink()
    return lines


def section_gpu() -> list[tuple]:
    """A wide MLP's training throughput on the GPU against this machine's CPU, same loop and batch."""
    import torch

    if not torch.cuda.is_available():
        return [("GPU", "no CUDA device here", "")]
    from mlp_cli.components import loss_function
    from mlp_cli.config import ModelConfig
    from mlp_cli.model import build_model

    lines = []
    for device in ("cuda", "cpu"):
        torch.manual_seed(0)
        n, width = 200_000 if device == "cuda" else 20_000, 128
        x, y = torch.randn(n, width, device=device), torch.randint(0, 10, (n,), device=device)
        model = build_model(width, 10, ModelConfig(hidden=[2048, 2048, 2048])).to(device)
        opt = torch.optim.Adam(model.parameters(), fused=True)
        loss_fn = loss_function("cross_entropy")
        for precision in (("fp32", "bf16") if device == "cuda" else ("fp32",)):
            cast = torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast(device, enabled=False)
            for _warm_then_timed in range(2):  # the first pass warms up kernels and the allocator
                if device == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
                for start in range(0, n, 1024):
                    with cast:
                        loss = loss_fn(model(x[start : start + 1024]).float(), y[start : start + 1024]) / 1024
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                if device == "cuda":
                    torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
            lines.append((f"{device} {precision} 128-2048x3-10 batch 1024 ({name})", f"{n / seconds:,.0f} rows/s", ""))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller tables")
    parser.add_argument("--gpu", action="store_true", help="only the GPU-against-CPU measurement")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()
    print(f"machine: {platform.platform()} | cpus {os.cpu_count()} | python {platform.python_version()}")
    if args.gpu:
        for line in section_gpu():
            print(" | ".join(line))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        lines = []
        lines += section_processes(OUT, 50_000 if args.quick else 200_000)
        lines += section_streaming(OUT, 200_000 if args.quick else 1_000_000)
        lines += section_memory(OUT, [100_000, 1_000_000] if args.quick else [1_000_000, 10_000_000])
    finally:
        if not args.keep:
            shutil.rmtree(OUT, ignore_errors=True)
    width = max(len(line[0]) for line in lines)
    for name, value, note in lines:
        print(f"{name:<{width}}  {value:>22}  {note}")


if __name__ == "__main__":
    main()
