"""Benchmark `mlp_cli.data.load_frame` on CSV vs Parquet: load time, throughput and peak memory per fresh process."""

# Usage:  python benchmarks/bench_data.py [--rows 1000000] [--cols 50] [--repeats 3] [--keep] [--out DIR]
# Writes one seeded table (float32 columns f0..f{M-1} + int `label` with 7 classes) as CSV and Parquet under
# benchmarks/out/ (removed at the end unless --keep), then times each load in a fresh subprocess so that
# ru_maxrss is that one load's peak. Files are freshly written, so reads come from the OS page cache (warm).

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MB = 1024 * 1024
N_CLASSES = 7

# Targets: (description, check(results) -> bool)
CSV_MBPS_TARGET = 100.0
PARQUET_SPEEDUP_TARGET = 3.0
MEMORY_RATIO_TARGET = 3.0

# Runs in the child: import everything the loader needs, record baseline RSS, load once, report JSON on stdout.
CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import numpy, pyarrow, pyarrow.csv, pyarrow.parquet, pyarrow.dataset, pyarrow.compute  # noqa: F401 (preload)
from mlp_cli.data import load_frame

def rss_now_kb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return _maxrss_kb()

def _maxrss_kb():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r  # macOS reports bytes, Linux KiB

baseline = rss_now_kb()
t0 = time.perf_counter()
frame, features = load_frame(Path(sys.argv[1]), None, [], "label", target_required=True)
seconds = time.perf_counter() - t0
assert frame.numeric.shape == (int(sys.argv[2]), int(sys.argv[3])), frame.numeric.shape
print(json.dumps({"seconds": seconds, "baseline_kb": baseline, "peak_kb": _maxrss_kb()}))
"""


def generate(folder: Path, rows: int, cols: int, seed: int = 0) -> dict[str, Path]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    data = rng.standard_normal((rows, cols), dtype=np.float32)
    arrays = [pa.array(data[:, j]) for j in range(cols)]
    arrays.append(pa.array(rng.integers(0, N_CLASSES, rows, dtype=np.int64)))
    table = pa.table(arrays, names=[f"f{j}" for j in range(cols)] + ["label"])
    del data, arrays
    paths = {"csv": folder / "bench.csv", "parquet": folder / "bench.parquet"}
    pacsv.write_csv(table, str(paths["csv"]))
    pq.write_table(table, str(paths["parquet"]))
    return paths


def measure(path: Path, rows: int, cols: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(rows), str(cols)],
        capture_output=True, text=True, env=env, cwd=str(ROOT),
    )
    if proc.returncode != 0:
        sys.exit(f"child failed on {path.name} (exit {proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load_avg() -> str:
    """1/5/15-minute load average: other jobs on a small machine skew the timings."""
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "n/a"


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cols", type=int, default=50, help="float feature columns (plus one int `label`)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh-process loads per format; median time")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--out", type=Path, default=HERE / "out", help="parent folder for the temporary files")
    args = parser.parse_args()

    import numpy as np
    import pyarrow as pa

    print(f"machine: {platform.platform()} | {platform.machine()} | cpu_count={os.cpu_count()} | "
          f"python {platform.python_version()} | load avg {load_avg()}")
    print(f"versions: pyarrow {pa.__version__}, numpy {np.__version__}")
    print(f"table: {args.rows:,} rows x {args.cols} float32 columns + int64 label ({N_CLASSES} classes), "
          f"{args.repeats} fresh-process repeats each (median time, max memory)")

    args.out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="bench_data_", dir=args.out))
    try:
        t0 = time.perf_counter()
        paths = generate(folder, args.rows, args.cols)
        print(f"generated in {time.perf_counter() - t0:.1f}s under {folder}")

        array_mb = args.rows * args.cols * 4 / MB
        results = {}
        for fmt, path in paths.items():
            runs = [measure(path, args.rows, args.cols) for _ in range(args.repeats)]
            size_mb = path.stat().st_size / MB
            seconds = statistics.median(r["seconds"] for r in runs)
            worst = max(runs, key=lambda r: r["peak_kb"] - r["baseline_kb"])
            peak_mb, base_mb = worst["peak_kb"] / 1024, worst["baseline_kb"] / 1024
            results[fmt] = dict(size_mb=size_mb, seconds=seconds, mbps=size_mb / seconds, peak_mb=peak_mb,
                                base_mb=base_mb, delta_mb=peak_mb - base_mb, ratio=(peak_mb - base_mb) / array_mb,
                                times=[r["seconds"] for r in runs])

        print(f"\nfloat32 array size (rows x cols x 4): {array_mb:.1f} MB")
        head = f"{'format':<8} {'file MB':>9} {'median s':>9} {'MB/s':>8} {'peak RSS MB':>12} {'baseline MB':>12} " \
               f"{'peak-base MB':>13} {'(peak-base)/array':>18}  times s"
        print(head)
        print("-" * len(head))
        for fmt, r in results.items():
            print(f"{fmt:<8} {r['size_mb']:>9.1f} {r['seconds']:>9.3f} {r['mbps']:>8.1f} {r['peak_mb']:>12.1f} "
                  f"{r['base_mb']:>12.1f} {r['delta_mb']:>13.1f} {r['ratio']:>18.2f}  "
                  + ", ".join(f"{t:.3f}" for t in r["times"]))

        csv, pq = results["csv"], results["parquet"]
        speedup = csv["seconds"] / pq["seconds"]
        print(f"\nParquet/CSV speed ratio (CSV median s / Parquet median s): {speedup:.2f}x")
        print(f"load avg at end: {load_avg()}")
        print("\ntargets:")
        print(f"  [{mark(csv['mbps'] >= CSV_MBPS_TARGET)}] CSV >= {CSV_MBPS_TARGET:.0f} MB/s: {csv['mbps']:.1f} MB/s")
        print(f"  [{mark(speedup >= PARQUET_SPEEDUP_TARGET)}] Parquet >= {PARQUET_SPEEDUP_TARGET:.0f}x faster than "
              f"CSV: {speedup:.2f}x")
        for fmt, r in results.items():
            print(f"  [{mark(r['ratio'] < MEMORY_RATIO_TARGET)}] {fmt} peak above baseline < "
                  f"{MEMORY_RATIO_TARGET:.0f}x float32 array: {r['ratio']:.2f}x ({r['delta_mb']:.0f} MB)")
    finally:
        if args.keep:
            print(f"\nkept files in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
