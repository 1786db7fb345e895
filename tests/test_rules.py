"""The shared data rules (mlp_cli.data.rules): in-memory and streaming preparation of the same Parquet file agree on
labels, scaling statistics and refusals."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlp_cli.config import load_config
from mlp_cli.data import fit, fit_streaming, read_frames, split_frames
from mlp_cli.errors import DataError

from conftest import write_config

N = 2000


def table(seed: int = 0, **override) -> dict:
    rng = np.random.default_rng(seed)
    columns = {
        "a": rng.normal(3.0, 2.0, N).astype(np.float32),
        "b": rng.uniform(-5, 5, N).astype(np.float32),
        "constant": np.full(N, 7.0, dtype=np.float32),
        "label": rng.integers(0, 3, N).astype(np.int64),
        "value": rng.normal(100.0, 10.0, N),
    }
    columns.update(override)
    return columns


def prepare_both(tmp_path, columns: dict, task: str, target: str, missing: str = "error", standardize_target: bool = False):
    """(in-memory preprocessor, streaming preprocessor) for the same file, every row a training row in both.

    A separate test file and val_fraction 0 make both paths fit on all rows of `train`: the in-memory split is
    stratified and the streaming split hashed, so with held-out rows they would fit on different rows.
    """
    train = tmp_path / "train.parquet"
    pq.write_table(pa.table(columns), train, row_group_size=500)
    features = [name for name in columns if name not in ("label", "value")]
    data = {"train": str(train), "test": str(train), "target": target, "features": features, "val_fraction": 0.0,
            "missing": missing, "standardize_target": standardize_target}
    path = write_config(tmp_path / f"{task}.yaml", {"task": task, "data": data, "model": {"hidden": [4]},
                                                    "output_dir": str(tmp_path / "run")})
    results = []
    for streaming in (False, True):
        config = load_config(path, [f"data.streaming={str(streaming).lower()}"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "dropped N rows" is the in-memory path's notice; not compared here
            try:
                if streaming:
                    results.append(fit_streaming(config)[0])
                else:
                    frame, test, names = read_frames(config)
                    results.append(fit(config, split_frames(config, frame, test)["train"], names)[0])
            except DataError as exc:
                results.append(exc)
    return results


def assert_same_statistics(memory, stream):
    # Both paths read the same float32 values and sum them in float64; they differ only in summation order and in
    # the variance formula (in memory: two passes, sum of squared deviations; streaming: one pass, E[x²] - mean²).
    # Summing n values in float64 is off by at most about n·ε64 relative (ε64 = 2.2e-16), and the one-pass variance
    # loses a further factor mean²/variance to cancellation. Here n = 2000 and mean²/variance <= 100 (column b has
    # mean ≈ 0 and the target has (100/10)²), so the relative error is below 2000 · 2.2e-16 · 100 ≈ 4.4e-11.
    # 1e-9 leaves a margin for any x86 summation order, and is far below what a different rule would change.
    rtol = 1e-9
    np.testing.assert_allclose(memory.mean, stream.mean, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(memory.scale, stream.scale, rtol=rtol)
    assert memory.impute.keys() == stream.impute.keys()
    np.testing.assert_allclose(list(memory.impute.values()), list(stream.impute.values()), rtol=rtol, atol=rtol)
    for name in ("target_mean", "target_scale"):
        a, b = getattr(memory, name), getattr(stream, name)
        assert (a is None) == (b is None)
        if a is not None:
            assert a == pytest.approx(b, rel=rtol)


@pytest.mark.parametrize("task,target", [("multiclass", "label"), ("binary", "label"), ("regression", "value")])
def test_same_labels_and_statistics(tmp_path, task, target):
    labels = table()["label"] % 2 if task == "binary" else table()["label"]
    memory, stream = prepare_both(tmp_path, table(label=labels), task, target, standardize_target=task == "regression")
    assert memory.labels == stream.labels
    if task != "regression":
        assert memory.labels == ([0, 1] if task == "binary" else [0, 1, 2])
    assert stream.scale[2] == memory.scale[2] == 1.0  # the constant column keeps scale 1 in both
    assert_same_statistics(memory, stream)


@pytest.mark.parametrize("missing", ["drop", "mean"])
def test_same_statistics_with_missing_values(tmp_path, missing):
    a = table()["a"].copy()
    a[[3, 700, 1999]] = np.nan
    memory, stream = prepare_both(tmp_path, table(a=a), "multiclass", "label", missing=missing)
    assert_same_statistics(memory, stream)
    assert bool(memory.impute) == bool(stream.impute) == (missing == "mean")


def text_labels():
    labels = np.array(["x", "y", "z"], dtype=object)[table()["label"]]
    labels[5] = "lonely"
    return labels


REFUSALS = {
    "missing value": ("multiclass", "label", {"a": np.where(np.arange(N) == 12, np.nan, table()["a"]).astype(np.float32)}),
    "missing target": ("regression", "value", {"value": np.where(np.arange(N) == 40, np.nan, table()["value"])}),
    "infinite value": ("multiclass", "label", {"b": np.where(np.arange(N) == 7, np.inf, table()["b"]).astype(np.float32)}),
    "one class": ("multiclass", "label", {"label": np.zeros(N, dtype=np.int64)}),
    "three classes for binary": ("binary", "label", {}),
    "single-row class": ("multiclass", "label", {"label": text_labels()}),
    "fractional labels": ("multiclass", "label", {"label": table()["value"]}),
    "text regression target": ("regression", "label", {"label": text_labels()}),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_same_refusals(tmp_path, case):
    task, target, override = REFUSALS[case]
    memory, stream = prepare_both(tmp_path, table(**override), task, target)
    assert isinstance(memory, DataError), memory
    assert isinstance(stream, DataError), stream
    # Both read the same file and number rows within it; the streaming path sees one row group at a time, so
    # where it reports rows it can only list those of the first row group with the problem (here the same rows).
    rows = re.compile(r"\b(rows?|lines?) [\d, ]+(and \d+ more)?")
    assert rows.sub("ROWS", str(memory)) == rows.sub("ROWS", str(stream))


def test_text_labels_that_are_all_whole_numbers_become_ints_and_mixed_ones_are_refused():
    from mlp_cli.data import label_values

    assert list(label_values(np.array(["1", "2", None, "10"], dtype=object), "f", "y")) == [1, 2, None, 10]
    assert list(label_values(np.array(["a", "b"], dtype=object), "f", "y")) == ["a", "b"]
    with pytest.raises(DataError, match="mixes whole numbers .* with text .*'x'"):
        label_values(np.array(["1", "2", "x"], dtype=object), "f", "y")


def test_target_standardization_defaults_on_for_regression_only():
    from mlp_cli.data import standardizes_target

    assert standardizes_target("regression", None) and not standardizes_target("regression", False)
    assert not standardizes_target("binary", None) and not standardizes_target("multiclass", None)


@pytest.mark.parametrize("values", [
    [3.0, 1.0, 3.0, -2.0, 7.0, 1.0, 3.0],
    [0.0, -0.0, 5.0, float("nan"), 5.0, 2.0**40, 2.0**40],
])
def test_number_labels_are_counted_as_the_per_value_path_counts_them(values):
    """count_labels counts float targets with np.unique; the per-value path (label_values) is the reference."""
    from mlp_cli.data import Frame, label_values
    from mlp_cli.data.rules import count_labels

    target = np.array(values)
    frame = Frame("f", "csv", np.zeros((len(target), 1), dtype=np.float32), ["x"], target=target)
    expected: dict = {}
    for value in label_values(target, "f", "y"):
        expected[value] = expected.get(value, 0) + 1
    counted = count_labels(frame, "y", {})
    assert counted == expected and all(type(k) in (int, type(None)) for k in counted)
    assert count_labels(frame, "y", dict(counted)) == {k: 2 * v for k, v in expected.items()}  # adds, chunk by chunk


def test_non_integer_number_labels_are_refused_by_the_counting_path_too():
    from mlp_cli.data import Frame
    from mlp_cli.data.rules import count_labels

    frame = Frame("f", "csv", np.zeros((3, 1), dtype=np.float32), ["x"], target=np.array([1.0, 2.5, 1.0]))
    with pytest.raises(DataError, match="non-integer numbers such as 2.5"):
        count_labels(frame, "y", {})


def test_numeric_codes_look_labels_up_and_mark_unknown_ones():
    from mlp_cli.data.rules import numeric_codes

    labels = [1, 2, 3, 4, 5, 7]
    codes = numeric_codes(np.array([7.0, 1.0, 6.0, 5.0, 8.0, 0.0, np.nan]), labels)
    assert codes is not None and codes.tolist() == [5, 0, -1, 4, -1, -1, -1]
    assert numeric_codes(np.array(["a"], dtype=object), labels) is None  # text: the per-value lookup
    assert numeric_codes(np.array([1.0]), [True, False]) is None  # labels that are not ints
