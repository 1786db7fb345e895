"""Speed benchmark of `mlp`: its training loop against hand-written PyTorch, DataLoader and scikit-learn loops,
whole-process time to quality, CLI latency, prediction throughput, peak memory, and the levers behind them.

Usage:
    python benchmarks/bench.py                  # everything (about 4 minutes on an idle 2-core machine)
    python benchmarks/bench.py --quick          # smoke run: smaller tables, fewer repeats (about 1.5 minutes)
    python benchmarks/bench.py --only a,c,levers
    python benchmarks/bench.py --levers         # = --only levers
    python benchmarks/bench.py --list           # the section names

Sections:
    a  mlp's training epoch (Trainer.train_epoch) vs a minimal hand-written PyTorch loop; plus mlp's full epoch
       (validation + checkpoints) and Trainer.run() wall time per epoch
    b  the same vs a DataLoader(TensorDataset) loop
    c  vs scikit-learn MLPClassifier per epoch: satimage 36-64-64-6 (batch 128) and a synthetic 200k x 54 table
       54-256-256-7 (batch 256); scikit-learn runs in a worker process, with its default BLAS threads and with
       BLAS limited to mlp's thread count
    d  whole process to a tested model, shell prompt to shell prompt (subprocesses, interleaved): `mlp train
       configs/satimage.yaml` vs a StandardScaler + MLPClassifier((64,64)) script; and a 200,000 x 54 CSV (one file
       named as train and test), 54-256-256-7, 2 epochs, batch 256, vs MLPClassifier((256,256), max_iter=2)
    e  CLI latency: `mlp --help`, `mlp params 6,3,5,4,3` (plus the cost of `import torch` and of torch.optim)
    f  `mlp predict` rows/s on a 1M-row CSV and peak RSS of `mlp train` on it (1 epoch); predict's CSV formatting
    levers   each measured as a ratio in the same run: (1) fused vs foreach vs for-loop Adam, (2) 1 vs N threads,
             (3) one gather per epoch vs per-batch gathers, (4) inference_mode vs no_grad, (5) torch.compile,
             (6) calling the fused Adam kernel directly vs torch.optim.Adam.step
    profile  where mlp's epoch goes: direct-kernel, autograd-free and matmul-only floors; torch.profiler top ops
    startup  what #13's levers buy, each against what it replaced: own optimizer vs torch.optim, the no-hidden
             baseline's fit vs torch.optim.LBFGS, the thread probe's cost, cache-sized evaluation passes vs 65,536-row
             ones, number labels counted by np.unique vs per value, a CSV read whole vs block by block, the
             hand-written backward (backprop.HandStep) vs autograd
    process  #13's whole-process levers on the 200k CSV run (quick exit, GC paused while torch imports, data read
             while torch imports), each switched off alone in an otherwise identical `mlp train` process
    flops    achieved GFLOP/s of mlp's 200k-row epoch (6 FLOP per parameter per row) against the peak of a large
             fp32 matmul on the same cores, at 1 and 2 threads

How to read it: the machine is shared and noisy, so every comparison runs its variants interleaved (A, B, A, B, ...)
in one process and reports medians; ratios are ratios of those medians, measured in the same run. Absolute times
are only comparable within one run. The load average is printed at start and end: on a 2-core box, one busy
process elsewhere makes any 2-thread OpenMP/BLAS code (torch with 2 threads, numpy's OpenBLAS) 5-25x slower, so
read ratios that involve thread counts together with it. Scratch files go to benchmarks/out/bench/ (git-ignored); results also go to
benchmarks/out/bench/results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out" / "bench"
SATIMAGE_CONFIG = ROOT / "configs" / "satimage.yaml"
SATIMAGE_TRAIN = ROOT / "data" / "satimage" / "satimage_train.csv"
SATIMAGE_TEST = ROOT / "data" / "satimage" / "satimage_test.csv"
MLP = Path(sys.executable).parent / "mlp"  # the venv's console script, not whatever `mlp` is on PATH

# Targets from the issue, as bounds on ratios (mlp / other) or absolute values.
TARGET_HAND = 1.05  # mlp / hand-written loop, training epoch
TARGET_DATALOADER = 1 / 1.5  # mlp / DataLoader loop
TARGET_SKLEARN = 1 / 1.5  # mlp / scikit-learn per epoch
TARGET_ACCURACY = 0.90
TARGET_CLI_S = 0.3
TARGET_PROCESS = 1 / 1.5  # mlp train / scikit-learn script, whole process


@dataclass
class Scale:
    """How much work each section does; --quick shrinks everything so the whole script runs in about a minute."""

    small_reps: int = 25  # timed epochs per variant on satimage (about 15 ms each)
    big_rows: int = 200_000
    big_reps: int = 3  # timed epochs per variant on the big table (about 1 s each)
    process_reps: int = 5  # whole `mlp train` / scikit-learn script runs
    cli_reps: int = 7
    predict_rows: int = 1_000_000
    run_epochs: int = 20  # epochs of the Trainer.run() measurement
    compile_big: bool = True


QUICK = Scale(small_reps=7, big_rows=20_000, big_reps=2, process_reps=1, cli_reps=3, predict_rows=100_000,
              run_epochs=5, compile_big=False)


# ---------------------------------------------------------------------------------------------- results table


@dataclass
class Row:
    section: str
    name: str
    value: str
    ratio: float | None = None
    target: str = ""
    ok: bool | None = None


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    data: dict = field(default_factory=dict)  # raw numbers for results.json

    def add(self, section: str, name: str, value: str, ratio: float | None = None, target: str = "",
            ok: bool | None = None) -> None:
        self.rows.append(Row(section, name, value, ratio, target, ok))
        print(f"  [{section}] {name}: {value}" + (f"  ratio {ratio:.3f}" if ratio is not None else "")
              + (f"  target {target} {'ok' if ok else 'MISSED'}" if ok is not None else ""), flush=True)

    def render(self) -> str:
        head = ("sec", "measurement", "median", "ratio", "target", "")
        body = [(r.section, r.name, r.value, "" if r.ratio is None else f"{r.ratio:.3f}", r.target,
                 "" if r.ok is None else ("ok" if r.ok else "MISSED")) for r in self.rows]
        widths = [max(len(str(line[i])) for line in [head, *body]) for i in range(len(head))]
        fmt = lambda line: "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()  # noqa: E731
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        return "\n".join([fmt(head), rule, *map(fmt, body)])


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def secs(seconds: float) -> str:
    return f"{seconds:.3f} s"


# ---------------------------------------------------------------------------------------------- timing


class Durations(list):
    """Returned by a variant that times itself (per epoch, or in another process) instead of being timed whole."""


def interleaved(variants: dict[str, Callable[[], object]], reps: int, warmup: int = 1,
                settle: float = 0.0) -> dict[str, list[float]]:
    """Run the variants round-robin `reps` times after `warmup` rounds; returns each variant's timings.

    Interleaving matters on a shared machine: a noisy neighbour slows whichever variant runs at that moment, so
    running A A A B B B would turn noise into a fake ratio, while A B A B spreads it over both. A variant that
    times itself (e.g. in a worker process) returns Durations. `settle` seconds of
    sleep before each variant let another runtime's idle threads stop spinning (see SklearnWorker).
    """
    for _ in range(warmup):
        for fn in variants.values():
            time.sleep(settle)
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            time.sleep(settle)
            started = time.perf_counter()
            own = fn()
            times[name] += own if isinstance(own, Durations) else [time.perf_counter() - started]
    return times


def self_timed(fn: Callable[[], object], count: int) -> Callable[[], Durations]:
    """A variant that runs `fn` `count` times back to back and reports each duration."""

    def run() -> Durations:
        durations = Durations()
        for _ in range(count):
            started = time.perf_counter()
            fn()
            durations.append(time.perf_counter() - started)
        return durations

    return run


def median(values: list[float]) -> float:
    return statistics.median(values)


@contextlib.contextmanager
def threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Proc:
    seconds: float
    peak_rss: int  # bytes
    stdout: str
    returncode: int


def run_process(cmd: list[str], env: dict | None = None) -> Proc:
    """Run a command and return its wall time and *its own* peak RSS (os.wait4 gives the rusage of that child only)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it is reaped
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{stderr[-2000:]}")
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return Proc(seconds, rss, stdout, proc.returncode)


