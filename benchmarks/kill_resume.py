"""Soak test of durability: kill -9 a training run at random instants, resume it, and compare with an uninterrupted run.

Usage:
    python benchmarks/kill_resume.py --cycles 20

Each cycle starts `mlp train` (the first time fresh, then with --resume), kills it with SIGKILL after a random
delay, and checks that best.pt and last.pt load. When the run finally completes, its best.pt and last.pt must equal
the uninterrupted reference bit for bit. Prints one line per cycle and a summary.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "kill_resume"


def write_data(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30_000, 8))
    y = (x[:, 0] * x[:, 1] + np.sin(x[:, 2]) > 0).astype(int) + (x[:, 3] > 1).astype(int)
    lines = [",".join([f"x{j}" for j in range(8)] + ["label"])]
    lines += [",".join(f"{v:.6f}" for v in row) + f",{label}" for row, label in zip(x, y, strict=True)]
    (folder / "t.csv").write_text("\n".join(lines) + "\n")
    config = folder / "c.yaml"
    config.write_text(
        "task: multiclass\ndata: {train: t.csv, target: label}\nmodel: {hidden: [32, 32], dropout: 0.1}\n"
        "train: {epochs: 80, batch_size: 16, lr: 0.003, scheduler: cosine, checkpoint_interval: 0.05, early_stopping: 0, threads: 1}\n"
    )
    return config


def train(config: Path, run: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mlp_cli", "train", str(config), f"output_dir={run}", "--quiet", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model_state"]


def same(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    config = write_data(OUT)
    reference = train(config, OUT / "reference")
    assert reference.wait() == 0, reference.stderr.read()
    rng = random.Random(args.seed)
    run = OUT / "run"
    kills = mid_epoch = 0
    extra: tuple[str, ...] = ()
    for cycle in range(1, args.cycles + 1):
        process = train(config, run, *extra)
        delay = rng.uniform(1.0, 4.0)  # start-up is about 2 s; kills land in setup, mid-epoch and mid-save
        time.sleep(delay)
        if process.poll() is not None:
            print(f"cycle {cycle}: finished before the kill")
            break
        process.kill()
        process.wait()
        kills += 1
        loadable = []
        for name in ("best.pt", "last.pt"):
            if (run / name).exists():
                data = torch.load(run / name, weights_only=True)  # raises if torn
                loadable.append(name)
                if name == "last.pt" and data["train_state"]["step"]:
                    mid_epoch += 1
        print(f"cycle {cycle}: killed after {delay:.2f}s; loadable: {', '.join(loadable) or 'nothing written yet'}")
        extra = ("--resume",) if (run / "last.pt").exists() else ("--overwrite",)
    final = train(config, run, "--resume")
    assert final.wait() == 0, final.stderr.read()
    identical = same(run / "best.pt", OUT / "reference" / "best.pt") and same(run / "last.pt", OUT / "reference" / "last.pt")
    print(f"{kills} kill -9 cycles ({mid_epoch} left a mid-epoch last.pt); every checkpoint loadable; "
          f"final weights bit-identical to the uninterrupted run: {identical}")
    shutil.rmtree(OUT, ignore_errors=True)
    sys.exit(0 if identical else 1)


if __name__ == "__main__":
    main()
