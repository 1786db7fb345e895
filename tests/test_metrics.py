"""Every metric against scikit-learn on the same predictions."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from sklearn import metrics as skm

from mlp_cli.metrics import Accumulator


def accumulate(task, n_classes, outputs, targets, chunks=3):
    acc = Accumulator(task, n_classes, "cpu")
    for out, y in zip(torch.tensor_split(outputs, chunks), torch.tensor_split(targets, chunks), strict=True):
        acc.update(out, y, torch.tensor(0.0))
    return acc


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(2, 6), n=st.integers(5, 200))
def test_classification_metrics_match_sklearn(seed, k, n):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 2 * np.eye(k)[y] * rng.integers(0, 2, n)[:, None]
    pred = logits.argmax(1)
    result = accumulate("multiclass", k, torch.tensor(logits), torch.tensor(y)).result(list(range(k)))
    labels = list(range(k))
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert result["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
    assert result["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=labels).tolist()
    kappa = skm.cohen_kappa_score(y, pred)
    if np.isnan(kappa):
        assert np.isnan(result["kappa"])
    else:
        assert result["kappa"] == pytest.approx(kappa)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            balanced = skm.balanced_accuracy_score(y, pred)
    assert result["balanced_accuracy"] == pytest.approx(balanced)
    precision, recall, f1, support = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    for i in labels:
        row = result["per_class"][str(i)]
        assert row["precision"] == pytest.approx(precision[i])
        assert row["recall"] == pytest.approx(recall[i])
        assert row["f1"] == pytest.approx(f1[i])
        assert row["support"] == support[i]
    assert result["n"] == n


def test_binary_uses_the_logit_sign():
    logits = torch.tensor([-2.0, 0.5, 3.0, -0.1, 0.2])
    y = torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0])
    result = accumulate("binary", 2, logits, y, chunks=2).result([False, True])
    pred = (logits > 0).long().numpy()
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y.numpy(), pred))
    assert result["kappa"] == pytest.approx(skm.cohen_kappa_score(y.numpy(), pred))
    assert result["labels"] == [False, True]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(3, 300))
def test_regression_metrics_match_sklearn(seed, n):
    rng = np.random.default_rng(seed)
    y = rng.normal(50_000, 20_000, n)
    pred = y + rng.normal(0, 5_000, n)
    result = accumulate("regression", 0, torch.tensor(pred), torch.tensor(y)).result()
    assert result["mse"] == pytest.approx(skm.mean_squared_error(y, pred), rel=1e-9)
    assert result["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)), rel=1e-9)
    assert result["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-9)
    assert result["r2"] == pytest.approx(skm.r2_score(y, pred), rel=1e-6)


def test_regression_metrics_in_user_units():
    acc = Accumulator("regression", 0, "cpu", unscale=lambda v: v * 10 + 100)
    acc.update(torch.tensor([0.0, 1.0]), torch.tensor([0.5, 1.0]), torch.tensor(0.0))
    assert acc.result()["mae"] == pytest.approx(2.5)