# ---------------------------------------------------------------------------------------------- workloads


@dataclass
class Workload:
    """A set-up mlp Trainer plus the standardized training tensors it uses, shared by every loop we compare."""

    name: str
    trainer: object
    hidden: list[int]
    batch: int
    epoch_no: int = 0
    threads: int = field(default_factory=torch.get_num_threads)  # what mlp's setup() chose (default_threads)

    def active(self):
        """Every loop compared on this workload runs at the thread count mlp chose for it."""
        return threads(self.threads)

    @property
    def x(self) -> torch.Tensor:
        return self.trainer.data.train.x

    @property
    def y(self) -> torch.Tensor:
        return self.trainer.data.train.y

    @property
    def n_out(self) -> int:
        return self.trainer.data.n_outputs

    def mlp_epoch(self) -> None:
        self.epoch_no += 1
        self.trainer.train_epoch(self.epoch_no)


def set_up_trainer(config, run_dir: Path):
    """Trainer after `setup()`, ready for direct `train_epoch` calls (no mid-epoch checkpoint saves)."""
    from mlp_cli.train import Trainer

    trainer = Trainer(config, run_dir=run_dir, overwrite=True)
    trainer.setup()
    trainer.next_save = float("inf")
    return trainer


def satimage_workload(hidden: list[int], tag: str, extra: list[str] = ()) -> Workload:
    from mlp_cli.config import load_config

    run_dir = OUT / f"runs/satimage_{tag}"
    overrides = [f"model.hidden=[{','.join(map(str, hidden))}]", "train.early_stopping=0", "train.device=cpu",
                 f"output_dir={run_dir}", *extra]
    config = load_config(SATIMAGE_CONFIG, overrides)
    return Workload(f"satimage {'-'.join(map(str, [36, *hidden, 6]))}", set_up_trainer(config, run_dir), hidden, 128)


def synthetic_table(rows: int, cols: int = 54, classes: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded Gaussian features; labels from a random linear teacher plus noise, so the task is learnable."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols), dtype=np.float32)
    teacher = rng.standard_normal((cols, classes)).astype(np.float32)
    y = np.argmax(x @ teacher + rng.standard_normal((rows, classes), dtype=np.float32), axis=1)
    return x, y


def write_parquet(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {f"f{j}": x[:, j] for j in range(x.shape[1])}
    columns["label"] = y.astype(np.int64)
    pq.write_table(pa.table(columns), path)


def big_workload(rows: int, extra: dict | None = None, tag: str = "big") -> Workload:
    """200k x 54 -> 256 -> 256 -> 7, batch 256. A separate small test file keeps all `rows` rows for training."""
    from mlp_cli.config import config_from_dict

    train_path, test_path = OUT / f"synthetic_{rows}x54.parquet", OUT / "synthetic_test.parquet"
    if not train_path.exists():
        write_parquet(train_path, *synthetic_table(rows))
    if not test_path.exists():
        write_parquet(test_path, *synthetic_table(2000, seed=1))
    run_dir = OUT / f"runs/{tag}"
    raw = {
        "task": "multiclass",
        "data": {"train": str(train_path), "test": str(test_path), "target": "label", "val_fraction": 0.0},
        "model": {"hidden": [256, 256]},
        "train": {"batch_size": 256, "optimizer": "adam", "lr": 1e-3, "early_stopping": 0, "device": "cpu", "seed": 0,
                  **(extra or {})},
        "output_dir": str(run_dir),
    }
    return Workload(f"synthetic {rows // 1000}k x54 54-256-256-7", set_up_trainer(config_from_dict(raw), run_dir),
                    [256, 256], 256)


def mlp_net(n_in: int, hidden: list[int], n_out: int, seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    layers, width = [], n_in
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, n_out))


# ---------------------------------------------------------------------------------------------- reference loops


class HandLoop:
    """The minimal loop people write: fresh randperm per epoch, x[idx] per batch, mean CE, default Adam."""

    def __init__(self, w: Workload, optimizer: Callable | None = None, gather_once: bool = False, model=None):
        self.x, self.y, self.batch = w.x, w.y, w.batch
        self.model = model if model is not None else mlp_net(w.x.shape[1], w.hidden, w.n_out)
        params = self.model.parameters()
        self.opt = optimizer(params) if optimizer else torch.optim.Adam(params, lr=1e-3)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.gather_once = gather_once
        self.gen = torch.Generator().manual_seed(0)

    def epoch(self) -> None:
        x, y, bs, model, opt, loss_fn = self.x, self.y, self.batch, self.model, self.opt, self.loss_fn
        n = len(x)
        perm = torch.randperm(n, generator=self.gen)
        if self.gather_once:  # mlp's layout: one gather, then contiguous slices
            xe, ye = x[perm], y[perm]
            batches = ((xe[i : i + bs], ye[i : i + bs]) for i in range(0, n, bs))
        else:
            batches = ((x[perm[i : i + bs]], y[perm[i : i + bs]]) for i in range(0, n, bs))
        for xb, yb in batches:
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()


class DataLoaderLoop:
    def __init__(self, w: Workload):
        from torch.utils.data import DataLoader, TensorDataset

        self.loader = DataLoader(TensorDataset(w.x, w.y), batch_size=w.batch, shuffle=True)
        self.model = mlp_net(w.x.shape[1], w.hidden, w.n_out)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loss_fn = torch.nn.CrossEntropyLoss()

    def epoch(self) -> None:
        for xb, yb in self.loader:
            loss = self.loss_fn(self.model(xb), yb)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()


class SklearnWorker:
    """MLPClassifier with mlp's settings, trained in a separate process; partial_fit is exactly one shuffled epoch.

    Why a process: numpy's OpenBLAS worker threads busy-wait for a while after each BLAS call. On a 2-core machine
    they then hold a core while torch's 2-thread OpenMP regions wait for their second thread, and the next torch
    epochs run 5-10x slower (measured: 15 ms -> 110 ms right after a scikit-learn epoch in the same process).
    A separate process plus a short `settle` pause between the two keeps each side's measurement clean.
    """

    SETTLE_S = 0.3  # > OpenBLAS's default spin timeout (2**28 cycles, about 0.1 s)

    def __init__(self, w: Workload, blas_threads: int | None = None):
        import multiprocessing

        stem = OUT / f"sklearn_{len(w.x)}x{w.x.shape[1]}"
        np.save(f"{stem}_x.npy", w.x.numpy())  # float32 stays float32 in scikit-learn (its fastest path)
        np.save(f"{stem}_y.npy", w.y.numpy())
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_sklearn_worker, args=(child, str(stem), tuple(w.hidden), w.batch, w.n_out,
                                                                     blas_threads),
                                daemon=True)
        self.proc.start()
        self.conn.recv()  # ready: data loaded, scikit-learn imported

    def epochs(self, count: int) -> Durations:
        self.conn.send(count)
        return Durations(self.conn.recv())

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(timeout=30)


def _sklearn_worker(conn, stem: str, hidden: tuple, batch: int, n_out: int, blas_threads: int | None) -> None:
    warnings.simplefilter("ignore")  # ConvergenceWarning after every one-epoch partial_fit
    from sklearn.neural_network import MLPClassifier

    if blas_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(blas_threads)  # process-wide: numpy's OpenBLAS (and OpenMP, unused here)

    x, y = np.load(f"{stem}_x.npy"), np.load(f"{stem}_y.npy")
    clf = MLPClassifier(hidden, solver="adam", batch_size=batch, learning_rate_init=1e-3, alpha=0.0, tol=0.0,
                        n_iter_no_change=10**9, early_stopping=False, shuffle=True, random_state=0)
    classes = np.arange(n_out)
    conn.send("ready")
    while (count := conn.recv()) is not None:
        durations = []
        for _ in range(count):
            started = time.perf_counter()
            clf.partial_fit(x, y, classes=classes)
            durations.append(time.perf_counter() - started)
        conn.send(durations)


