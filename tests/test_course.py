"""The course made visible: synthetic data, diagnostics, sweeps, plots and baselines."""

from __future__ import annotations

import builtins
import csv
import json
import math

import numpy as np
import pytest
import torch

from mlp_cli.baselines import constant_baseline, linear_baseline
from mlp_cli.components import loss_function
from mlp_cli.config import ModelConfig, config_from_dict
from mlp_cli.data import load_dataset
from mlp_cli.diagnostics import Diagnostics, warnings_for
from mlp_cli.model import build_model

from conftest import REPO, write_config


def synthetic_config(name: str, task: str, **extra) -> dict:
    return {"task": task, "data": {"synthetic": {"name": name, "n": 400, "noise": 0.05}}, **extra}


@pytest.mark.parametrize("name,task,classes", [
    ("sine", "regression", None), ("moons", "binary", 2), ("circles", "binary", 2),
    ("spirals", "multiclass", 3), ("spirals", "binary", 2), ("xor", "binary", 2),
])
def test_synthetic_sources_split_like_files(name, task, classes):
    config = config_from_dict(synthetic_config(name, task, train={"seed": 3}))
    data = load_dataset(config)
    width = 1 if name == "sine" else 2
    assert data.n_inputs == width
    assert len(data.train) + len(data.val) + len(data.test) == 400
    assert abs(len(data.test) - 80) <= (classes or 0)  # test_fraction 0.2 as for a file (per-class rounding)
    if classes:
        assert len(data.prep.labels) == classes
    again = load_dataset(config)
    assert torch.equal(data.train.x, again.train.x)


def test_synthetic_task_mismatch_is_a_clear_error():
    from mlp_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="regression problem"):
        load_dataset(config_from_dict(synthetic_config("sine", "binary")))


# ---------------------------------------------------------------------------------------------- diagnostics


def test_diagnostics_numbers_match_a_direct_computation():
    torch.manual_seed(0)
    model = build_model(3, 2, ModelConfig(hidden=[4, 5], activation="relu"))
    x = torch.randn(32, 3)
    y = torch.randint(0, 2, (32,))
    loss_fn = loss_function("cross_entropy")
    rows = Diagnostics(model, "relu", "multiclass", None).measure((x, y), loss_fn, epoch=0)

    # The same quantities by hand: forward step by step, autograd for each gradient.
    l1, a1, l2, a2, l3 = model
    z1 = l1(x)
    h1 = a1(z1)
    z2 = l2(h1)
    h2 = a2(z2)
    z3 = l3(h2)
    loss = torch.nn.functional.cross_entropy(z3, y)
    grads = torch.autograd.grad(loss, [l1.weight, l2.weight, l3.weight, z1, z2, z3])
    for i, (row, layer, act) in enumerate(zip(rows, (l1, l2, l3), (h1, h2, z3), strict=True)):
        assert row["grad_norm"] == pytest.approx(grads[i].norm().item(), rel=1e-5)
        assert row["grad_weight_ratio"] == pytest.approx((grads[i].norm() / layer.weight.norm()).item(), rel=1e-5)
        assert row["backprop_norm"] == pytest.approx(grads[3 + i].norm().item(), rel=1e-5)
        assert row["act_mean"] == pytest.approx(act.mean().item(), abs=1e-6)
        assert row["act_std"] == pytest.approx(act.std(correction=0).item(), rel=1e-5)
    assert rows[0]["inactive_fraction"] == pytest.approx((h1 <= 0).all(0).float().mean().item())
    assert rows[-1]["inactive_fraction"] is None and rows[-1]["layer"] == "output"


def test_measuring_never_changes_training():
    torch.manual_seed(0)
    model = build_model(3, 1, ModelConfig(hidden=[8], dropout=0.5))
    model.train()
    batch = (torch.randn(16, 3), torch.ones(16))
    before = torch.get_rng_state()
    Diagnostics(model, "relu", "binary", None).measure(batch, loss_function("bce"), epoch=0)
    assert torch.equal(before, torch.get_rng_state()) and model.training
    assert all(p.grad is None for p in model.parameters())


