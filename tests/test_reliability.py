"""Nothing lost, nothing executed: safe loading, atomic saves, resume bit for bit, signals, divergence, disk errors."""

from __future__ import annotations

import errno
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mlp_cli import checkpoint, files
from mlp_cli.config import load_config
from mlp_cli.errors import RunError, TrainingDiverged, TrainingInterrupted
from mlp_cli.train import Callback, StopFlag, Trainer

from conftest import REPO, write_config, write_csv

# ---------------------------------------------------------------------------------------------- safe loading


class Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_payload_is_refused_and_never_runs(invoke, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "mlp-checkpoint", "format_version": 1, "x": Payload(str(marker))}, evil)
    result = invoke("eval", evil)
    assert result.exit_code == 2
    assert "not a usable mlp checkpoint" in result.stderr and "pickled Python objects" in result.stderr
    assert not marker.exists()
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(Payload(str(marker))))
    result = invoke("predict", raw, tmp_path / "x.csv")
    assert result.exit_code == 2 and "not a usable mlp checkpoint" in result.stderr
    assert not marker.exists()


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from mlp_cli.cli import app

    from conftest import blobs

    folder = tmp_path_factory.mktemp("good")
    write_csv(folder / "t.csv", blobs(120, classes=("a", "b")))
    config = write_config(folder / "c.yaml", {"task": "binary", "data": {"train": "t.csv", "target": "label"},
                                              "model": {"hidden": [4]}, "train": {"epochs": 2}, "output_dir": str(folder / "run")})
    result = CliRunner().invoke(app, ["train", str(config), "--quiet"])
    assert result.exit_code == 0, result.output
    return folder / "run" / "best.pt"


