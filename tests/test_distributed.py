"""Data-parallel training with torchrun and gloo on the CPU: same results as one process, rank 0 writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import given, settings, strategies as st

from mlp_cli.config import load_config
from mlp_cli.distributed import World, epoch_plan, local_positions, shard_bounds
from mlp_cli.train import Trainer

from conftest import REPO, blobs, write_config, write_csv


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 500), batch=st.integers(1, 64), size=st.integers(1, 4))
def test_every_row_once_per_epoch_across_ranks(n, batch, size):
    seen = []
    plans = [epoch_plan(n, batch, World(size, rank)) for rank in range(size)]
    for rank in range(size):
        positions = local_positions(n, batch, World(size, rank))
        seen.extend(range(n) if positions is None else positions.tolist())
    assert sorted(seen) == list(range(n))  # each row exactly once, none padded or repeated
    for step in range(len(plans[0])):
        counts = {plan[step][0] for plan in plans}
        assert len(counts) == 1  # every rank agrees on the global batch size of each step
        assert sum(plan[step][2] - plan[step][1] for plan in plans) == counts.pop()


def test_shards_differ_by_at_most_one_row():
    sizes = [shard_bounds(10, World(3, r)) for r in range(3)]
    assert sizes == [(0, 4), (4, 7), (7, 10)]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    write_csv(folder / "t.csv", blobs(1200, classes=(1, 2, 3), seed=0))
    config = write_config(folder / "c.yaml", {
        "task": "multiclass", "data": {"train": "t.csv", "target": "label"}, "model": {"hidden": [16]},
        "train": {"epochs": 4, "batch_size": 50, "early_stopping": 0, "threads": 1}, "output_dir": str(folder / "one"),
    })
    return folder, config


def mlp(*args, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlp_cli", *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_two_gloo_processes_match_one_process(job):
    folder, config = job
    one = mlp("train", config, "--json", "--quiet")
    two = mlp("train", config, "--nproc", "2", "--json", "--quiet", f"output_dir={folder / 'two'}")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    assert b["world_size"] == 2
    # Same global batch and seed: each step's gradient is the same sum over the batch's 50 rows, split 25 + 25
    # then all-reduced, so it differs from one process's only by summation order: at most 2 * 49 * u relative
    # per component (u = 2**-24, worst case of any order), 6e-6. Adam's step lr * m / sqrt(v) does not depend
    # on the gradient's scale, so each weight moves by at most about 2 * lr * 6e-6 = 1.2e-8 more per step; after
    # 4 epochs of 18 steps that is 9e-7 per weight, and through ~130 weights with loss gradients of order 1 it
    # moves a validation loss of order 0.3 by at most ~4e-4 relative: rel=1e-3 holds on any x86 CPU, while a
    # real difference (a row dropped or repeated, the gradient not averaged over the global batch, another
    # shuffle) moves it by percents. Predictions flip only for a row whose two top logits are within ~1e-5,
    # which 240 well-separated rows do not have: the confusion matrices agree exactly.
    assert b["val"]["loss"] == pytest.approx(a["val"]["loss"], rel=1e-3)
    assert b["test"]["confusion_matrix"] == a["test"]["confusion_matrix"]

    # Sharded evaluation (all-reduced sums and counts) equals one process evaluating the same weights: counts
    # exactly, the loss within what float32 allows for the same sums in another order (another GEMM kernel for
    # 120 rows than for 240 on some CPUs, two partial sums instead of one), bounded from the weights below.
    single = json.loads(mlp("eval", folder / "two" / "best.pt", "--json").stdout)
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "kappa", "confusion_matrix", "per_class", "n"):
        assert single[key] == b["test"][key], key
    rel = float32_loss_bound(folder / "two" / "best.pt")
    assert 0 < rel < 1e-3  # far below what a row counted twice or a wrong divisor would change
    assert single["loss"] == pytest.approx(b["test"]["loss"], rel=rel)


U = 2.0**-24  # unit roundoff of float32


def float32_loss_bound(path) -> float:
    """Worst-case relative difference between two float32 evaluations of a checkpoint's summed test loss that
    differ only in the order of their sums (any GEMM kernel, any split of the rows into batches).

    A dot product of k terms computed in any order is within k * u * sum|w_i x_i| of the exact one (Higham,
    Accuracy and Stability of Numerical Algorithms, 3.1); errors already in x pass through |W|, ReLU does not
    enlarge them. A row's cross-entropy, logsumexp(z) - z_y, moves by at most 2 * max|dz|. The float32 sum of m
    positive row losses is within (m - 1) * u of the exact sum. Two such evaluations differ by twice the bound.
    """
    from mlp_cli.evaluate import load_checkpoint_model, test_split as rebuild_test_split

    _, config, model, prep = load_checkpoint_model(path)
    split = rebuild_test_split(config, prep)
    x, y = split.x.double(), split.y
    a, err = x, torch.zeros_like(x)
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            w, b = layer.weight.double(), layer.bias.double()
            magnitude = a.abs() @ w.abs().T + b.abs()
            err = err @ w.abs().T + (w.shape[1] + 1) * U * magnitude
            a = a @ w.T + b
        elif isinstance(layer, torch.nn.ReLU):
            a = a.clamp(min=0)
        else:
            raise TypeError(f"no float32 error bound for {type(layer).__name__}")
    losses = torch.nn.functional.cross_entropy(a, y, reduction="none")
    total = losses.sum().item()
    per_row = 2 * err.max(dim=1).values.sum().item()
    summation = (len(y) - 1) * U * total
    return 2 * (per_row + summation) / total


def test_only_rank_zero_writes(job, tmp_path, monkeypatch):
    _, config_path = job
    config = load_config(config_path, [f"output_dir={tmp_path / 'run'}"])
    other = World(size=2, rank=1)
    # Stand-ins for the collectives: this process plays rank 1 of a job whose rank 0 never runs.
    monkeypatch.setattr(World, "all_reduce", lambda self, tensor: tensor)
    monkeypatch.setattr(World, "barrier", lambda self: None)
    monkeypatch.setattr(World, "agree", lambda self, flag, device=None: flag)
    monkeypatch.setattr(Trainer, "_wrap", lambda self, model, device: model)
    summary = Trainer(config, world=other).run()
    assert summary["epochs_run"] == 4
    assert not (tmp_path / "run").exists()


def test_sigterm_under_torchrun_saves_once_and_resumes(job):
    folder, config = job
    longer = ["train.epochs=40", "train.batch_size=8"]
    reference = mlp("train", config, "--nproc", "2", "--quiet", f"output_dir={folder / 'ref'}", *longer, timeout=600)
    assert reference.returncode == 0, reference.stderr
    run = folder / "interrupted"
    process = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "mlp_cli", "train",
         str(config), "--quiet", f"output_dir={run}", *longer],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    deadline = time.time() + 120
    while not (run / "last.pt").exists():
        assert time.time() < deadline and process.poll() is None, process.communicate()[1]
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    state = torch.load(run / "last.pt", weights_only=True)["train_state"]
    assert state["epoch"] < 40
    resumed = mlp("train", config, "--nproc", "2", "--quiet", f"output_dir={run}", *longer, "--resume", timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(run / "best.pt", weights_only=True)["model_state"]
    b = torch.load(folder / "ref" / "best.pt", weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nproc_failure_is_one_clean_line(job):
    _, config = job
    result = mlp("train", config, "--nproc", "2", "--quiet", "train.optimizer=sgd", "train.lr=1e12", "--overwrite")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: the training loss became non-finite")
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr


@settings(max_examples=100, deadline=None)
@given(n=st.integers(2, 300), batch=st.integers(2, 40), size=st.integers(1, 3))
def test_batch_norm_plans_never_leave_a_one_row_share(n, batch, size):
    batch = max(batch, 2 * size)  # smaller batches are refused up front with batch_norm
    seen = []
    for rank in range(size):
        plan = epoch_plan(n, batch, World(size, rank), min_rows=2 * size)
        positions = local_positions(n, batch, World(size, rank), min_rows=2 * size)
        seen.extend(range(n) if positions is None else positions.tolist())
        if n >= 2 * size:
            assert all(hi - lo >= 2 for _, lo, hi in plan)
    assert sorted(seen) == list(range(n))


def test_a_rank_leaves_with_the_commands_code_and_its_output_flushed():
    # Under torchrun (WORLD_SIZE > 1) `python -m mlp_cli` ends with os._exit, skipping finalization (see
    # mlp_cli/__main__.py): what the command printed must still arrive and its exit code must be kept.
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0"}
    ok = subprocess.run([sys.executable, "-m", "mlp_cli", "params", "6,3,5,4,3"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "80" in ok.stdout.splitlines()[-1]
    bad = subprocess.run([sys.executable, "-m", "mlp_cli", "params", "6,x"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error:")
