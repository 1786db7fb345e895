"""mlp explain: both methods find the informative columns, one row per original column, scikit-learn's
permutation_importance as the oracle, the completeness of integrated gradients, and the CLI under hostile use."""

from __future__ import annotations

import csv
import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator
from typer.testing import CliRunner

from mlp_cli.cli import app
from mlp_cli.data import load_dataset
from mlp_cli.errors import MLPError
from mlp_cli.evaluate import load_checkpoint_model
from mlp_cli.explain import (
    column_blocks,
    completeness_errors,
    explain,
    integrated_gradients,
    permutation_importance,
    shuffle_orders,
)

from conftest import REPO, blobs, linear_target, write_config, write_csv


def _derive_module():
    spec = importlib.util.spec_from_file_location("two_signals_derive", REPO / "data" / "two_signals" / "derive.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _train(folder, config: dict):
    path = write_config(folder / "config.yaml", {**config, "output_dir": str(folder / "run")})
    result = CliRunner().invoke(app, ["train", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    return folder / "run" / "best.pt"


@pytest.fixture(scope="module")
def two_signals(tmp_path_factory):
    """A binary model on the shipped teaching recipe (b2 and b5 decide, `site` is categorical noise), smaller."""
    folder = tmp_path_factory.mktemp("two_signals")
    names, body = _derive_module().table(rows=800, seed=3)
    with (folder / "data.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([names, *body])
    checkpoint = _train(folder, {
        "task": "binary",
        "data": {"train": "data.csv", "target": "label", "categorical": ["site"], "test_fraction": 0.25},
        "model": {"hidden": [32, 32]},
        "train": {"epochs": 40, "batch_size": 64, "lr": 0.003, "early_stopping": 0},
    })
    return folder, checkpoint


@pytest.fixture(scope="module")
def multiclass_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multiclass")
    write_csv(folder / "train.csv", blobs(240, classes=(1, 2, 7), seed=0))
    write_csv(folder / "test.csv", blobs(90, classes=(1, 2, 7), seed=0))
    checkpoint = _train(folder, {
        "task": "multiclass",
        "data": {"train": "train.csv", "test": "test.csv", "target": "label"},
        "model": {"hidden": [16]},
        "train": {"epochs": 10, "batch_size": 32, "lr": 0.01, "early_stopping": 0},
    })
    return folder, checkpoint


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("regression")
    write_csv(folder / "reg.csv", linear_target(300))
    checkpoint = _train(folder, {
        "task": "regression",
        "data": {"train": "reg.csv", "target": "y", "standardize_target": True},
        "model": {"hidden": [16, 16]},
        "train": {"epochs": 15, "batch_size": 32, "lr": 0.01},
    })
    return folder, checkpoint


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


# ---------------------------------------------------------------------------------------------- the ranking


@pytest.mark.parametrize("method", ["permutation", "integrated_gradients"])
def test_both_methods_rank_the_informative_columns_first(two_signals, method):
    _, checkpoint = two_signals
    result = explain(checkpoint, method=method, repeats=5)
    names = [f.feature for f in result.features]
    assert set(names[:2]) == {"b2", "b5"}, names
    # One row per original column: the categorical `site` is one feature, never `site=north`.
    assert sorted(names) == sorted(["b1", "b2", "b3", "b4", "b5", "b6", "b7", "site"])
    importances = [f.importance for f in result.features]
    assert importances == sorted(importances, reverse=True)
    # The noise columns together matter less than the weaker of the two signals.
    assert sum(importances[2:]) < importances[1]


def test_one_hot_columns_are_one_block_and_groups_merge(two_signals):
    _, checkpoint = two_signals
    _, _, _, prep = load_checkpoint_model(checkpoint)
    blocks = dict(column_blocks(prep))
    width = len(prep.categorical["site"])
    assert width == 3 and len(blocks["site"]) == width
    site_names = [prep.feature_names[i] for i in blocks["site"]]
    assert all(name.startswith("site=") for name in site_names)
    assert sorted(i for cols in blocks.values() for i in cols) == list(range(prep.n_inputs))
    grouped = dict(column_blocks(prep, [["b1", "site"]]))
    assert grouped["b1+site"] == blocks["b1"] + blocks["site"] and "site" not in grouped and "b1" not in grouped
    with pytest.raises(MLPError, match="did you mean 'site'"):
        column_blocks(prep, [["b1", "sight"]])
    with pytest.raises(MLPError, match="two groups"):
        column_blocks(prep, [["b1", "b2"], ["b2", "b3"]])
    with pytest.raises(MLPError, match="at least two"):
        column_blocks(prep, [["b1"]])


def test_a_shuffled_one_hot_block_stays_one_hot(two_signals, monkeypatch):
    """The block's columns move together: every shuffled row still has exactly one category set."""
    import mlp_cli.explain as module

    _, checkpoint = two_signals
    _, config, model, prep = load_checkpoint_model(checkpoint)
    seen = []
    real = module._forward

    def spy(model, x, task):
        seen.append(x.clone())
        return real(model, x, task)

    monkeypatch.setattr(module, "_forward", spy)
    split, _ = module.explain_split(config, prep, None, None, 0)
    site = dict(column_blocks(prep))["site"]
    permutation_importance(model, config.task, config.loss_name, split, [("site", site)], repeats=3, seed=1)
    stacked = seen[-1].reshape(3, len(split), -1)
    block = stacked[:, :, site] * torch.tensor(prep.scale)[site] + torch.tensor(prep.mean)[site]
    assert torch.equal(block.sum(dim=2), torch.ones(3, len(split)))
    assert not torch.equal(stacked[0, :, site], split.x[:, site])  # it was shuffled


# ---------------------------------------------------------------------------------------------- integrated gradients


def test_integrated_gradients_of_a_linear_model_is_input_times_weight():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 1)).double()
    x = torch.randn(40, 5, dtype=torch.float64)
    baseline = torch.zeros(1, 5, dtype=torch.float64)
    for rule in ("gauss_legendre", "riemann"):
        attributions, diff = integrated_gradients(model, x, baseline, "regression", None, steps=4, rule=rule)
        expected = (x - baseline) * model[0].weight.detach()
        # The gradient of a linear map is its weight at every point; the quadrature weights sum to one, so the only
        # error is float64 rounding of a few additions (|x·w| < 10, eps 2.2e-16).
        torch.testing.assert_close(attributions, expected, rtol=0, atol=1e-13)
        assert completeness_errors(attributions, diff).max() < 1e-12


def test_completeness_error_is_reported_and_below_one_percent(multiclass_run):
    _, checkpoint = multiclass_run
    result = explain(checkpoint, method="integrated_gradients")
    assert result.completeness_p99 < 0.01 and result.completeness_max >= result.completeness_p99
    assert result.steps >= 16 and "predicted" in result.target
    assert set(result.per_class) == {"1", "2", "7"}


def double_precision_test_rows(multiclass_run):
    """The trained model in float64, its test rows, their predicted classes and an all-zero baseline."""
    _, checkpoint = multiclass_run
    _, config, model, _ = load_checkpoint_model(checkpoint)
    model = model.double()
    x = load_dataset(config).test.x.double()
    return model, x, model(x).argmax(dim=1), torch.zeros(1, x.shape[1], dtype=torch.float64)


def test_completeness_error_falls_with_more_steps(multiclass_run):
    """An independent check of the reported error: too few steps on a ReLU network miss the output change."""
    model, x, classes, baseline = double_precision_test_rows(multiclass_run)
    errors = []
    for steps in (2, 256):
        attributions, diff = integrated_gradients(model, x, baseline, "multiclass", classes, steps)
        direct = model(x).gather(1, classes[:, None]).squeeze(1) - model(baseline.expand_as(x)).gather(1, classes[:, None]).squeeze(1)
        torch.testing.assert_close(diff, direct.detach())
        errors.append(np.percentile(completeness_errors(attributions, diff), 99))
    assert errors[1] < errors[0] and errors[1] < 0.01


def test_chunked_paths_give_the_same_attributions(multiclass_run, monkeypatch):
    """Rows are cut into chunks to bound memory; each chunk's rows must keep their own predicted class."""
    import mlp_cli.explain as module

    model, x, classes, baseline = double_precision_test_rows(multiclass_run)
    whole, _ = integrated_gradients(model, x, baseline, "multiclass", classes, 8)
    monkeypatch.setattr(module, "IG_POINTS", 8 * 7)  # 7 rows per chunk: chunks end mid-class and mid-table
    chunked, _ = integrated_gradients(model, x, baseline, "multiclass", classes, 8)
    # Same float64 arithmetic on the same rows; only the batch shape differs, so rounding of a few ulps at most.
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------- scikit-learn as oracle


class _Wrapped(BaseEstimator):
    """The checkpoint's model as a scikit-learn estimator (predict on standardized inputs)."""

    def __init__(self, model=None, task="multiclass"):
        self.model, self.task = model, task

    def fit(self, x, y):
        return self

    def outputs(self, x):
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return out.squeeze(-1) if self.task == "regression" else out

    def predict(self, x):
        out = self.outputs(x)
        return out.double().numpy() if self.task == "regression" else out.argmax(dim=1).numpy()


def _negative_loss(loss_name):
    from mlp_cli.components import loss_function

    def score(estimator, x, y):
        return -loss_function(loss_name)(estimator.outputs(x), torch.from_numpy(y)).item() / len(y)

    return score


@pytest.mark.parametrize("run", ["multiclass_run", "regression_run"])
def test_permutation_importance_agrees_with_scikit_learn(request, run):
    from sklearn.inspection import permutation_importance as sk_permutation_importance

    _, checkpoint = request.getfixturevalue(run)
    _, config, model, prep = load_checkpoint_model(checkpoint)
    split = load_dataset(config).test
    blocks = column_blocks(prep)
    ours, _, _ = permutation_importance(model, config.task, config.loss_name, split, blocks, repeats=4, seed=11)
    x, y = split.x.numpy(), split.y.numpy()
    scoring = "r2" if config.task == "regression" else "accuracy"
    sk = sk_permutation_importance(_Wrapped(model, config.task), x, y, scoring=scoring, n_repeats=4, random_state=11)
    # Same seed, same shuffles (shuffle_orders copies scikit-learn's draw), same model: the scores differ only where
    # a stacked batch rounds a float32 GEMM differently from scikit-learn's one-repeat batch. For accuracy that can
    # flip a row only at an exact tie of two logits; allow one row per repeat. For R² the outputs move by a few
    # float32 ulps (relative 1e-6), so R² moves by far less than 1e-4.
    tolerance = 1.0 / len(y) if scoring == "accuracy" else 1e-4
    for j, f in enumerate(ours):
        assert f.importance == pytest.approx(sk.importances_mean[j], abs=tolerance), f.feature
        assert f.std == pytest.approx(sk.importances_std[j], abs=tolerance), f.feature
    # The loss rise is scikit-learn's importance under the score "minus the mean loss"; a float32 sum over the rows
    # differs between batch shapes by about n·eps32·loss, far below 1e-4 of the loss.
    sk_loss = sk_permutation_importance(_Wrapped(model, config.task), x, y, scoring=_negative_loss(config.loss_name), n_repeats=4, random_state=11)
    for j, f in enumerate(ours):
        assert f.loss == pytest.approx(sk_loss.importances_mean[j], abs=1e-4), f.feature
    assert max(f.importance for f in ours) > 5 * tolerance  # the model does use its inputs: not a vacuous match


def test_shuffle_orders_are_permutations_like_scikit_learns():
    orders = shuffle_orders(50, 3, seed=4)
    assert orders.shape == (3, 50)
    for order in orders:
        assert sorted(order) == list(range(50))
    assert not np.array_equal(orders[0], orders[1])
    assert np.array_equal(orders, shuffle_orders(50, 3, seed=4))


# ---------------------------------------------------------------------------------------------- the CLI


def test_json_shape_and_csv_output(two_signals, tmp_path):
    _, checkpoint = two_signals
    target = tmp_path / "importance.csv"
    result = invoke("explain", checkpoint, "--json", "-o", target, "--repeats", "3")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data) == ["method", "metric", "features"] and data["method"] == "permutation" and data["metric"] == "accuracy"
    assert all(list(f) == ["feature", "importance", "std"] for f in data["features"])
    values = [f["importance"] for f in data["features"]]
    assert values == sorted(values, reverse=True)
    with target.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["feature"], float(r["importance"]), float(r["std"])) for r in rows] == [
        (f["feature"], f["importance"], f["std"]) for f in data["features"]
    ]