def test_deep_tanh_warns_vanishing_and_deep_relu_does_not():
    x, y = torch.randn(256, 2), torch.randint(0, 3, (256,))
    loss_fn = loss_function("cross_entropy")
    torch.manual_seed(0)
    tanh = build_model(2, 3, ModelConfig(hidden=[64] * 16, activation="tanh"))
    relu = build_model(2, 3, ModelConfig(hidden=[64] * 16, activation="relu", init="kaiming"))
    tanh_rows = Diagnostics(tanh, "tanh", "multiclass", None).measure((x, y), loss_fn, 0)
    relu_rows = Diagnostics(relu, "relu", "multiclass", None).measure((x, y), loss_fn, 0)
    assert any("gradients vanish" in w for w in warnings_for(tanh_rows, "tanh"))
    assert not any("vanish" in w or "explode" in w for w in warnings_for(relu_rows, "relu"))


def test_dead_relus_are_reported():
    model = build_model(2, 1, ModelConfig(hidden=[8]))
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # every pre-activation negative: every unit dead
    rows = Diagnostics(model, "relu", "binary", None).measure((torch.randn(32, 2), torch.ones(32)), loss_function("bce"), 0)
    assert rows[0]["inactive_fraction"] == 1.0
    assert any("dead" in w for w in warnings_for(rows, "relu"))


def test_diagnose_flag_writes_csv_and_prints_table(invoke, multiclass_config, tmp_path):
    result = invoke("train", multiclass_config, "--diagnose")
    assert result.exit_code == 0, result.output
    assert "layer health at initialization" in result.stderr and "‖∂L/∂z‖" in result.stderr
    rows = list(csv.DictReader((tmp_path / "run" / "diagnostics.csv").open()))
    assert {r["epoch"] for r in rows} == {str(e) for e in range(7)} and {r["layer"] for r in rows} == {"hidden 1", "output"}


def test_diagnostics_off_is_free(invoke, multiclass_config, tmp_path, monkeypatch):
    import mlp_cli.diagnostics as diagnostics

    def fail(*args, **kwargs):
        raise AssertionError("diagnostics ran while off")

    monkeypatch.setattr(diagnostics.Diagnostics, "measure", fail)
    assert invoke("train", multiclass_config, "--quiet").exit_code == 0
    assert not (tmp_path / "run" / "diagnostics.csv").exists()


# ---------------------------------------------------------------------------------------------- sweep


def test_sweep_of_three_values_gives_three_rows_matching_params(invoke, multiclass_config, tmp_path):
    result = invoke("sweep", multiclass_config, "model.hidden", "[2]", "[8]", "[4, 4]", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["value"] for r in rows] == ["[2]", "[8]", "[4, 4]"]
    for row in rows:
        counted = json.loads(invoke("params", multiclass_config, f"model.hidden={row['value']}", "--json").stdout)
        assert row["params"] == counted["total"]
    table = list(csv.DictReader((tmp_path / "run" / "sweep-model.hidden" / "sweep.csv").open()))
    assert len(table) == 3 and table[1]["params"] == str(rows[1]["params"])