def unusable(tmp_path, good_checkpoint):
    data = good_checkpoint.read_bytes()
    newer = torch.load(good_checkpoint, weights_only=True)
    newer["format_version"] = 99
    cases = {
        "empty": (b"", "empty"),
        "truncated": (data[: len(data) // 2], "truncated or damaged"),
        "text": (b"task: multiclass\n", "not a torch file"),
        "foreign": (None, "not one written by mlp"),
        "newer": (None, "format version 99 is newer"),
    }
    paths = {}
    for name, (content, why) in cases.items():
        path = tmp_path / f"{name}.pt"
        if name == "foreign":
            torch.save({"weight": torch.zeros(3)}, path)
        elif name == "newer":
            torch.save(newer, path)
        else:
            path.write_bytes(content)
        paths[name] = (path, why)
    return paths


@pytest.mark.parametrize("name", ["empty", "truncated", "text", "foreign", "newer"])
def test_unusable_files_exit_2_with_reason(invoke, tmp_path, good_checkpoint, name):
    path, why = unusable(tmp_path, good_checkpoint)[name]
    result = invoke("eval", path)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: not a usable mlp checkpoint:") and why in result.stderr
    assert "Traceback" not in result.output


def test_save_refuses_non_plain_data(tmp_path):
    with pytest.raises(TypeError, match="plain data"):
        checkpoint.save(tmp_path / "x.pt", {"value": np.float64(1.0)})
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------- atomic writes


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    files.write_text(target, "old")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(RunError, match="No space left on device; the previous summary.json"):
        files.write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_full_disk_during_training_is_a_clear_error(invoke, multiclass_config, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    result = invoke("train", multiclass_config)
    assert result.exit_code == 2 and "No space left on device" in result.stderr and "Traceback" not in result.output
    run = tmp_path / "run"
    assert not [p for p in run.iterdir() if p.name.startswith(files.TEMP_PREFIX)]
    for name in ("best.pt", "last.pt"):
        if (run / name).exists():
            checkpoint.load(run / name)


def test_unwritable_output_dir(invoke, multiclass_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = invoke("train", multiclass_config, f"output_dir={blocker / 'run'}")
    assert result.exit_code == 2 and "cannot create output_dir" in result.stderr


def test_stale_temp_files_are_removed_by_next_run(invoke, multiclass_config, tmp_path):
    assert invoke("train", multiclass_config, "--quiet").exit_code == 0
    stale = tmp_path / "run" / f"{files.TEMP_PREFIX}last.pt.abc"
    stale.write_bytes(b"half a checkpoint")
    result = invoke("train", multiclass_config, "--resume", "train.epochs=7")
    assert result.exit_code == 0, result.output
    assert not stale.exists() and "removed 1 temporary file" in result.stderr


# ---------------------------------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    """A run long enough to interrupt (about 300 steps per epoch), and its uninterrupted reference weights."""
    folder = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30_000, 8))
    y = (x[:, 0] * x[:, 1] + np.sin(x[:, 2]) > 0).astype(int) + (x[:, 3] > 1).astype(int)
    columns = {f"x{j}": x[:, j] for j in range(8)}
    columns["label"] = y
    write_csv(folder / "t.csv", columns)
    config = write_config(
        folder / "long.yaml",
        {
            "task": "multiclass",
            "data": {"train": "t.csv", "target": "label"},
            "model": {"hidden": [32, 32], "dropout": 0.1},
            "train": {"epochs": 4, "batch_size": 16, "lr": 0.003, "scheduler": "cosine", "checkpoint_interval": 0.05,
                      "early_stopping": 0, "threads": 1},
            "output_dir": str(folder / "reference"),
        },
    )
    Trainer(load_config(config)).run()
    return config, folder


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model_state"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


class StopAfterSteps(StopFlag):
    """A Ctrl-C that arrives after exactly `steps` training steps (the loop checks the flag once per step)."""

    def __init__(self, steps: int):
        super().__init__()
        self.left = steps

    def __bool__(self) -> bool:
        self.left -= 1
        if self.left < 0 and self.signum is None:
            self.set(signal.SIGINT)
        return super().__bool__()


def steps_per_epoch(config) -> int:
    from mlp_cli.data import load_dataset

    return -(-len(load_dataset(config).train) // config.train.batch_size)


def test_interrupted_mid_epoch_then_resumed_is_bit_identical(long_run, tmp_path):
    config_path, folder = long_run
    config = load_config(config_path, [f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(config, stop=StopAfterSteps(steps_per_epoch(config) + 17)).run()
    assert info.value.exit_code == 130
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["train_state"]
    assert state["epoch"] == 1 and state["step"] == 17  # saved in the middle of epoch 2
    Trainer(config, resume=True).run()
    assert_same_weights(tmp_path / "run" / "best.pt", folder / "reference" / "best.pt")
    assert_same_weights(tmp_path / "run" / "last.pt", folder / "reference" / "last.pt")


def test_resume_refuses_a_changed_config(long_run, tmp_path, invoke):
    config_path, _ = long_run
    out = f"output_dir={tmp_path / 'run'}"
    assert invoke("train", config_path, out, "train.epochs=1", "--quiet").exit_code == 0
    result = invoke("train", config_path, out, "train.lr=0.1", "model.hidden=[8]", "--resume")
    assert result.exit_code == 2
    assert "model.hidden, train.lr" in result.stderr and "only train.epochs may change" in result.stderr
    result = invoke("train", config_path, out, "train.epochs=2", "--resume", "--quiet")
    assert result.exit_code == 0, result.output
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["train_state"]["epoch"] == 2


def test_resume_without_a_run_is_a_clear_error(invoke, multiclass_config):
    result = invoke("train", multiclass_config, "--resume")
    assert result.exit_code == 2 and "nothing to resume" in result.stderr


def _spawn(config: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mlp_cli", "train", str(config), "--quiet", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )


def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_last_prints_resume_command_and_exits(long_run, tmp_path, signum, code):
    config_path, folder = long_run
    out = f"output_dir={tmp_path / 'run'}"
    process = _spawn(config_path, out)
    _wait_for(tmp_path / "run" / "last.pt")
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert "saved" in stderr and f"resume with: mlp train {config_path} {out} --resume" in stderr
    assert "Traceback" not in stderr
    resumed = _spawn(config_path, out, "--resume")
    _, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    assert_same_weights(tmp_path / "run" / "best.pt", folder / "reference" / "best.pt")


def test_kill_9_cycles_leave_loadable_checkpoints_and_resume_bit_identical(long_run, tmp_path):
    config_path, folder = long_run
    out = f"output_dir={tmp_path / 'run'}"
    rng = random.Random(0)
    cycles = 0
    args: tuple[str, ...] = ()
    while True:
        process = _spawn(config_path, out, *args)
        if args:
            time.sleep(rng.uniform(0.2, 1.5))
        else:
            _wait_for(tmp_path / "run" / "last.pt")
            time.sleep(rng.uniform(0.0, 0.5))
        if process.poll() is not None:
            assert process.returncode == 0, process.stderr.read()
            break
        process.kill()
        process.wait()
        cycles += 1
        for name in ("best.pt", "last.pt"):
            if (tmp_path / "run" / name).exists():
                checkpoint.load(tmp_path / "run" / name)  # raises if torn
        args = ("--resume",)
        if cycles >= 4:
            final = _spawn(config_path, out, "--resume")
            _, stderr = final.communicate(timeout=120)
            assert final.returncode == 0, stderr
            break
    assert cycles >= 1
    assert_same_weights(tmp_path / "run" / "best.pt", folder / "reference" / "best.pt")
    assert_same_weights(tmp_path / "run" / "last.pt", folder / "reference" / "last.pt")


# ---------------------------------------------------------------------------------------------- divergence


class Poison(Callback):
    def __init__(self, trainer_box: list, epoch: int):
        self.box, self.epoch = trainer_box, epoch

    def on_epoch(self, report):
        if report.epoch == self.epoch:
            with torch.no_grad():
                self.box[0].model[0].weight.fill_(float("inf"))


def test_non_finite_loss_stops_with_epoch_step_and_keeps_checkpoints(multiclass_config, tmp_path):
    config = load_config(multiclass_config)
    box: list = []
    trainer = Trainer(config, callback=Poison(box, epoch=2))
    box.append(trainer)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as info:
        trainer.run()
    assert info.value.exit_code == 1
    message = str(info.value)
    assert "epoch 3, step 1" in message and "lower train.lr" in message and "from epoch 2 are kept" in message
    for name in ("best.pt", "last.pt"):
        state = weights(run / name)
        assert all(torch.isfinite(v).all() for v in state.values())
    assert torch.load(run / "last.pt", weights_only=True)["train_state"]["epoch"] == 2


def test_divergence_exit_code_1_through_cli(invoke, regression_config):
    result = invoke("train", regression_config, "train.optimizer=sgd", "train.lr=1e12", "data.standardize_target=false")
    assert result.exit_code == 1, result.output
    assert "non-finite" in result.stderr and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------- memory


def test_model_too_big_for_memory_is_refused_up_front(invoke, multiclass_config, tmp_path):
    result = invoke("train", multiclass_config, "model.hidden=[1000000,1000000]")
    assert result.exit_code == 2
    assert "needs at least" in result.stderr and "TiB" in result.stderr
    assert not (tmp_path / "run").exists()


def test_ctrl_c_during_setup_changes_nothing(invoke, multiclass_config, tmp_path):
    assert invoke("train", multiclass_config, "--quiet").exit_code == 0
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    flag = StopFlag()
    flag.set(signal.SIGINT)
    config = load_config(multiclass_config)
    with pytest.raises(TrainingInterrupted, match="nothing was changed"):
        Trainer(config, overwrite=True, stop=flag).run()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before


def test_training_interrupted_keeps_its_signal_number(multiclass_config, tmp_path):
    flag = StopFlag()
    flag.set(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(load_config(multiclass_config), stop=flag).run()
    assert info.value.signum == signal.SIGTERM and info.value.exit_code == 128 + signal.SIGTERM
    assert not (tmp_path / "run").exists()


def test_batch_norm_with_a_one_row_last_batch_trains(invoke, regression_config):
    from mlp_cli.data import load_dataset

    n = len(load_dataset(load_config(regression_config)).train)
    batch = next(b for b in range(5, n) if n % b == 1)
    result = invoke("train", regression_config, "model.batch_norm=true", f"train.batch_size={batch}", "--quiet")
    assert result.exit_code == 0, result.output


def test_bad_device_option_is_a_clear_error(invoke, binary_config, tmp_path):
    assert invoke("train", binary_config, "--quiet").exit_code == 0
    result = invoke("eval", tmp_path / "run" / "best.pt", "--device", "gpu")
    assert result.exit_code == 2 and "device 'gpu' is not one of" in result.stderr