# ---------------------------------------------------------------------------------------------- sections


class Bench:
    """The sections, as methods `section_<name>`; workloads are built on first use and shared between sections."""

    def __init__(self, scale: Scale, report: Report):
        self.scale, self.report = scale, report
        self._sat: Workload | None = None
        self._big: Workload | None = None
        self.checkpoint: Path | None = None  # satimage best.pt from (d), reused by (f)
        self.satimage_rss: int | None = None
        self.before: Path | None = None  # --before: an older checkout run beside this one in section d

    @property
    def sat(self) -> Workload:
        if self._sat is None:
            self._sat = satimage_workload([64, 64], "64")
        return self._sat

    @property
    def big(self) -> Workload:
        if self._big is None:
            self._big = big_workload(self.scale.big_rows)
        return self._big

    @staticmethod
    def compare(w: Workload, variants: dict[str, Callable[[], object]], reps: int, warmup: int = 1,
                settle: float = 0.0):
        with w.active():
            return interleaved(variants, reps, warmup, settle)

    def ratio_row(self, section: str, name: str, times: dict[str, list[float]], a: str, b: str,
                  bound: float | None = None, target: str = "", fmt=ms) -> float:
        ta, tb = median(times[a]), median(times[b])
        ratio = ta / tb
        ok = None if bound is None else ratio <= bound
        self.report.add(section, name, f"{fmt(ta)} vs {fmt(tb)}", ratio, target, ok)
        self.report.data[f"{section}:{name}"] = {a: times[a], b: times[b], "ratio": ratio}
        return ratio

    # -- a

    def section_a(self) -> None:
        w, s = self.sat, self.scale
        hand = HandLoop(w)
        times = self.compare(w, {"mlp": w.mlp_epoch, "hand": hand.epoch}, s.small_reps, warmup=2)
        self.ratio_row("a", f"{w.name} epoch: mlp / hand loop", times, "mlp", "hand", TARGET_HAND, "<= 1.05")

        # mlp's full epoch: training + validation + best.pt/metrics.csv/last.pt (atomic, fsync'd) in the run dir.
        trainer = w.trainer

        def full_epoch() -> None:
            w.epoch_no += 1
            loss = trainer.train_epoch(w.epoch_no)
            trainer.end_epoch(w.epoch_no, loss, 0.0)

        times = self.compare(w, {"full": full_epoch, "train": w.mlp_epoch, "hand": hand.epoch}, s.small_reps)
        full, train = median(times["full"]), median(times["train"])
        self.report.add("a", "mlp full epoch (train + val + checkpoints) / hand loop",
                        f"{ms(full)} vs {ms(median(times['hand']))}", full / median(times["hand"]))
        self.report.add("a", "  of which end_epoch (validation + checkpoint writes); ratio = share",
                        f"{ms(full - train)}", (full - train) / full)
        self._end_epoch_parts(w)
        self._run_wall()

    def _end_epoch_parts(self, w: Workload) -> None:
        """What end_epoch spends its time on: validation, and each atomic, fsync'd file it writes."""
        import io

        from mlp_cli import checkpoint

        trainer = w.trainer
        best_payload = lambda: trainer.payload(trainer.model.state_dict(), w.epoch_no, {}, kind="best")  # noqa: E731
        parts = {
            "validation (evaluate on val split)": lambda: trainer.evaluate(trainer.data.val),
            "last.pt (save_last: model + Adam state + RNG, fsync)": trainer.save_last,
            "best.pt (checkpoint.save, fsync)": lambda: checkpoint.save(trainer.run_dir / "best.pt", best_payload()),
            "best.pt payload torch.save to memory (no file, no fsync)": lambda: torch.save(best_payload(), io.BytesIO()),
            "metrics.csv (write_metrics, fsync)": lambda: trainer.rundir.write_metrics(trainer.state.history),
        }
        times = self.compare(w, parts, self.scale.small_reps)
        for name, values in times.items():
            self.report.add("a", f"    {name}", ms(median(values)))

    def _run_wall(self) -> None:
        """Trainer.run() end to end in-process (setup, epochs, test eval, baselines, final saves) per epoch."""
        from mlp_cli.config import load_config
        from mlp_cli.train import Trainer

        epochs = self.scale.run_epochs
        run_dir = OUT / "runs/satimage_run"
        config = load_config(SATIMAGE_CONFIG, ["model.hidden=[64,64]", "train.early_stopping=0", "train.device=cpu",
                                               f"train.epochs={epochs}", f"output_dir={run_dir}"])
        started = time.perf_counter()
        summary = Trainer(config, run_dir=run_dir, overwrite=True).run()
        wall = time.perf_counter() - started
        seconds = [row["seconds"] for row in summary_history(run_dir)]
        self.report.add("a", f"mlp Trainer.run() {epochs} epochs: wall / epoch (setup+finish amortized)",
                        f"{ms(wall / epochs)} (epoch median {ms(median(seconds))}, test acc "
                        f"{summary['test']['accuracy']:.4f})")

    # -- b

    def section_b(self) -> None:
        w = self.sat
        loader = DataLoaderLoop(w)
        times = self.compare(w, {"mlp": w.mlp_epoch, "dataloader": loader.epoch}, self.scale.small_reps, warmup=2)
        self.ratio_row("b", f"{w.name} epoch: mlp / DataLoader loop", times, "mlp", "dataloader", TARGET_DATALOADER,
                       "<= 0.667 (1.5x)")

    # -- c

    def section_c(self) -> None:
        """Two scikit-learn variants: its defaults (OpenBLAS uses every core) and BLAS limited to the thread count
        mlp uses, since on a busy 2-core box a 2-thread BLAS can collapse and flatter whoever uses one thread."""
        s = self.scale
        # Blocks of epochs per turn, so the settle pauses between mlp and scikit-learn stay a small part of the run.
        for w, rounds, block, fmt in ((self.sat, max(3, s.small_reps // 4), 4, ms),
                                      (self.big, s.big_reps, 1, secs)):
            workers = {"sklearn": SklearnWorker(w), "sklearn-matched": SklearnWorker(w, blas_threads=w.threads)}
            variants = {"mlp": self_timed(w.mlp_epoch, block)}
            variants.update({name: (lambda wk=wk, block=block: wk.epochs(block)) for name, wk in workers.items()})
            try:
                times = self.compare(w, variants, rounds, warmup=1, settle=SklearnWorker.SETTLE_S)
            finally:
                for worker in workers.values():
                    worker.close()
            self.ratio_row("c", f"{w.name} epoch: mlp / sklearn MLPClassifier", times, "mlp", "sklearn",
                           TARGET_SKLEARN, "<= 0.667 (1.5x)", fmt=fmt)
            self.ratio_row("c", f"  same, sklearn BLAS limited to mlp's {w.threads} thread(s)", times, "mlp",
                           "sklearn-matched", TARGET_SKLEARN, "<= 0.667 (1.5x)", fmt=fmt)

    # -- d

    def section_d(self) -> None:
        script = OUT / "sklearn_satimage.py"
        script.write_text(SKLEARN_SCRIPT)
        run_dir = OUT / "runs/satimage_cli"
        mlp_cmd = [str(MLP), "train", str(SATIMAGE_CONFIG), "--overwrite", "--quiet", "--json", f"output_dir={run_dir}"]
        sk_cmd = [sys.executable, str(script), str(SATIMAGE_TRAIN), str(SATIMAGE_TEST)]
        one_thread = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        runs: dict[str, list[Proc]] = {"mlp": [], "sklearn": [], "sklearn-1": []}
        before_cmd = self._before_cmd(mlp_cmd)
        for _ in range(self.scale.process_reps):
            runs["mlp"].append(run_process(mlp_cmd))
            runs["sklearn"].append(run_process(sk_cmd))
            runs["sklearn-1"].append(run_process(sk_cmd, env=one_thread))
            if before_cmd:
                runs.setdefault("before", []).append(run_process(*before_cmd))
        summary = json.loads(runs["mlp"][-1].stdout)
        mlp_acc = summary["test"]["accuracy"]
        sk_acc = json.loads(runs["sklearn"][-1].stdout.strip().splitlines()[-1])["accuracy"]
        times = {k: [p.seconds for p in v] for k, v in runs.items()}
        self.ratio_row("d", "satimage whole process to tested model: mlp train / sklearn script", times, "mlp",
                       "sklearn", TARGET_PROCESS, "<= 0.667 (1.5x)", fmt=secs)
        self.ratio_row("d", "  same, sklearn script with OPENBLAS_NUM_THREADS=1", times, "mlp", "sklearn-1",
                       TARGET_PROCESS, "<= 0.667 (1.5x)", fmt=secs)
        if "before" in times:
            self.ratio_row("d", "  mlp after / before (--before checkout)", times, "mlp", "before", fmt=secs)
            self.ratio_row("d", "  before: mlp train / sklearn script", times, "before", "sklearn", fmt=secs)
        inside = summary["wall_seconds"]
        self.report.add("d", "  mlp: in-run wall (setup..summary) / process start-up+exit",
                        f"{secs(inside)} / {secs(median(times['mlp']) - inside)} ({summary['epochs_run']} epochs, "
                        f"best {summary['best_epoch']}, threads {summary.get('threads')})")
        self.report.add("d", "mlp test accuracy (configs/satimage.yaml)", f"{mlp_acc:.4f}", None, ">= 0.90",
                        mlp_acc >= TARGET_ACCURACY)
        self.report.add("d", "sklearn MLPClassifier((64,64), max_iter=300) test accuracy", f"{sk_acc:.4f}")
        self.checkpoint = run_dir / "best.pt"
        self.satimage_rss = median([p.peak_rss for p in runs["mlp"]])
        self.report.add("d", "mlp train satimage peak RSS", f"{self.satimage_rss / 2**20:.0f} MiB")
        self._process_use(run_dir / "best.pt")
        self._process_big()

    def _process_use(self, checkpoint: Path) -> None:
        """`mlp eval` and `mlp predict` of the satimage checkpoint, whole process, against the --before checkout."""
        commands = {
            "mlp eval best.pt": [str(MLP), "eval", str(checkpoint), "--json"],
            "mlp predict best.pt satimage_test.csv": [str(MLP), "predict", str(checkpoint), str(SATIMAGE_TEST), "-o",
                                                      str(OUT / "satimage_predictions.csv")],
        }
        for name, cmd in commands.items():
            before_cmd = self._before_cmd(cmd)
            runs: dict[str, list[Proc]] = {"mlp": [], "before": []}
            for _ in range(self.scale.process_reps):
                runs["mlp"].append(run_process(cmd))
                if before_cmd:
                    runs["before"].append(run_process(*before_cmd))
            times = {k: [p.seconds for p in v] for k, v in runs.items() if v}
            if "before" in times:
                self.ratio_row("d", f"{name}, whole process: after / before (--before checkout)", times, "mlp", "before",
                               fmt=secs)
            else:
                self.report.add("d", f"{name}, whole process", secs(median(times["mlp"])))

    def _before_cmd(self, mlp_cmd: list[str]):
        """The same `mlp train` command run from the --before checkout (python -m mlp_cli on its PYTHONPATH)."""
        if self.before is None:
            return None
        env = {**os.environ, "PYTHONPATH": str(self.before)}
        # -P: not the current directory (this checkout) first on sys.path, so the older code is what runs.
        return [sys.executable, "-P", "-m", "mlp_cli", *mlp_cmd[1:]], env

    def _big_process_config(self) -> Path:
        rows = self.scale.big_rows
        csv = OUT / f"synthetic_{rows}x54.csv"
        if not csv.exists():
            write_csv(csv, *synthetic_table(rows))
        config = OUT / "big_process.yaml"
        config.write_text(
            f"task: multiclass\ndata: {{train: {csv}, test: {csv}, target: label, val_fraction: 0.0}}\n"
            "model: {hidden: [256, 256]}\n"
            "train: {epochs: 2, batch_size: 256, optimizer: adam, lr: 0.001, early_stopping: 0, device: cpu, seed: 0}\n"
            f"output_dir: {OUT / 'runs/big_process'}\n")
        csv.read_bytes()  # into the page cache, so the first timed process does not pay the disk
        return config

    def _process_big(self) -> None:
        """The issue's second shape: a 200k x 54 CSV named as both train and test, 54-256-256-7, 2 epochs."""
        config = self._big_process_config()
        csv = OUT / f"synthetic_{self.scale.big_rows}x54.csv"
        script = OUT / "sklearn_big.py"
        script.write_text(SKLEARN_BIG_SCRIPT)
        mlp_cmd = [str(MLP), "train", str(config), "--overwrite", "--quiet", "--json"]
        sk_cmd = [sys.executable, str(script), str(csv)]
        runs: dict[str, list[Proc]] = {"mlp": [], "sklearn": []}
        before_cmd = self._before_cmd(mlp_cmd)
        for _ in range(self.scale.process_reps):
            runs["mlp"].append(run_process(mlp_cmd))
            runs["sklearn"].append(run_process(sk_cmd))
            if before_cmd:
                runs.setdefault("before", []).append(run_process(*before_cmd))
        times = {k: [p.seconds for p in v] for k, v in runs.items()}
        name = f"{self.scale.big_rows // 1000}k x54 CSV 54-256-256-7 2 epochs whole process: mlp train / sklearn script"
        self.ratio_row("d", name, times, "mlp", "sklearn", TARGET_PROCESS, "<= 0.667 (1.5x)", fmt=secs)
        if "before" in times:
            self.ratio_row("d", "  mlp after / before (--before checkout)", times, "mlp", "before", fmt=secs)
            self.ratio_row("d", "  before: mlp train / sklearn script", times, "before", "sklearn", fmt=secs)
        summary = json.loads(runs["mlp"][-1].stdout)
        sk = json.loads(runs["sklearn"][-1].stdout.strip().splitlines()[-1])
        self.report.add("d", "  mlp: in-run wall / epochs / threads / test accuracy",
                        f"{secs(summary['wall_seconds'])} / {median(r['seconds'] for r in summary_history(OUT / 'runs/big_process')):.3f} s"
                        f" per epoch / {summary.get('threads')} / {summary['test']['accuracy']:.4f}")
        self.report.add("d", "  sklearn: read / fit / test accuracy",
                        f"{sk['read_s']:.3f} s / {sk['fit_s']:.3f} s / {sk['accuracy']:.4f}")

    # -- e

    def section_e(self) -> None:
        commands = {
            "mlp --help": [str(MLP), "--help"],
            "mlp params 6,3,5,4,3": [str(MLP), "params", "6,3,5,4,3"],
            # Context for (d): the floor of any torch process, and what constructing a torch.optim optimizer adds
            # (Optimizer.__init__ and .step import torch._dynamo, with sympy and torch.fx, on first use).
            "python -c 'import torch' (context)": [sys.executable, "-c", "import torch"],
            "python -c 'import torch; torch.optim.Adam(...)' (context)": [
                sys.executable, "-c", "import torch; torch.optim.Adam([torch.zeros(1, requires_grad=True)])"],
        }
        runs: dict[str, list[float]] = {name: [] for name in commands}
        for cmd in commands.values():  # warm the page cache once
            run_process(cmd)
        for rep in range(self.scale.cli_reps):
            for name, cmd in commands.items():
                if name.startswith("python") and rep >= 3:  # context rows: 3 runs are enough for a 1-2 s process
                    continue
                runs[name].append(run_process(cmd).seconds)
        for name, seconds in runs.items():
            value = median(seconds)
            context = name.startswith("python")
            self.report.add("e", name, secs(value), None, "" if context else "<= 0.3 s",
                            None if context else value <= TARGET_CLI_S)

    # -- f

    def section_f(self) -> None:
        rows = self.scale.predict_rows
        csv = OUT / f"satimage_like_{rows}.csv"
        if not csv.exists():
            write_satimage_like_csv(csv, rows)
        checkpoint = self.checkpoint or self._quick_checkpoint()
        pred_out = OUT / "predictions.csv"
        proc = run_process([str(MLP), "predict", str(checkpoint), str(csv), "-o", str(pred_out)])
        self.report.add("f", f"mlp predict {rows:,} rows (process, incl. start-up)",
                        f"{rows / proc.seconds:,.0f} rows/s ({secs(proc.seconds)}, peak RSS {proc.peak_rss / 2**20:.0f} MiB)")
        run_dir = OUT / "runs/satimage_1m"
        proc = run_process([str(MLP), "train", str(SATIMAGE_CONFIG), "--overwrite", "--quiet", "--json",
                            f"output_dir={run_dir}", f"data.train={csv}", "train.epochs=1", "train.early_stopping=0"])
        raw = rows * 36 * 4
        self.report.add("f", f"mlp train {rows:,} rows x36, 1 epoch: peak RSS / float32 matrix",
                        f"{proc.peak_rss / 2**20:.0f} MiB / {raw / 2**20:.0f} MiB ({secs(proc.seconds)})",
                        proc.peak_rss / raw)
        if self.satimage_rss:
            self.report.add("f", "  RSS above a satimage run / float32 matrix",
                            f"{(proc.peak_rss - self.satimage_rss) / 2**20:.0f} MiB", (proc.peak_rss - self.satimage_rss) / raw)
        self._predict_formatting(checkpoint)

    def _predict_formatting(self, checkpoint: Path) -> None:
        """Where predict's time goes: mlp's per-cell Python CSV formatting vs a columnar pyarrow writer, in-process."""
        from mlp_cli.evaluate import predictions_csv

        rows = min(self.scale.predict_rows, 200_000)
        csv = OUT / f"satimage_like_{rows}.csv"
        if not csv.exists():
            write_satimage_like_csv(csv, rows, seed=1)
        times = interleaved({"mlp": lambda: predictions_csv(checkpoint, csv),
                             "columnar": lambda: columnar_predictions_csv(checkpoint, csv)}, reps=2, warmup=0)
        self.ratio_row("f", f"predict {rows:,} rows in-process: columnar pyarrow CSV / mlp predictions_csv", times,
                       "columnar", "mlp", fmt=secs)

    def _quick_checkpoint(self) -> Path:
        """A satimage best.pt when (d) did not run: same config, few epochs (prediction speed does not care)."""
        run_dir = OUT / "runs/satimage_ckpt"
        run_process([str(MLP), "train", str(SATIMAGE_CONFIG), "--overwrite", "--quiet", f"output_dir={run_dir}",
                     "train.epochs=3"])
        return run_dir / "best.pt"

    # -- process

    def section_process(self) -> None:
        """#13's whole-process levers on the 200k CSV run, each switched off alone in an otherwise identical
        `mlp train` process (a -c prologue replaces one piece), interleaved."""
        config = self._big_process_config()
        run = "import sys; sys.argv = ['mlp', *sys.argv[1:]]; "
        variants = {
            "all on": run + "from mlp_cli.cli import main; main()",
            "no quick exit": run + "from mlp_cli.cli import app; app()",  # Click's own sys.exit: full finalization
            "no GC pause": run + ("import contextlib, mlp_cli.cli as c; c.loading_torch = contextlib.nullcontext; "
                                  "c.main()"),
            "no read-ahead": run + ("import mlp_cli.cli as c, mlp_cli.data.load as l; "
                                    "l.ReadAhead.start = staticmethod(lambda config: None); c.main()"),
            # The GC pause also makes finalization cheap (frozen objects are not collected at exit), so each of these
            # two hides part of the other's effect when switched off alone.
            "neither quick exit nor GC pause": run + ("import contextlib, mlp_cli.cli as c; "
                                                      "c.loading_torch = contextlib.nullcontext; c.app()"),
        }
        args = ["train", str(config), "--overwrite", "--quiet"]
        runs: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(self.scale.process_reps + 2):
            for name, code in variants.items():
                proc = run_process([sys.executable, "-c", code, *args])
                assert proc.returncode == 0, (name, proc.stdout)
                runs[name].append(proc.seconds)
        for name in list(variants)[1:]:
            self.ratio_row("proc", f"200k CSV whole process: all levers / {name}", runs, "all on", name, fmt=secs)

    # -- flops

    def section_flops(self) -> None:
        """Achieved GFLOP/s of mlp's 200k epoch against a large fp32 matmul's, at 1 and 2 threads (interleaved)."""
        w = self.big
        params = sum(p.numel() for p in w.trainer.model.parameters())
        work = 6 * params * len(w.x)  # forward 2, backward 4 FLOP per parameter per row
        size = 2048
        a, b = torch.randn(size, size), torch.randn(size, size)
        counts = [1, 2] if (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1) >= 2 else [1]

        def at(n: int, fn: Callable[[], object]) -> Callable[[], object]:
            def run():
                with threads(n):
                    return fn()
            return run

        variants = {}
        for n in counts:
            variants[f"matmul-{n}"] = at(n, lambda: [torch.mm(a, b) for _ in range(5)])
            variants[f"epoch-{n}"] = at(n, w.mlp_epoch)
        times = interleaved(variants, self.scale.big_reps, warmup=1)
        for n in counts:
            peak = 5 * 2 * size**3 / median(times[f"matmul-{n}"]) / 1e9
            got = work / median(times[f"epoch-{n}"]) / 1e9
            self.report.add("flops", f"{w.name} epoch, {n} thread(s): achieved / matmul {size}^3 peak",
                            f"{got:.1f} / {peak:.1f} GFLOP/s ({secs(median(times[f'epoch-{n}']))} per epoch)", got / peak)
        self.report.data["flops"] = {"params": params, "rows": len(w.x), "times": times}

    # -- levers

    def section_levers(self) -> None:
        self.lever_optimizer()
        self.lever_threads()
        self.lever_gather()
        self.lever_inference_mode()
        self.lever_compile()
        self.lever_lean_optimizer()
        self.section_startup()

    def section_startup(self) -> None:
        self.lever_optimizer(own_only=True)
        self.lever_baseline()
        self.lever_probe()
        self.lever_eval_rows()
        self.lever_labels()
        self.lever_csv_whole()
        self.lever_lean_optimizer(((14, "hand_backward", "gradients by backprop.HandStep (checked = autograd's)"),))

    def lever_baseline(self) -> None:
        """The no-hidden-layer baseline: mlp's (closed form / own L-BFGS on <= 20,000 rows) vs what it replaced
        (torch.optim.LBFGS, 200 strong-Wolfe iterations over up to 200,000 rows), with the training epoch for scale."""
        from mlp_cli.baselines import linear_baseline

        for w, fmt in ((self.sat, ms), (self.big, secs)):
            trainer = w.trainer
            target = trainer.data.test if trainer.data.test is not None else trainer.data.val
            results = {}

            def ours(trainer=trainer, target=target, results=results):
                results["ours"] = linear_baseline(trainer.config, trainer.data, target, trainer.device)

            def old(trainer=trainer, target=target, results=results):
                results["old"] = old_linear_baseline(trainer.config, trainer.data, target)

            times = self.compare(w, {"ours": ours, "old": old, "epoch": w.mlp_epoch}, 3, warmup=0)
            self.ratio_row("lev", f"8 no-hidden baseline {w.name}: own fit / torch LBFGS", times, "ours", "old", fmt=fmt)
            self.report.add("lev", "  own fit / one training epoch", f"{fmt(median(times['ours']))}",
                            median(times["ours"]) / median(times["epoch"]))
            self.report.add("lev", "  test loss, accuracy: own fit vs torch LBFGS",
                            f"{results['ours']['loss']:.4f}, {results['ours']['accuracy']:.4f} vs "
                            f"{results['old']['loss']:.4f}, {results['old']['accuracy']:.4f}")

    def lever_probe(self) -> None:
        """What the thread probe costs (it runs at setup and every PROBE_EVERY_S) against one training epoch."""
        for w, fmt in ((self.sat, ms), (self.big, secs)):
            times = self.compare(w, {"probe": w.trainer._probe_threads, "epoch": w.mlp_epoch}, 3, warmup=0)
            self.ratio_row("lev", f"10 thread probe {w.name}: probe / epoch (chose {w.trainer.threads})", times,
                           "probe", "epoch", fmt=fmt)

    def lever_lean_optimizer(self, levers=((6, "fast_step", "fused-Adam kernel called directly"),
                                           (7, "fast_forward", "forward without nn.Module hook dispatch"))) -> None:
        """mlp's own hot-path levers, switched off through the Trainer's `levers` option (read at each epoch start)."""
        for w, reps, fmt in ((self.sat, self.scale.small_reps, ms), (self.big, self.scale.big_reps, secs)):
            for number, lever, what in levers:
                times = self.compare(w, {"on": w.mlp_epoch, "off": without_lever(w.trainer, lever, w.mlp_epoch)}, reps,
                                     warmup=self._warmup(w))
                self.ratio_row("lev", f"{number} {w.name}: {what}: on / off (Levers({lever}=False))", times, "on", "off",
                               fmt=fmt)

    def _with_optimizer(self, w: Workload, make: Callable):
        """An epoch function that trains `w`'s trainer with another optimizer (the loop reads self.optimizer)."""
        opt = make(list(w.trainer.model.parameters()))

        def epoch() -> None:
            saved, w.trainer.optimizer = w.trainer.optimizer, opt
            try:
                w.mlp_epoch()
            finally:
                w.trainer.optimizer = saved

        return epoch

    def lever_optimizer(self, own_only: bool = False) -> None:
        from mlp_cli.components import optimizer as make_optimizer
        from mlp_cli.optim import FusedOptimizer

        variants = {
            "own": lambda p: FusedOptimizer("adam", p, lr=1e-3, weight_decay=0.0),
            "fused": lambda p: make_optimizer("adam", p, lr=1e-3, weight_decay=0.0, momentum=0.9, fused=True),
            "foreach": lambda p: torch.optim.Adam(p, lr=1e-3, foreach=True),
            # What Levers(fused=False) gives: torch's default, which on CPU is the per-tensor for-loop.
            "for-loop": lambda p: make_optimizer("adam", p, lr=1e-3, weight_decay=0.0, momentum=0.9, fused=False),
        }
        if own_only:
            del variants["foreach"], variants["for-loop"]
        for w, reps, fmt in ((self.sat, self.scale.small_reps, ms), (self.big, self.scale.big_reps, secs)):
            times = self.compare(w, {k: self._with_optimizer(w, v) for k, v in variants.items()}, reps,
                                 warmup=self._warmup(w))
            self.ratio_row("lev", f"1 Adam {w.name}: own FusedOptimizer / torch.optim fused (+ direct kernel)", times,
                           "own", "fused", fmt=fmt)
            if own_only:
                continue
            self.ratio_row("lev", f"1 Adam {w.name}: fused / foreach", times, "fused", "foreach", fmt=fmt)
            self.ratio_row("lev", f"1 Adam {w.name}: fused / for-loop (Levers(fused=False))", times, "fused", "for-loop",
                           fmt=fmt)

    def _warmup(self, w: Workload) -> int:
        """A warm-up round costs a full epoch per variant on the big table; its first-epoch costs are small there."""
        return 0 if w is self._big else 1

    def lever_threads(self) -> None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if cores < 2:
            self.report.add("lev", "2 threads", "skipped: one core")
            return
        cases = [(self.sat, self.scale.small_reps, ms),
                 (satimage_workload([128, 128], "128"), self.scale.small_reps, ms),
                 (satimage_workload([256, 256], "256"), self.scale.small_reps, ms),
                 (self.big, self.scale.big_reps, secs)]
        for w, reps, fmt in cases:
            def at(n: int, w=w) -> Callable[[], None]:
                def epoch() -> None:
                    with threads(n):
                        w.mlp_epoch()
                return epoch

            times = self.compare(w, {"1": at(1), str(cores): at(cores)}, reps, warmup=self._warmup(w))
            biggest = max(a * b for a, b in zip([w.x.shape[1], *w.hidden], [*w.hidden, w.n_out], strict=True))
            self.ratio_row("lev", f"2 threads {w.name} b{w.batch} (largest W {biggest:,}): 1 / {cores}", times, "1",
                           str(cores), fmt=fmt)
            # Paired rounds where N threads ran over 2x slower than 1: the signature of another process holding a
            # core while an OpenMP region waits for its second thread.
            collapsed = sum(b > 2 * a for a, b in zip(times["1"], times[str(cores)], strict=True))
            if collapsed:
                self.report.add("lev", f"  rounds where {cores} threads took > 2x the 1-thread epoch",
                                f"{collapsed} of {len(times['1'])}")

    def lever_gather(self) -> None:
        fused = lambda p: torch.optim.Adam(p, lr=1e-3, fused=True)  # noqa: E731  (isolate the batching)
        for w, reps, fmt in ((self.sat, self.scale.small_reps, ms), (self.big, self.scale.big_reps, secs)):
            once, per_batch = HandLoop(w, fused, gather_once=True), HandLoop(w, fused, gather_once=False)
            times = self.compare(w, {"once": once.epoch, "per-batch": per_batch.epoch}, reps, warmup=self._warmup(w))
            self.ratio_row("lev", f"3 gather {w.name}: one per epoch / per batch", times, "once", "per-batch", fmt=fmt)

    def lever_inference_mode(self) -> None:
        for w in (self.sat, self.big):
            # One EVAL_BATCH (65,536 rows) at most: the difference is per-call overhead, not per-row work.
            model, x, y = w.trainer.model, w.x[:65536], w.y[:65536]
            loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")

            def evaluate(context, model=model, x=x, y=y, loss_fn=loss_fn) -> Callable[[], None]:
                def run() -> None:
                    with context():
                        loss_fn(model(x), y).item()
                return run

            reps = 31 if len(x) < 50_000 else 11
            times = self.compare(w, {"inference_mode": evaluate(torch.inference_mode), "no_grad": evaluate(torch.no_grad)},
                                 reps, warmup=2)
            self.ratio_row("lev", f"4 eval forward {w.name} ({len(x):,} rows): inference_mode / no_grad", times,
                           "inference_mode", "no_grad")

    def lever_labels(self) -> None:
        """Counting and looking up 200k number labels: np.unique/searchsorted (rules) vs the per-value Python path."""
        from mlp_cli.data import Frame, label_values
        from mlp_cli.data.rules import count_labels, numeric_codes

        w = self.big
        target = w.y.numpy().astype(np.float64)
        frame = Frame("bench", "csv", np.zeros((len(target), 1), dtype=np.float32), ["x"], target=target)

        def ours():
            labels = sorted(count_labels(frame, "label", {}))
            return numeric_codes(target, labels)

        def per_value():
            counts: dict = {}
            values = label_values(target, "bench", "label")
            for value in values:
                counts[value] = counts.get(value, 0) + 1
            lookup = {label: i for i, label in enumerate(sorted(counts))}
            return np.array([lookup[v] for v in values])

        assert np.array_equal(ours(), per_value())
        times = self.compare(w, {"ours": ours, "per-value": per_value}, 5, warmup=1)
        self.ratio_row("lev", f"12 count and look up {len(target):,} number labels: np.unique / per value", times, "ours",
                       "per-value", fmt=ms)

    def lever_csv_whole(self) -> None:
        """The 200k CSV's table: pyarrow's read_csv (parallel, holds the file) vs its block-by-block streaming reader."""
        from mlp_cli.data.readers import CsvReader

        csv = OUT / f"synthetic_{self.scale.big_rows}x54.csv"
        if not csv.exists():
            write_csv(csv, *synthetic_table(self.scale.big_rows))
        reader = CsvReader(csv)
        names = reader.columns()

        def read(whole: bool) -> Callable[[], object]:
            def run():
                with mock.patch.object(CsvReader, "_fits_whole", lambda self: whole):
                    return reader.table(names, float_columns=names[:-1])
            return run

        times = self.compare(self.big, {"whole": read(True), "blocks": read(False)}, 5, warmup=1)
        self.ratio_row("lev", f"13 read {csv.stat().st_size / 2**20:.0f} MiB CSV: read_csv / streaming reader", times,
                       "whole", "blocks", fmt=secs)

    def lever_eval_rows(self) -> None:
        """Evaluation in cache-sized passes (evaluate.inference_rows) vs 65,536-row passes, the whole training split."""
        from mlp_cli import evaluate

        for w in (self.sat, self.big):
            trainer = w.trainer
            rows = evaluate.inference_rows(trainer.model)

            def at(size: int, trainer=trainer) -> Callable[[], object]:
                def run():
                    with mock.patch.object(evaluate, "inference_rows", lambda model: size):
                        return trainer.evaluate(trainer.data.train)
                return run

            times = self.compare(w, {"cache": at(rows), "65536": at(evaluate.EVAL_BATCH)}, 5, warmup=1)
            self.ratio_row("lev", f"11 evaluation {w.name} ({len(trainer.data.train):,} rows, {torch.get_num_threads()} thr): "
                           f"{rows}-row / 65,536-row passes", times, "cache", "65536", fmt=ms if w is self.sat else secs)

    def lever_compile(self) -> None:
        cases = [(self.sat, lambda: satimage_workload([64, 64], "64c", ["train.compile=true"]), self.scale.small_reps)]
        if self.scale.compile_big:
            cases.append((self.big, lambda: big_workload(self.scale.big_rows, {"compile": True}, "bigc"),
                          self.scale.big_reps))
        # A fresh on-disk cache: the compile time of a first run, not one warmed by earlier benchmark runs.
        cache = OUT / "inductor_cache"
        shutil.rmtree(cache, ignore_errors=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
        for eager, make_compiled, reps in cases:
            try:
                compiled = make_compiled()
                started = time.perf_counter()
                compiled.mlp_epoch()  # compiles (and recompiles for the short last batch)
                first = time.perf_counter() - started
                times = self.compare(eager, {"compiled": compiled.mlp_epoch, "eager": eager.mlp_epoch}, reps)
            except Exception as exc:  # no C++ compiler, unsupported platform, ...: report and go on
                self.report.add("lev", f"5 torch.compile {eager.name}", f"skipped: {type(exc).__name__}: {exc}"[:120])
                continue
            steady = median(times["compiled"])
            self.report.add("lev", f"5 torch.compile {eager.name}: first epoch (cold compile cache)",
                            f"{secs(first)} (~{secs(first - steady)} compiling)")
            self.ratio_row("lev", f"5 torch.compile {eager.name}: steady compiled / eager", times, "compiled", "eager",
                           fmt=ms if eager is self.sat else secs)

    # -- profile

    def section_profile(self) -> None:
        """How much of mlp's satimage epoch is matmul, other kernels, and framework (autograd, nn.Module, optimizer)."""
        w = self.sat
        floor = AutogradFreeStep(w)
        times = self.compare(w, {"mlp": w.mlp_epoch, "no-autograd": floor.epoch, "matmuls": floor.matmul_epoch},
                             self.scale.small_reps, warmup=2)
        mlp_t = median(times["mlp"])
        self.report.add("prof", f"{w.name} mlp epoch", ms(mlp_t))
        self.report.add("prof", "  same math, hand-derived backward, raw fused-Adam kernel (no autograd/Module/Optimizer)",
                        ms(median(times["no-autograd"])), median(times["no-autograd"]) / mlp_t)
        self.report.add("prof", "  its matmuls alone (3 addmm forward + 5 mm backward per step)",
                        ms(median(times["matmuls"])), median(times["matmuls"]) / mlp_t)
        self.report.data["profile:floors"] = times
        self._profiler_table(w)

    def _profiler_table(self, w: Workload) -> None:
        """Shares of profiled CPU time (the profiler inflates small ops, so read these as rough proportions)."""
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                w.mlp_epoch()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        by_key = {e.key: e for e in events}
        matmul = sum(by_key[k].self_cpu_time_total for k in ("aten::mm", "aten::addmm") if k in by_key)
        inclusive = lambda prefix: sum(e.cpu_time_total for e in events if e.key.startswith(prefix))  # noqa: E731
        shares = {"matmul kernels (aten::mm/addmm, self)": matmul,
                  "Optimizer.step (inclusive: Python wrapper + fused kernel)": inclusive("Optimizer.step#"),
                  "Optimizer.zero_grad (inclusive)": inclusive("Optimizer.zero_grad#")}
        for name, value in shares.items():
            self.report.add("prof", f"  profiler share: {name}", f"{100 * value / total:.1f} %")
        print(events.table(sort_by="self_cpu_time_total", row_limit=15))


def old_linear_baseline(config, data, split) -> dict:
    """The no-hidden baseline as mlp computed it before #13: torch.optim.LBFGS, 200 iterations, <= 200,000 rows."""
    from mlp_cli.baselines import _metrics
    from mlp_cli.components import loss_function
    from mlp_cli.tasks import TASKS

    generator = torch.Generator().manual_seed(config.train.seed)
    x, y = data.train.x, data.train.y
    if len(x) > 200_000:
        pick = torch.randperm(len(x), generator=generator)[:200_000]
        x, y = x[pick], y[pick]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        model = torch.nn.Linear(data.n_inputs, data.n_outputs)
    loss_fn = loss_function(config.loss_name)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=200, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        out = TASKS[config.task].squeeze(model(x))
        loss = loss_fn(out, y) / len(x) + 0.5 * config.train.weight_decay * model.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        out = TASKS[config.task].squeeze(model(split.x))
    return _metrics(config, data, split, out)


def without_lever(trainer, lever: str, fn: Callable[[], object]) -> Callable[[], object]:
    """`fn` run with the trainer's `lever` (a field of mlp_cli.train.Levers) switched off, and on again afterwards."""
    from dataclasses import replace

    def run():
        saved, trainer.levers = trainer.levers, replace(trainer.levers, **{lever: False})
        try:
            return fn()
        finally:
            trainer.levers = saved

    return run


class AutogradFreeStep:
    """The satimage step written out by hand (like scikit-learn's numpy backprop): a floor for what eager torch
    dispatch costs without autograd, nn.Module calls and the Optimizer's Python wrapper."""

    def __init__(self, w: Workload):
        self.x, self.y, self.batch = w.x, w.y, w.batch
        model = mlp_net(w.x.shape[1], w.hidden, w.n_out)
        self.params = [p.detach().clone() for p in model.parameters()]
        self.grads = [torch.zeros_like(p) for p in self.params]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.max_v: list[torch.Tensor] = []
        self.steps = [torch.zeros(()) for _ in self.params]
        self.gen = torch.Generator().manual_seed(0)

    def _batches(self):
        n, bs = len(self.x), self.batch
        perm = torch.randperm(n, generator=self.gen)
        xe, ye = self.x[perm], self.y[perm]
        return ((xe[i : i + bs], ye[i : i + bs]) for i in range(0, n, bs))

    @torch.no_grad()
    def epoch(self) -> None:
        w1, b1, w2, b2, w3, b3 = self.params
        g = self.grads
        for xb, yb in self._batches():
            h1 = torch.addmm(b1, xb, w1.t()).clamp_min_(0)
            h2 = torch.addmm(b2, h1, w2.t()).clamp_min_(0)
            d3 = torch.softmax(torch.addmm(b3, h2, w3.t()), 1)
            d3[torch.arange(len(yb)), yb] -= 1  # d(mean CE)/d(logits) = (softmax - onehot) / batch
            d3.mul_(1 / len(yb))
            torch.mm(d3.t(), h2, out=g[4]), torch.sum(d3, 0, out=g[5])
            d2 = torch.mm(d3, w3).mul_(h2 > 0)
            torch.mm(d2.t(), h1, out=g[2]), torch.sum(d2, 0, out=g[3])
            d1 = torch.mm(d2, w2).mul_(h1 > 0)
            torch.mm(d1.t(), xb, out=g[0]), torch.sum(d1, 0, out=g[1])
            torch._foreach_add_(self.steps, 1)
            torch._fused_adam_(self.params, g, self.m, self.v, self.max_v, self.steps, lr=1e-3, beta1=0.9,
                               beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)

    @torch.no_grad()
    def matmul_epoch(self) -> None:
        w1, b1, w2, b2, w3, b3 = self.params
        h1 = torch.empty(self.batch, w1.shape[0])
        h2 = torch.empty(self.batch, w2.shape[0])
        for xb, _ in self._batches():
            h1 = torch.addmm(b1, xb, w1.t())
            h2 = torch.addmm(b2, h1, w2.t())
            z = torch.addmm(b3, h2, w3.t())
            torch.mm(z.t(), h2), torch.mm(z, w3)
            torch.mm(h2.t(), h1), torch.mm(h2, w2)
            torch.mm(h1.t(), xb)


# ---------------------------------------------------------------------------------------------- helpers


SKLEARN_SCRIPT = '''\
"""The scikit-learn reference for satimage: StandardScaler + MLPClassifier((64, 64), max_iter=300)."""
import json, sys, warnings
import numpy as np
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

def load(path):
    table = np.loadtxt(path, delimiter=",", skiprows=1)
    return table[:, :-1], table[:, -1].astype(int)

warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter
x_train, y_train = load(sys.argv[1])
x_test, y_test = load(sys.argv[2])
scaler = StandardScaler().fit(x_train)
clf = MLPClassifier((64, 64), max_iter=300, random_state=0).fit(scaler.transform(x_train), y_train)
print(json.dumps({"accuracy": clf.score(scaler.transform(x_test), y_test), "epochs": clf.n_iter_}))
'''


SKLEARN_BIG_SCRIPT = '''\
"""The scikit-learn reference for the 200k x 54 CSV: pyarrow's CSV reader, StandardScaler, MLPClassifier((256, 256)),
2 epochs of Adam at batch 256, scored on the test file (the same file, as in mlp's config)."""
import json, sys, time, warnings
started = time.perf_counter()
import numpy as np
import pyarrow.csv as pacsv
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

table = pacsv.read_csv(sys.argv[1])
x = np.column_stack([table.column(i).to_numpy() for i in range(table.num_columns - 1)]).astype(np.float32)
y = table.column(table.num_columns - 1).to_numpy()
read = time.perf_counter() - started
warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter
scaler = StandardScaler().fit(x)
fit_started = time.perf_counter()
clf = MLPClassifier((256, 256), batch_size=256, max_iter=2, learning_rate_init=1e-3, random_state=0)
clf.fit(scaler.transform(x), y)
fit = time.perf_counter() - fit_started
print(json.dumps({"accuracy": clf.score(scaler.transform(x), y), "read_s": read, "fit_s": fit}))
'''


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    columns = {f"f{j}": x[:, j] for j in range(x.shape[1])}
    columns["label"] = y.astype(np.int64)
    tmp = path.with_suffix(".tmp")
    pacsv.write_csv(pa.table(columns), tmp)
    tmp.replace(path)


def write_satimage_like_csv(path: Path, rows: int, seed: int = 0) -> None:
    """`rows` satimage training rows drawn with replacement, integer noise of +-3 added; labels come along."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = np.loadtxt(SATIMAGE_TRAIN, delimiter=",", skiprows=1, dtype=np.int32)
    names = SATIMAGE_TRAIN.open().readline().strip().split(",")
    rng = np.random.default_rng(seed)
    pick = table[rng.integers(0, len(table), rows)]
    features = np.clip(pick[:, :-1] + rng.integers(-3, 4, pick[:, :-1].shape, dtype=np.int32), 0, 255)
    columns = {name: features[:, j] for j, name in enumerate(names[:-1])}
    columns[names[-1]] = pick[:, -1]
    tmp = path.with_suffix(".tmp")
    pacsv.write_csv(pa.table(columns), tmp)
    tmp.replace(path)


def columnar_predictions_csv(checkpoint: Path, data_path: Path) -> bytes:
    """mlp predict's work for a multiclass checkpoint, with the CSV written column-wise by pyarrow (C++) instead of
    one Python f-string per cell. Sketch of the proposed change: assumes no rows were dropped for missing values,
    and writes float32 probabilities in shortest round-trip form rather than %.6g."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv

    from mlp_cli.data import label_text, load_for_model
    from mlp_cli.evaluate import EVAL_BATCH, load_checkpoint_model, model_outputs

    _, config, model, prep = load_checkpoint_model(checkpoint)
    frame = load_for_model(prep, Path(data_path), target_required=False)
    x = torch.from_numpy(prep.inputs(frame))
    with torch.inference_mode():
        out = torch.cat([model_outputs(model, x[i : i + EVAL_BATCH], config.task) for i in range(0, len(x), EVAL_BATCH)])
    probs = torch.softmax(out.double(), dim=1).float().numpy()
    labels = [label_text(label) for label in prep.labels]
    columns = {"prediction": pa.DictionaryArray.from_arrays(probs.argmax(axis=1).astype(np.int32), labels)}
    columns.update({f"prob_{label}": probs[:, j] for j, label in enumerate(labels)})
    sink = io.BytesIO()
    pacsv.write_csv(pa.table(columns), sink)
    return sink.getvalue()


def summary_history(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    columns = lines[0].split(",")
    return [{c: float(v) if v else None for c, v in zip(columns, line.split(","), strict=True)} for line in lines[1:]]


def machine_lines() -> list[str]:
    import sklearn

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        cpu = next((entry.split(":", 1)[1].strip() for entry in open("/proc/cpuinfo") if entry.startswith("model name")), cpu)
    return [
        f"machine: {platform.platform()}, {cpu}, {os.cpu_count()} CPUs ({cores} usable), "
        f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}",
        f"python {platform.python_version()}, torch {torch.__version__}, scikit-learn {sklearn.__version__}, "
        f"numpy {np.__version__}",
        f"torch.get_num_threads() at start: {torch.get_num_threads()}",
        load_line("at start"),
    ]


def load_line(when: str) -> str:
    """Other processes on a 2-core box distort everything (2-thread OpenMP regions most), so say how busy it was."""
    if not hasattr(os, "getloadavg"):
        return f"load average {when}: n/a"
    one, five, _ = os.getloadavg()
    return f"load average {when}: {one:.2f} (1 min), {five:.2f} (5 min)"


SECTIONS = ("d", "process", "a", "b", "c", "e", "f", "flops", "startup", "levers", "profile")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller tables and fewer repeats (smoke test)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections from {','.join(SECTIONS)}")
    parser.add_argument("--levers", action="store_true", help="shorthand for --only levers")
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    parser.add_argument("--keep", action="store_true", help=f"keep scratch files in {OUT}")
    parser.add_argument("--before", type=Path, help="a checkout of an earlier mlp commit: section d also runs its "
                        "`python -m mlp_cli train`, interleaved, for before/after rows")
    args = parser.parse_args(argv)
    if args.list:
        print(__doc__.split("Sections:")[1].split("How to read")[0].rstrip())
        return 0
    chosen = ["levers"] if args.levers else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if not MLP.exists():
        parser.error(f"{MLP} not found: run from the project's venv (pip install -e .)")

    OUT.mkdir(parents=True, exist_ok=True)
    scale = QUICK if args.quick else Scale()
    report = Report()
    header = machine_lines()
    print("\n".join(header), flush=True)
    bench = Bench(scale, report)
    bench.before = args.before.resolve() if args.before else None
    started = time.perf_counter()
    for name in SECTIONS:  # fixed order: (f) reuses the checkpoint (d) trains; (d), whole process, comes first
        if name in chosen:
            print(f"\n== section {name}", flush=True)
            section_started = time.perf_counter()
            getattr(bench, f"section_{name}")()
            print(f"   ({time.perf_counter() - section_started:.1f} s)", flush=True)
    used = {w.name: w.threads for w in (bench._sat, bench._big) if w is not None}
    after = f"torch threads mlp chose (default_threads): {used or 'n/a'}"
    print("\n" + "\n".join(header + [load_line("at end"), after, f"scale: {'quick' if args.quick else 'full'}; total "
                                             f"{time.perf_counter() - started:.0f} s"]))
    print(report.render())
    (OUT / "results.json").write_text(json.dumps({"machine": header, "rows": [r.__dict__ for r in report.rows],
                                                  "raw": report.data}, indent=1, default=str))
    if not args.keep:
        for item in OUT.iterdir():
            if item.name != "results.json":
                shutil.rmtree(item) if item.is_dir() else item.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
