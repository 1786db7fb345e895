"""Benchmark raster `mlp predict`: pixels/s against the same model on the same pixels held as an in-memory table,
at 1 and 2 threads, and peak RSS for a small against a large synthetic scene (each in a fresh process): flat.

# Usage:  python benchmarks/bench_raster.py [--size 1536] [--small 512] [--large 6000] [--repeats 3] [--out DIR]
# The scenes are 13-band uint16 GeoTIFFs (tiled 256 x 256, deflate) named B01..B12, B8A like Sentinel-2, written
# window by window under benchmarks/out/ (removed at the end). The model is a 64-64 ReLU net with 8 classes trained
# for one epoch on 4,000 synthetic pixels: the weights do not matter to the speed, the shapes do.
# "table" = the scene's valid pixels already in memory as a Frame: preprocessing + forward + argmax in batches of
# 65,536, no I/O. "raster" = `predict_map`: read, validity mask, the same preprocessing and forward, write the map.
# Runs are interleaved (table, raster, per thread count) and the median of --repeats is reported.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
RSS_RATIO_TARGET = 1.5  # large scene (137x the pixels) may use at most this much more peak memory: flat

MAKE = r"""
import sys, numpy as np, rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window
path, side = sys.argv[1], int(sys.argv[2])
profile = {"driver": "GTiff", "width": side, "height": side, "count": 13, "dtype": "uint16", "crs": "EPSG:32633",
           "transform": from_origin(330000, 5822040, 10, 10), "tiled": True, "blockxsize": 256, "blockysize": 256,
           "compress": "deflate", "nodata": 0, "BIGTIFF": "IF_SAFER"}
names = sys.argv[3].split(",")
rng = np.random.default_rng(0)
with rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(path, "w", **profile) as ds:
    for i, name in enumerate(names, start=1):
        ds.set_band_description(i, name)
    for _, w in ds.block_windows(1):
        rows, cols = np.mgrid[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width]
        base = (np.sin(rows / 97.0) + np.cos(cols / 53.0)) * 1500 + 3000
        block = np.stack([base * (1 + 0.05 * b) for b in range(13)]) + rng.integers(0, 64, size=(13, w.height, w.width))
        ds.write(block.astype("uint16"), window=w)
"""

RSS = r"""
import json, sys, time
import torch
from mlp_cli.raster_predict import predict_map
torch.set_num_threads(1)
t = time.perf_counter()
report = predict_map(sys.argv[1], sys.argv[2], sys.argv[3])
seconds = time.perf_counter() - t
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and exec, so it would report
# the benchmark process's own peak; the high-water mark belongs to this process's address space alone.
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"pixels": report.width * report.height, "seconds": seconds, "peak_mb": peak_kb / 1024}))
"""


def make_scene(path: Path, side: int) -> None:
    subprocess.run([sys.executable, "-c", MAKE, str(path), str(side), ",".join(BANDS)], check=True)


def make_model(folder: Path) -> Path:
    import numpy as np

    from mlp_cli.config import config_from_dict
    from mlp_cli.train import train

    rng = np.random.default_rng(0)
    lines = [",".join([*BANDS, "label"])]
    for _ in range(4000):
        label = int(rng.integers(8))
        lines.append(",".join([*(str(int(v)) for v in rng.normal(3000 + 300 * label, 500, 13)), str(label)]))
    (folder / "pixels.csv").write_text("\n".join(lines) + "\n")
    config = config_from_dict({
        "task": "multiclass", "data": {"train": str(folder / "pixels.csv"), "target": "label"},
        "model": {"hidden": [64, 64]}, "train": {"epochs": 1, "device": "cpu"}, "output_dir": str(folder / "run"),
    })
    train(config)
    return folder / "run" / "best.pt"


def table_seconds(checkpoint: Path, scene: Path) -> tuple[float, int]:
    """The same model on the scene's pixels as an in-memory table: preprocessing, forward, argmax."""
    import numpy as np
    import rasterio
    import torch

    from mlp_cli.data import Frame
    from mlp_cli.evaluate import EVAL_BATCH, load_checkpoint_model

    _, _, model, prep = load_checkpoint_model(checkpoint)
    with rasterio.open(scene) as ds:
        pixels = ds.read().reshape(13, -1).T.astype(np.float32)
    frame = Frame("bench", "raster", pixels.copy(), list(prep.features))
    t = time.perf_counter()
    with torch.inference_mode():
        x = torch.from_numpy(prep.inputs(frame))
        for start in range(0, len(x), EVAL_BATCH):
            model(x[start : start + EVAL_BATCH]).argmax(dim=1)
    return time.perf_counter() - t, len(pixels)


def raster_seconds(checkpoint: Path, scene: Path, out: Path) -> float:
    from mlp_cli.raster_predict import predict_map

    t = time.perf_counter()
    predict_map(checkpoint, scene, out)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1536, help="side of the throughput scene, pixels")
    parser.add_argument("--small", type=int, default=512)
    parser.add_argument("--large", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "raster")
    parser.add_argument("--skip-throughput", action="store_true", help="only the peak-memory comparison")
    args = parser.parse_args()
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    try:
        checkpoint = make_model(args.out)
        scene = args.out / "scene.tif"
        make_scene(scene, args.size)
        print(f"throughput: {args.size} x {args.size} x 13 uint16 scene, 64-64 net, 8 classes, median of {args.repeats}")
        results = {}
        for threads in () if args.skip_throughput else (1, 2):
            torch.set_num_threads(threads)
            tables, rasters = [], []
            for _ in range(args.repeats):  # interleaved, so load on the shared machine hits both alike
                seconds, pixels = table_seconds(checkpoint, scene)
                tables.append(seconds)
                rasters.append(raster_seconds(checkpoint, scene, args.out / "map.tif"))
            table, raster = statistics.median(tables), statistics.median(rasters)
            results[threads] = {"table_px_s": pixels / table, "raster_px_s": pixels / raster, "ratio": table / raster}
            print(f"  {threads} thread(s): table {pixels / table:,.0f} px/s, raster {pixels / raster:,.0f} px/s, "
                  f"raster/table = {table / raster:.2f}")
        rss = {}
        for name, side in (("small", args.small), ("large", args.large)):
            path = args.out / f"{name}.tif"
            make_scene(path, side)
            child = subprocess.run([sys.executable, "-c", RSS, str(checkpoint), str(path), str(args.out / f"{name}_map.tif")],
                                   check=True, capture_output=True, text=True, cwd=ROOT)
            rss[name] = json.loads(child.stdout)
            path.unlink()
            (args.out / f"{name}_map.tif").unlink()
            print(f"peak RSS {name} {side} x {side} x 13: {rss[name]['peak_mb']:.0f} MB "
                  f"({rss[name]['pixels']:,} pixels in {rss[name]['seconds']:.1f} s, 1 thread)")
        ratio = rss["large"]["peak_mb"] / rss["small"]["peak_mb"]
        pixels_ratio = rss["large"]["pixels"] / rss["small"]["pixels"]
        verdict = "flat" if ratio <= RSS_RATIO_TARGET else "NOT flat"
        print(f"peak RSS large/small = {ratio:.2f} for {pixels_ratio:.0f}x the pixels (target <= {RSS_RATIO_TARGET}): {verdict}")
        print(json.dumps({"throughput": results, "rss": rss}))
    finally:
        shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
