"""Shared fixtures: small tables written to disk, configs pointing at them, and a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from mlp_cli.cli import app
from mlp_cli.errors import DataError, MLPError

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("COLUMNS", "200")  # rich wraps tables to the terminal width; keep test output on one line


def assert_data_error(info, *parts: str) -> str:
    assert isinstance(info.value, DataError) and isinstance(info.value, MLPError)
    message = str(info.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


def write_csv(path: Path, columns: dict) -> Path:
    names = list(columns)
    n = len(next(iter(columns.values())))
    lines = [",".join(names)]
    for i in range(n):
        lines.append(",".join(_cell(columns[name][i]) for name in names))
    path.write_text("\n".join(lines) + "\n")
    return path


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def blobs(n: int = 240, classes=(1, 2, 3), seed: int = 0, features: int = 4, spread: float = 2.5) -> dict:
    """Well-separated Gaussian blobs, one per class, as columns f0..f{k-1} plus `label`."""
    rng = np.random.default_rng(seed)
    labels = [classes[i % len(classes)] for i in range(n)]
    centres = rng.normal(0, 3, size=(len(classes), features))
    index = {c: i for i, c in enumerate(classes)}
    x = np.stack([centres[index[c]] + rng.normal(0, spread, features) for c in labels])
    columns = {f"f{j}": x[:, j] * 10 + 50 for j in range(features)}
    columns["label"] = labels
    return columns


def linear_target(n: int = 300, seed: int = 0, features: int = 3, noise: float = 0.1) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features))
    y = x @ np.arange(1, features + 1) + 0.5 * x[:, 0] ** 2 + noise * rng.normal(size=n)
    columns = {f"x{j}": x[:, j] for j in range(features)}
    columns["y"] = y * 1000 + 20000
    return columns


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def invoke(runner):
    def run(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return run


@pytest.fixture
def multiclass_config(tmp_path) -> Path:
    write_csv(tmp_path / "train.csv", blobs(240, classes=(1, 2, 7), seed=0))
    write_csv(tmp_path / "test.csv", blobs(90, classes=(1, 2, 7), seed=0))
    return write_config(
        tmp_path / "multi.yaml",
        {
            "task": "multiclass",
            "data": {"train": "train.csv", "test": "test.csv", "target": "label", "val_fraction": 0.2},
            "model": {"hidden": [16]},
            "train": {"epochs": 6, "batch_size": 32, "lr": 0.01, "early_stopping": 0},
            "output_dir": str(tmp_path / "run"),
        },
    )


@pytest.fixture
def binary_config(tmp_path) -> Path:
    write_csv(tmp_path / "bin.csv", blobs(200, classes=(False, True), seed=1))
    return write_config(
        tmp_path / "binary.yaml",
        {
            "task": "binary",
            "data": {"train": "bin.csv", "target": "label", "test_fraction": 0.25},
            "model": {"hidden": [8]},
            "train": {"epochs": 5, "batch_size": 32, "lr": 0.01},
            "output_dir": str(tmp_path / "run"),
        },
    )


@pytest.fixture
def regression_config(tmp_path) -> Path:
    write_csv(tmp_path / "reg.csv", linear_target(300))
    return write_config(
        tmp_path / "regression.yaml",
        {
            "task": "regression",
            "data": {"train": "reg.csv", "target": "y", "standardize_target": True},
            "model": {"hidden": [16, 16]},
            "train": {"epochs": 8, "batch_size": 32, "lr": 0.01},
            "output_dir": str(tmp_path / "run"),
        },
    )