def test_sweep_interrupted_keeps_finished_rows(multiclass_config, tmp_path, monkeypatch):
    import signal

    from mlp_cli import sweep as sweep_module
    from mlp_cli.errors import TrainingInterrupted
    from mlp_cli.train import Trainer

    real_run = Trainer.run
    calls = {"n": 0}

    def run(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise TrainingInterrupted("SIGINT received", signal.SIGINT)
        return real_run(self)

    monkeypatch.setattr(Trainer, "run", run)
    result = sweep_module.sweep(multiclass_config, "model.hidden", ["[2]", "[3]", "[4]"], [])
    assert len(result.rows) == 1 and result.interrupted is not None
    assert len((result.folder / "sweep.csv").read_text().strip().splitlines()) == 2


# ---------------------------------------------------------------------------------------------- plots


def test_plot_writes_pngs(invoke, tmp_path):
    pytest.importorskip("matplotlib")
    config = write_config(tmp_path / "moons.yaml", {
        **synthetic_config("moons", "binary"), "model": {"hidden": [8]}, "train": {"epochs": 3, "diagnostics": True},
        "output_dir": str(tmp_path / "run"),
    })
    assert invoke("train", config, "--quiet").exit_code == 0
    result = invoke("plot", tmp_path / "run")
    assert result.exit_code == 0, result.output
    for name in ("curves.png", "confusion.png", "regions.png", "gradients.png"):
        data = (tmp_path / "run" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 2000


def test_plot_without_matplotlib_says_how_to_install(invoke, multiclass_config, tmp_path, monkeypatch):
    assert invoke("train", multiclass_config, "--quiet").exit_code == 0
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = invoke("plot", tmp_path / "run")
    assert result.exit_code == 2 and "pip install 'mlp-cli[plot]'" in result.stderr


# ---------------------------------------------------------------------------------------------- baselines


def test_majority_baseline_equals_independent_computation(multiclass_config):
    from mlp_cli.config import load_config

    config = load_config(multiclass_config)
    data = load_dataset(config)
    metrics = constant_baseline(config, data, data.test)
    majority = np.bincount(data.train.y.numpy()).argmax()
    assert metrics["accuracy"] == pytest.approx(float((data.test.y.numpy() == majority).mean()))
    prior = np.bincount(data.train.y.numpy(), minlength=3) / len(data.train)
    expected_loss = -np.log(prior[data.test.y.numpy()]).mean()
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert metrics["kappa"] == pytest.approx(0.0)


def test_mean_and_linear_regression_baselines_equal_numpy(regression_config):
    from mlp_cli.config import load_config

    config = load_config(regression_config)
    data = load_dataset(config)
    unscale = data.prep.unscale_target
    y_train = unscale(data.train.y.double().numpy())
    y_test = unscale(data.test.y.double().numpy())
    mean = constant_baseline(config, data, data.test)
    assert mean["mse"] == pytest.approx(((y_test - y_train.mean()) ** 2).mean(), rel=1e-5)
    linear = linear_baseline(config, data, data.test, torch.device("cpu"))
    x = np.c_[data.train.x.double().numpy(), np.ones(len(data.train))]
    coef, *_ = np.linalg.lstsq(x, data.train.y.double().numpy(), rcond=None)
    pred = unscale(np.c_[data.test.x.double().numpy(), np.ones(len(data.test))] @ coef)
    r2 = 1 - ((y_test - pred) ** 2).sum() / ((y_test - y_test.mean()) ** 2).sum()
    assert linear["r2"] == pytest.approx(r2, abs=1e-4)


def test_softmax_baseline_matches_scikit_learn_logistic_regression(multiclass_config):
    from sklearn.linear_model import LogisticRegression

    from mlp_cli.config import load_config

    config = load_config(multiclass_config)
    data = load_dataset(config)
    ours = linear_baseline(config, data, data.test, torch.device("cpu"))
    sk = LogisticRegression(C=math.inf, max_iter=5000).fit(data.train.x.numpy(), data.train.y.numpy())
    assert ours["accuracy"] == pytest.approx(sk.score(data.test.x.numpy(), data.test.y.numpy()), abs=0.02)


# ---------------------------------------------------------------------------------------------- every config runs


CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
QUALITY = {"satimage.yaml": ("accuracy", 0.90), "california_housing.yaml": ("r2", 0.80), "vegetation.yaml": ("accuracy", 0.95),
           "deep_relu.yaml": ("accuracy", 0.95), "sine.yaml": ("r2", 0.9), "linear_collapse.yaml": ("accuracy", 0.4)}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_trains(invoke, tmp_path, path):
    result = invoke("train", path, f"output_dir={tmp_path / 'run'}", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    if path.name in QUALITY:
        metric, floor = QUALITY[path.name]
        assert summary["test"][metric] >= floor, summary["test"][metric]


def test_plot_to_an_unusable_folder_is_a_clear_error(invoke, multiclass_config, tmp_path):
    pytest.importorskip("matplotlib")
    assert invoke("train", multiclass_config, "--quiet").exit_code == 0
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = invoke("plot", tmp_path / "run", "--out", blocker / "pngs")
    assert result.exit_code == 2 and "cannot create" in result.stderr