def test_table_and_plot(multiclass_run, tmp_path):
    pytest.importorskip("matplotlib")
    folder, checkpoint = multiclass_run
    result = invoke("explain", checkpoint, "--method", "integrated_gradients", "-o", folder / "run" / "importance_integrated_gradients.csv")
    assert result.exit_code == 0, result.output
    assert "completeness error p99" in result.stdout and "█" in result.stdout and "per predicted class" in result.stdout
    plotted = invoke("plot", folder / "run", "--out", tmp_path)
    assert plotted.exit_code == 0, plotted.output
    assert (tmp_path / "importance_integrated_gradients.png").stat().st_size > 1000


def test_regression_checkpoint_and_rows_beyond_the_data(regression_run):
    folder, checkpoint = regression_run
    result = invoke("explain", checkpoint, "--data", folder / "reg.csv", "--rows", "1000000000", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["metric"] == "r2" and data["features"][0]["feature"] == "x2"  # y = x0 + 2·x1 + 3·x2 + ...
    assert "all were used" in result.stderr


def test_integrated_gradients_without_standardization(tmp_path):
    """No stored training mean: the explained rows' mean is the baseline, and completeness still holds."""
    write_csv(tmp_path / "reg.csv", linear_target(200, seed=1))
    checkpoint = _train(tmp_path, {"task": "regression", "data": {"train": "reg.csv", "target": "y", "standardize": False},
                                   "model": {"hidden": [8]}, "train": {"epochs": 3}})
    result = explain(checkpoint, method="integrated_gradients")
    assert result.metric == "mean_abs_attribution" and result.target.startswith("prediction")
    assert result.completeness_p99 < 0.01 and len(result.features) == 3


def test_column_names_are_not_markup(tmp_path):
    columns = blobs(120, classes=(0, 1), seed=2, features=2)
    columns = {"[bold]a[/bold]": columns["f0"], "b,c": columns["f1"], "label": columns["label"]}
    path = tmp_path / "odd.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(columns))
        writer.writerows(zip(*columns.values(), strict=True))
    checkpoint = _train(tmp_path, {"task": "binary", "data": {"train": "odd.csv", "target": "label"}, "model": {"hidden": [4]},
                                   "train": {"epochs": 2}})
    result = invoke("explain", checkpoint, "-o", tmp_path / "imp.csv")
    assert result.exit_code == 0, result.output
    assert "[bold]a[/bold]" in result.stdout
    with (tmp_path / "imp.csv").open(newline="") as handle:
        assert {r["feature"] for r in csv.DictReader(handle)} == {"[bold]a[/bold]", "b,c"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--group", "b1,sight"], "did you mean 'site'"),
        (["--repeats", "0"], "--repeats"),
        (["--rows", "0"], "--rows"),
        (["--method", "shap"], "unknown method"),
    ],
)
def test_bad_options_are_one_clear_line(two_signals, args, message):
    _, checkpoint = two_signals
    result = invoke("explain", checkpoint, *args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_output_never_overwrites_an_input(two_signals, tmp_path):
    folder, checkpoint = two_signals
    before = checkpoint.read_bytes()
    data_before = (folder / "data.csv").read_bytes()
    for target in (checkpoint, folder / "data.csv"):
        result = invoke("explain", checkpoint, "--data", folder / "data.csv", "-o", target)
        assert result.exit_code == 2 and "would destroy it" in result.stderr
    assert checkpoint.read_bytes() == before and (folder / "data.csv").read_bytes() == data_before
    result = invoke("explain", checkpoint, "-o", tmp_path)
    assert result.exit_code == 2 and "is a folder" in result.stderr
    # The run's test data is not passed with --data, yet it is not overwritten: only an importance table is.
    other = tmp_path / "notes.csv"
    other.write_text("a,b\n1,2\n")
    result = invoke("explain", checkpoint, "-o", other)
    assert result.exit_code == 2 and "refusing to overwrite" in result.stderr and other.read_text() == "a,b\n1,2\n"
    result = invoke("explain", checkpoint, "-o", tmp_path / "missing" / "imp.csv")
    assert result.exit_code == 2 and "could not write" in result.stderr


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_into_a_read_only_folder(two_signals, tmp_path):
    _, checkpoint = two_signals
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = invoke("explain", checkpoint, "-o", locked / "imp.csv")
    finally:
        locked.chmod(0o700)
    assert result.exit_code == 2 and "could not write" in result.stderr


def test_data_file_lacking_a_column(two_signals, tmp_path):
    folder, checkpoint = two_signals
    lines = (folder / "data.csv").read_text().splitlines()
    header = lines[0].split(",")
    drop = header.index("b3")
    cut = [",".join(c for i, c in enumerate(line.split(",")) if i != drop) for line in lines]
    (tmp_path / "cut.csv").write_text("\n".join(cut) + "\n")
    result = invoke("explain", checkpoint, "--data", tmp_path / "cut.csv")
    assert result.exit_code == 2 and "'b3'" in result.stderr and "lacks" in result.stderr


def test_ctrl_c_is_one_line_and_writes_nothing(two_signals, tmp_path, monkeypatch):
    import mlp_cli.explain as module

    _, checkpoint = two_signals

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "permutation_importance", interrupted)
    result = invoke("explain", checkpoint, "-o", tmp_path / "imp.csv")
    assert result.exit_code == 130 and "interrupted" in result.stderr and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []
