"""Random configs and overrides thrown at the real CLI: every call trains or exits with one clear message."""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import BaseModel
from typer.testing import CliRunner

from mlp_cli.cli import app
from mlp_cli.config import Config

from conftest import blobs, linear_target, write_csv


def schema_keys(model=Config, prefix="") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(prefix + name)
        for arg in getattr(field.annotation, "__args__", (field.annotation,)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                keys |= schema_keys(arg, prefix + name + ".")
    return keys


KEYS = sorted(schema_keys() | {"bogus", "train.bogus", "model.hidden.0", "data.train.x"})
VALUES = [
    "0", "1", "2", "3", "-1", "0.5", "1e-3", "-0.1", "1e9", ".nan", ".inf", "true", "false", "yes", "no", "null", "''",
    "abc", "relu", "tanh", "identity", "sgd", "adamw", "cosine", "plateau", "step", "regression", "binary", "multiclass",
    "mse", "bce", "cross_entropy", "huber", "[1]", "[3, 2]", "[0]", "[]", "[a]", "{a: 1}", "cpu", "cuda:7", "auto",
    "label", "y", "f0", "[f0, f1]", "train.csv", "reg.csv", "missing.csv", "sine", "moons", "xor", "!!python/object:os.system",
    "[1, 2", "'unterminated", "\t", "{{", "bf16",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz")
    write_csv(path / "train.csv", blobs(60, classes=(1, 2, 3)))
    write_csv(path / "reg.csv", linear_target(60))
    (path / "c.yaml").write_text(
        "task: multiclass\ndata:\n  train: train.csv\n  target: label\nmodel:\n  hidden: [4]\n"
        "train:\n  epochs: 1\n  batch_size: 16\n"
    )
    return path


def assert_clean(result, folder) -> None:
    if result.exit_code == 0:
        return
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}\n{result.output}"
    assert "Traceback" not in result.output
    assert result.exit_code in (1, 2), result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: ") and sum(line.startswith("error: ") for line in lines) == 1, result.stderr
    if result.exit_code == 1:
        assert "non-finite" in result.stderr


EXAMPLES = int(os.environ.get("MLP_FUZZ_EXAMPLES", "120"))  # raise it for a deeper search


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(VALUES)), min_size=1, max_size=4))
def test_random_overrides_train_or_fail_cleanly(folder, overrides, monkeypatch):
    monkeypatch.chdir(folder)  # a relative output_dir drawn by the dice lands here, not in the repository
    run = folder / "run"
    shutil.rmtree(run, ignore_errors=True)
    args = ["train", str(folder / "c.yaml"), f"output_dir={run}", "--quiet"] + [f"{k}={v}" for k, v in overrides]
    # Keep each run small whatever the dice say.
    args += ["train.epochs=1"] if not any(k == "train.epochs" for k, _ in overrides) else []
    assert_clean(CliRunner().invoke(app, args), folder)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.sampled_from(list("task:multiclas data\n -[]{}:'\"!&*#\t0123.,yesno") + ["train: ", "  ", "task: ", "data:\n"]), max_size=40).map("".join))
def test_random_config_text_fails_cleanly(folder, text):
    path = folder / "random.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["config", str(path)])
    assert result.exit_code == 2 or result.exit_code == 0
    if result.exit_code:
        assert isinstance(result.exception, SystemExit) and result.stderr.startswith("error: "), result.output
