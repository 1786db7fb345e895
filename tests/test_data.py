"""The data layer (mlp_cli.data): labels, splits, missing values, one-hot, scaling, and reading for a trained model.

Every expectation is computed independently from the values the test wrote, using each split's `rows`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from mlp_cli.config import config_from_dict
from mlp_cli.data import Preprocessor, load_dataset, load_for_model, split_indices
from mlp_cli.errors import DataError, MLPWarning

from conftest import assert_data_error


def write_csv(path: Path, columns: list[str], rows: list[list]) -> Path:
    def text(value):
        if value is None:
            return ""
        if isinstance(value, bool):
            return str(value).lower()
        return repr(value) if isinstance(value, float) else str(value)

    path.write_text("\n".join([",".join(columns)] + [",".join(text(v) for v in row) for row in rows]) + "\n")
    return path


def config(train: Path, target: str = "label", task: str = "multiclass", seed: int = 0, **data):
    return config_from_dict({"task": task, "data": {"train": str(train), "target": target, **data}, "train": {"seed": seed}})


def splits(dataset):
    return {name: getattr(dataset, name) for name in ("train", "val", "test") if getattr(dataset, name) is not None}


def numeric_rows(n: int, seed: int = 0, k: int = 3) -> np.ndarray:
    """Values with three decimals: exact in the CSV and identical after float32 parsing either way."""
    return np.round(np.random.default_rng(seed).normal(3.0, 2.0, size=(n, k)), 3)


def classification_file(tmp_path: Path, labels: list, n_per_class: int | list[int] = 20, seed: int = 0, name="t.csv"):
    counts = n_per_class if isinstance(n_per_class, list) else [n_per_class] * len(labels)
    y = [label for label, count in zip(labels, counts, strict=True) for _ in range(count)]
    order = np.random.default_rng(seed).permutation(len(y))
    y = [y[i] for i in order]
    x = numeric_rows(len(y), seed)
    rows = [[*map(float, x[i]), y[i]] for i in range(len(y))]
    return write_csv(tmp_path / name, ["a", "b", "c", "label"], rows), x, y


def regression_file(tmp_path: Path, n: int = 100, seed: int = 0, name="r.csv"):
    x = numeric_rows(n, seed)
    y = np.round(10 * x[:, 0] - 3 * x[:, 1] + 50, 3)
    rows = [[*map(float, x[i]), float(y[i])] for i in range(n)]
    return write_csv(tmp_path / name, ["a", "b", "c", "target"], rows), x, y


# ---------------------------------------------------------------------------------------------- features


def test_features_default_to_every_column_but_the_target(tmp_path):
    rows = [[float(i), i % 2, float(-i), 2.0 * i] for i in range(30)]
    path = write_csv(tmp_path / "t.csv", ["p", "label", "q", "r"], rows)
    dataset = load_dataset(config(path, task="binary", standardize=False))
    assert dataset.prep.features == ["p", "q", "r"]
    assert dataset.prep.feature_names == ["p", "q", "r"] and dataset.n_inputs == 3
    for split in splits(dataset).values():
        expected = np.array([[rows[r][0], rows[r][2], rows[r][3]] for r in split.rows], dtype=np.float32)
        np.testing.assert_array_equal(split.x.numpy(), expected)


def test_explicit_features_select_and_order_columns(tmp_path):
    rows = [[float(i), i % 2, float(-i), 2.0 * i] for i in range(30)]
    path = write_csv(tmp_path / "t.csv", ["p", "label", "q", "r"], rows)
    dataset = load_dataset(config(path, task="binary", standardize=False, features=["r", "p"]))
    assert dataset.prep.features == ["r", "p"] and dataset.n_inputs == 2
    for split in splits(dataset).values():
        expected = np.array([[rows[r][3], rows[r][0]] for r in split.rows], dtype=np.float32)
        np.testing.assert_array_equal(split.x.numpy(), expected)


def test_features_may_not_include_the_target(tmp_path):
    path, _, _ = classification_file(tmp_path, [0, 1])
    with pytest.raises(DataError, match="target"):
        load_dataset(config(path, task="binary", features=["a", "label"]))


# ---------------------------------------------------------------------------------------------- text and one-hot


def test_text_feature_is_refused_unless_categorical(tmp_path):
    rows = [[float(i), ["red", "green", "blue"][i % 3], i % 2] for i in range(30)]
    path = write_csv(tmp_path / "t.csv", ["a", "colour", "label"], rows)
    with pytest.raises(DataError) as info:
        load_dataset(config(path, task="binary"))
    assert_data_error(info, str(path), "column 'colour'", "'red'", "line 2", "data.categorical")


def test_categorical_must_be_a_feature(tmp_path):
    rows = [[float(i), ["red", "green"][i % 2], i % 2] for i in range(30)]
    path = write_csv(tmp_path / "t.csv", ["a", "colour", "label"], rows)
    with pytest.raises(DataError, match="'colour'"):
        load_dataset(config(path, task="binary", features=["a"], categorical=["colour"]))


def test_one_hot_uses_training_categories_only(tmp_path):
    colours = ["red", "green", "blue"]
    train_rows = [[float(i), colours[i % 3], i % 2] for i in range(30)]
    # The test file adds a category never seen in training ("mauve", 2 rows) and one missing from it.
    test_rows = [[1.0, "mauve", 0], [2.0, "red", 1], [3.0, "mauve", 1], [4.0, "blue", 0]]
    train = write_csv(tmp_path / "train.csv", ["a", "colour", "label"], train_rows)
    test = write_csv(tmp_path / "test.csv", ["a", "colour", "label"], test_rows)
    with pytest.warns(MLPWarning, match=r"2 rows have a 'colour' category never seen in training \('mauve'\)"):
        dataset = load_dataset(config(train, task="binary", test=str(test), categorical=["colour"]))
    prep = dataset.prep
    assert prep.categorical == {"colour": ["blue", "green", "red"]}
    assert prep.feature_names == ["a", "colour=blue", "colour=green", "colour=red"]
    # One-hot columns are neither centred nor scaled; the numeric column is.
    assert prep.mean[1:] == [0.0, 0.0, 0.0] and prep.scale[1:] == [1.0, 1.0, 1.0]
    test_hot = dataset.test.x[:, 1:].numpy()
    np.testing.assert_array_equal(test_hot, [[0, 0, 0], [0, 0, 1], [0, 0, 0], [1, 0, 0]])
    for split, source in ((dataset.train, train_rows), (dataset.val, train_rows)):
        expected = np.array([[c == source[r][1] for c in ("blue", "green", "red")] for r in split.rows], dtype=np.float32)
        np.testing.assert_array_equal(split.x[:, 1:].numpy(), expected)


def test_categories_are_learned_from_the_training_split_not_the_whole_file(tmp_path):
    # "rare" sits in exactly one row; wherever the split puts it, it is a category iff that row is in training.
    rows = [[float(i), "rare" if i == 17 else ["x", "y"][i % 2], i % 2] for i in range(40)]
    path = write_csv(tmp_path / "t.csv", ["a", "kind", "label"], rows)
    seen_in_train = set()
    for seed in range(8):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MLPWarning)
            dataset = load_dataset(config(path, task="binary", categorical=["kind"], seed=seed))
        in_train = 17 in set(dataset.train.rows.tolist())
        seen_in_train.add(in_train)
        assert ("rare" in dataset.prep.categorical["kind"]) == in_train
    assert seen_in_train == {True, False}  # both cases were exercised


# ---------------------------------------------------------------------------------------------- missing values


def rows_with_holes():
    rows = [[float(i), float(2 * i), i % 2] for i in range(40)]
    rows[3][0] = None  # line 5
    rows[1][1] = None  # line 3
    rows[2][1] = None  # line 4
    return rows


def test_missing_error_names_columns_and_lines(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["a", "b", "label"], rows_with_holes())
    with pytest.raises(DataError) as info:
        load_dataset(config(path, task="binary"))  # missing: error is the default
    assert_data_error(info, str(path), "column 'a' at line 5;", "column 'b' at lines 3, 4;", "data.missing")


def test_missing_error_lists_only_the_first_lines(tmp_path):
    rows = [[None if i % 2 else float(i), i % 2] for i in range(40)]
    path = write_csv(tmp_path / "t.csv", ["a", "label"], rows)
    with pytest.raises(DataError) as info:
        load_dataset(config(path, task="binary"))
    assert_data_error(info, "column 'a' at lines 3, 5, 7, 9, 11 and 15 more")


def test_missing_text_and_target_values_are_errors_too(tmp_path):
    rows = [[float(i), ["u", "v"][i % 2], ["p", "q"][i % 2]] for i in range(20)]
    rows[4][1] = None  # empty categorical cell, line 6
    rows[6][2] = None  # empty target cell, line 8
    path = write_csv(tmp_path / "t.csv", ["a", "kind", "label"], rows)
    with pytest.raises(DataError) as info:
        load_dataset(config(path, task="binary", categorical=["kind"]))
    assert_data_error(info, str(path), "column 'kind' at line 6;", "target at line 8;")


def test_missing_drop_removes_rows_with_a_warning(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["a", "b", "label"], rows_with_holes())
    with pytest.warns(MLPWarning, match="dropped 3 rows"):
        dataset = load_dataset(config(path, task="binary", missing="drop"))
    kept = np.concatenate([s.rows for s in splits(dataset).values()])
    assert sorted(kept.tolist()) == [r for r in range(40) if r not in (1, 2, 3)]
    assert not any(torch.isnan(s.x).any() for s in splits(dataset).values())


def test_missing_target_rows_are_dropped_under_mean(tmp_path):
    rows = [[float(i), i % 2] for i in range(30)]
    rows[5][1] = None
    path = write_csv(tmp_path / "t.csv", ["a", "label"], rows)
    with pytest.warns(MLPWarning, match="dropped 1 rows with a missing target"):
        dataset = load_dataset(config(path, task="binary", missing="mean"))
    assert 5 not in np.concatenate([s.rows for s in splits(dataset).values()])


def test_missing_mean_imputes_the_training_split_means(tmp_path):
    n = 60
    values = numeric_rows(n, seed=4, k=2)
    holes = {0: [2, 11, 23, 37, 50], 1: [5, 6, 44]}
    rows = [[float(values[i, 0]), float(values[i, 1]), i % 3] for i in range(n)]
    for column, positions in holes.items():
        for r in positions:
            rows[r][column] = None
    path = write_csv(tmp_path / "t.csv", ["a", "b", "label"], rows)
    dataset = load_dataset(config(path, missing="mean", standardize=False, val_fraction=0.2))

    raw = np.array([[np.nan if v is None else v for v in row[:2]] for row in rows], dtype=np.float32)
    train_means = np.nanmean(raw[dataset.train.rows].astype(np.float64), axis=0)
    whole_means = np.nanmean(raw.astype(np.float64), axis=0)
    assert not np.allclose(train_means, whole_means)  # the check below tells the two apart
    assert dataset.prep.impute == pytest.approx({"a": train_means[0], "b": train_means[1]}, rel=1e-6)
    for split in splits(dataset).values():
        expected = raw[split.rows].copy()
        for j in range(2):
            expected[np.isnan(expected[:, j]), j] = train_means[j]
        np.testing.assert_allclose(split.x.numpy(), expected, rtol=1e-6)
    held_holes = [r for p in holes.values() for r in p if r not in set(dataset.train.rows.tolist())]
    assert held_holes, "some missing cells should land in validation or test"


# ---------------------------------------------------------------------------------------------- labels


LABEL_SETS = {
    "integers with gaps": [7, 1, 2, 3, 4, 5],
    "strings": ["pear", "apple", "fig"],
    "booleans": [True, False],
}


@pytest.mark.parametrize("kind", LABEL_SETS)
def test_labels_map_to_sorted_indices_and_round_trip(tmp_path, kind):
    labels = LABEL_SETS[kind]
    path, _, y = classification_file(tmp_path, labels, n_per_class=12)
    dataset = load_dataset(config(path))
    prep = dataset.prep
    assert prep.labels == sorted(labels)
    assert [type(v) for v in prep.labels] == [type(v) for v in sorted(labels)]
    assert prep.n_outputs == len(labels)
    seen = []
    for split in splits(dataset).values():
        assert split.y.dtype == torch.int64
        assert [prep.labels[i] for i in split.y.tolist()] == [y[r] for r in split.rows]
        seen.extend(split.rows.tolist())
    assert sorted(seen) == list(range(len(y)))


def test_binary_labels_are_float_zero_one(tmp_path):
    path, _, y = classification_file(tmp_path, ["yes", "no"], n_per_class=15)
    dataset = load_dataset(config(path, task="binary"))
    assert dataset.prep.labels == ["no", "yes"] and dataset.n_outputs == 1
    for split in splits(dataset).values():
        assert split.y.dtype == torch.float32
        np.testing.assert_array_equal(split.y.numpy(), [float(y[r] == "yes") for r in split.rows])


def test_binary_needs_exactly_two_classes(tmp_path):
    path, _, _ = classification_file(tmp_path, ["a", "b", "c"], n_per_class=[5, 6, 7])
    with pytest.raises(DataError) as info:
        load_dataset(config(path, task="binary"))
    assert_data_error(info, str(path), "exactly two classes", "has 3", "'a' (5 rows)", "'b' (6 rows)", "'c' (7 rows)", "multiclass")


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_one_class_only_is_an_error(tmp_path, task):
    path, _, _ = classification_file(tmp_path, [4], n_per_class=10)
    with pytest.raises(DataError) as info:
        load_dataset(config(path, task=task))
    assert_data_error(info, str(path), "one class only", "4 (10 rows)")


def test_a_class_with_a_single_row_is_an_error(tmp_path):
    path, _, _ = classification_file(tmp_path, ["a", "b", "lonely"], n_per_class=[10, 10, 1])
    with pytest.raises(DataError) as info:
        load_dataset(config(path))
    assert_data_error(info, str(path), "'lonely'", "single row")


def test_non_numeric_regression_target_is_an_error(tmp_path):
    path, _, _ = classification_file(tmp_path, ["low", "high"], n_per_class=10)
    with pytest.raises(DataError) as info:
        load_dataset(config(path, task="regression"))
    assert_data_error(info, str(path), "regression target 'label' is not numeric", "task: binary or multiclass")


def test_non_integer_float_classification_target_is_an_error(tmp_path):
    rows = [[float(i), [0.0, 1.0, 2.5][i % 3]] for i in range(30)]
    path = write_csv(tmp_path / "t.csv", ["a", "label"], rows)
    with pytest.raises(DataError) as info:
        load_dataset(config(path))
    assert_data_error(info, str(path), "non-integer", "2.5", "task: regression")


def test_integral_floats_are_accepted_as_class_labels(tmp_path):
    rows = [[float(i), [0.0, 1.0, 3.0][i % 3]] for i in range(30)]
    path = write_csv(tmp_path / "t.csv", ["a", "label"], rows)
    dataset = load_dataset(config(path))
    assert dataset.prep.labels == [0, 1, 3] and all(type(v) is int for v in dataset.prep.labels)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    labels=st.one_of(
        st.sets(st.integers(-1000, 1000), min_size=2, max_size=6),
        st.sets(st.text(alphabet="abcxyzABC_", min_size=1, max_size=6), min_size=2, max_size=6),
    ),
    seed=st.integers(0, 2**16),
)
def test_label_round_trip_property(tmp_path, labels, seed):
    labels = list(labels)
    path, _, y = classification_file(tmp_path, labels, n_per_class=4, seed=seed, name=f"p{seed}.csv")
    dataset = load_dataset(config(path, seed=seed))
    assert dataset.prep.labels == sorted(labels)
    for split in splits(dataset).values():
        assert [dataset.prep.labels[i] for i in split.y.tolist()] == [y[r] for r in split.rows]


# ---------------------------------------------------------------------------------------------- splits


def all_rows(dataset) -> list[int]:
    return sorted(r for s in splits(dataset).values() for r in s.rows.tolist())


def test_test_fraction_and_val_fraction_sizes_for_regression(tmp_path):
    path, _, _ = regression_file(tmp_path, n=200)
    dataset = load_dataset(config(path, target="target", task="regression", test_fraction=0.25, val_fraction=0.2))
    assert len(dataset.test) == 50
    assert len(dataset.val) == 30  # 20% of the 150 training rows
    assert len(dataset.train) == 120
    assert all_rows(dataset) == list(range(200))


def test_val_fraction_zero_gives_no_validation(tmp_path):
    path, _, _ = regression_file(tmp_path, n=50)
    dataset = load_dataset(config(path, target="target", task="regression", val_fraction=0))
    assert dataset.val is None
    assert len(dataset.train) == 40 and len(dataset.test) == 10


def test_test_file_replaces_test_fraction(tmp_path):
    train, _, _ = classification_file(tmp_path, ["a", "b"], n_per_class=30, name="train.csv")
    test, _, y_test = classification_file(tmp_path, ["a", "b"], n_per_class=7, seed=1, name="test.csv")
    dataset = load_dataset(config(train, test=str(test), test_fraction=0.5, val_fraction=0.1))
    assert len(dataset.test) == 14 and dataset.test.rows.tolist() == list(range(14))
    assert [dataset.prep.labels[i] for i in dataset.test.y.tolist()] == y_test
    assert len(dataset.train) + len(dataset.val) == 60  # nothing of the training file went to test
    assert len(dataset.val) == 6


def test_test_file_must_have_the_features_and_target(tmp_path):
    train, _, _ = classification_file(tmp_path, ["a", "b"], name="train.csv")
    test = write_csv(tmp_path / "test.csv", ["a", "b", "label"], [[1.0, 2.0, "a"], [2.0, 3.0, "b"]])
    with pytest.raises(DataError) as info:
        load_dataset(config(train, test=str(test)))
    assert_data_error(info, str(test), "'c'")


def test_classification_splits_are_stratified(tmp_path):
    counts = {"a": 100, "b": 37, "c": 13, "d": 50}
    path, _, y = classification_file(tmp_path, list(counts), n_per_class=list(counts.values()))
    test_fraction, val_fraction = 0.3, 0.15
    dataset = load_dataset(config(path, test_fraction=test_fraction, val_fraction=val_fraction, seed=5))
    for label, n in counts.items():
        in_split = {name: sum(y[r] == label for r in s.rows) for name, s in splits(dataset).items()}
        assert in_split["test"] == pytest.approx(n * test_fraction, abs=1)
        assert in_split["val"] == pytest.approx(n * (1 - test_fraction) * val_fraction, abs=1)
        assert sum(in_split.values()) == n


def test_splits_are_seeded(tmp_path):
    path, _, _ = classification_file(tmp_path, [0, 1, 2], n_per_class=30)

    def rows(seed):
        dataset = load_dataset(config(path, seed=seed))
        return [s.rows.tolist() for s in (dataset.train, dataset.val, dataset.test)], dataset

    first, a = rows(11)
    again, b = rows(11)
    other, _ = rows(12)
    assert first == again
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert first[2] != other[2] and first[1] != other[1]


def test_no_row_is_in_two_splits(tmp_path):
    path, _, _ = classification_file(tmp_path, ["a", "b"], n_per_class=[40, 21])
    for seed in range(5):
        dataset = load_dataset(config(path, seed=seed, val_fraction=0.2))
        parts = [set(s.rows.tolist()) for s in splits(dataset).values()]
        assert len(parts) == 3
        assert all(not (p & q) for i, p in enumerate(parts) for q in parts[i + 1 :])
        assert set().union(*parts) == set(range(61))


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(2, 400),
    fraction=st.floats(0.01, 0.95),
    seed=st.integers(0, 2**32 - 1),
    classes=st.integers(0, 5),
)
def test_split_indices_partition_property(n, fraction, seed, classes):
    strata = None if classes == 0 else np.random.default_rng(seed).integers(0, classes, size=n)
    kept, held = split_indices(strata, n, fraction, seed, stream=1)
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(n))
    assert len(np.intersect1d(kept, held)) == 0
    assert np.all(np.diff(kept) > 0) and np.all(np.diff(held) > 0)
    if strata is None:
        assert len(held) == min(max(round(n * fraction), 1), n - 1)
        assert len(kept) >= 1
    else:
        for value in np.unique(strata):
            members = int((strata == value).sum())
            held_here = int((strata[held] == value).sum())
            assert abs(held_here - members * fraction) <= 1
            assert held_here <= members - 1  # every class keeps a row
    again = split_indices(strata, n, fraction, seed, stream=1)
    assert np.array_equal(again[1], held)


# ---------------------------------------------------------------------------------------------- scaling


def test_standardization_uses_training_statistics_only(tmp_path):
    path, x, _ = classification_file(tmp_path, ["a", "b"], n_per_class=[60, 40])
    dataset = load_dataset(config(path, task="binary", val_fraction=0.2))
    raw = x.astype(np.float32)
    train = raw[dataset.train.rows].astype(np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0, ddof=0)
    np.testing.assert_allclose(dataset.prep.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(dataset.prep.scale, std, rtol=1e-6)
    assert not np.allclose(std, raw.astype(np.float64).std(axis=0), rtol=1e-4)  # the file's std is different
    for split in splits(dataset).values():
        np.testing.assert_allclose(split.x.numpy(), (raw[split.rows] - mean) / std, rtol=1e-4, atol=1e-5)
    train_x = dataset.train.x.numpy().astype(np.float64)
    np.testing.assert_allclose(train_x.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(train_x.std(axis=0), 1, atol=1e-5)


def test_standardize_false_keeps_raw_values(tmp_path):
    path, x, _ = regression_file(tmp_path, n=40)
    dataset = load_dataset(config(path, target="target", task="regression", standardize=False))
    assert dataset.prep.mean is None and dataset.prep.scale is None
    for split in splits(dataset).values():
        np.testing.assert_array_equal(split.x.numpy(), x[split.rows].astype(np.float32))


@pytest.mark.parametrize("value", [0.0, 1.0, -3.25, 123456.789])
def test_constant_columns_stay_finite(tmp_path, value):
    rows = [[value, float(i), i % 2] for i in range(50)]
    path = write_csv(tmp_path / "t.csv", ["k", "a", "label"], rows)
    dataset = load_dataset(config(path, task="binary"))
    assert dataset.prep.scale[0] == 1.0
    for split in splits(dataset).values():
        assert torch.isfinite(split.x).all()
        np.testing.assert_array_equal(split.x[:, 0].numpy(), 0.0)


def test_standardize_target_for_regression(tmp_path):
    path, _, y = regression_file(tmp_path, n=120)
    dataset = load_dataset(config(path, target="target", task="regression", standardize_target=True, val_fraction=0.2))
    prep = dataset.prep
    train_y = y[dataset.train.rows]
    assert prep.target_mean == pytest.approx(train_y.mean(), rel=1e-12)
    assert prep.target_scale == pytest.approx(train_y.std(ddof=0), rel=1e-12)
    assert prep.target_mean != pytest.approx(y.mean(), rel=1e-6)
    np.testing.assert_allclose(dataset.train.y.numpy().mean(), 0, atol=1e-5)
    np.testing.assert_allclose(dataset.train.y.numpy().std(), 1, atol=1e-5)
    for split in splits(dataset).values():
        assert split.y.dtype == torch.float32
        np.testing.assert_allclose(split.y.numpy(), (y[split.rows] - train_y.mean()) / train_y.std(), rtol=1e-5, atol=1e-6)
        back = prep.unscale_target(split.y)  # tensors
        assert isinstance(back, torch.Tensor)
        np.testing.assert_allclose(back.numpy(), y[split.rows], rtol=1e-5)
        np.testing.assert_allclose(prep.unscale_target(split.y.numpy()), y[split.rows], rtol=1e-5)  # numpy


def test_regression_target_is_unscaled_without_standardize_target(tmp_path):
    path, _, y = regression_file(tmp_path, n=30)
    # Since #12 the default is on for regression; turning it off keeps the target as it is.
    dataset = load_dataset(config(path, target="target", task="regression", standardize_target=False))
    assert dataset.prep.target_mean is None
    for split in splits(dataset).values():
        np.testing.assert_array_equal(split.y.numpy(), y[split.rows].astype(np.float32))
        assert dataset.prep.unscale_target(split.y) is split.y


# ---------------------------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize(
    "task, labels, y_dtype",
    [("multiclass", [0, 1, 2], torch.int64), ("binary", ["n", "y"], torch.float32), ("regression", None, torch.float32)],
)
def test_dtypes(tmp_path, task, labels, y_dtype):
    if task == "regression":
        path, _, _ = regression_file(tmp_path, n=40)
        dataset = load_dataset(config(path, target="target", task=task))
    else:
        path, _, _ = classification_file(tmp_path, labels, n_per_class=15)
        dataset = load_dataset(config(path, task=task))
    for split in splits(dataset).values():
        assert split.x.dtype == torch.float32
        assert split.y.dtype == y_dtype
        assert split.x.shape == (len(split), 3) and split.y.shape == (len(split),)


def test_parquet_float64_and_int_columns_become_float32(tmp_path):
    path = tmp_path / "t.parquet"
    n = 30
    pq.write_table(
        pa.table({"f": pa.array(np.linspace(0, 1, n)), "i": pa.array(np.arange(n), pa.int32()), "label": np.arange(n) % 2}),
        str(path),
    )
    dataset = load_dataset(config(path))
    assert dataset.train.x.dtype == torch.float32 and dataset.train.y.dtype == torch.int64


# ---------------------------------------------------------------------------------------------- reading for a model


def trained_prep(tmp_path) -> tuple[Preprocessor, list[list]]:
    rows = [[float(i), ["u", "v", "w"][i % 3], float(i % 5), ["lo", "hi"][i % 2]] for i in range(40)]
    path = write_csv(tmp_path / "train.csv", ["a", "kind", "b", "label"], rows)
    prep = load_dataset(config(path, task="binary", categorical=["kind"])).prep
    return Preprocessor.from_dict(prep.to_dict()), rows  # as a checkpoint would carry it


def test_load_for_model_reproduces_training_inputs(tmp_path):
    prep, rows = trained_prep(tmp_path)
    new_rows = [[3.0, "w", 1.0, "hi"], [10.0, "u", 4.0, "lo"]]
    # Columns in another order plus an extra one: matched by name.
    path = write_csv(tmp_path / "new.csv", ["label", "b", "extra", "kind", "a"], [[r[3], r[2], 9, r[1], r[0]] for r in new_rows])
    frame = load_for_model(prep, path, target_required=True)
    x = prep.inputs(frame)
    mean, scale = np.array(prep.mean), np.array(prep.scale)
    expected = np.array([[3.0, 0, 0, 1, 1.0], [10.0, 1, 0, 0, 4.0]])
    np.testing.assert_allclose(x, (expected - mean) / scale, rtol=1e-5)
    np.testing.assert_array_equal(prep.targets(frame), [0.0, 1.0])  # labels sorted: ["hi", "lo"]


def test_load_for_model_without_target(tmp_path):
    prep, _ = trained_prep(tmp_path)
    path = write_csv(tmp_path / "new.csv", ["a", "kind", "b"], [[1.0, "u", 2.0]])
    frame = load_for_model(prep, path, target_required=False)
    assert frame.target is None and prep.inputs(frame).shape == (1, 5)


def test_load_for_model_missing_column(tmp_path):
    prep, _ = trained_prep(tmp_path)
    path = write_csv(tmp_path / "new.csv", ["a", "kind", "bee", "label"], [[1.0, "u", 2.0, "hi"]])
    with pytest.raises(DataError) as info:
        load_for_model(prep, path, target_required=True)
    assert_data_error(info, str(path), "expects columns 'b'", "found instead: 'bee'", "trained on: a, kind, b")


def test_load_for_model_missing_target_when_required(tmp_path):
    prep, _ = trained_prep(tmp_path)
    path = write_csv(tmp_path / "new.csv", ["a", "kind", "b"], [[1.0, "u", 2.0]])
    with pytest.raises(DataError) as info:
        load_for_model(prep, path, target_required=True)
    assert_data_error(info, str(path), "'label'")


def test_load_for_model_unseen_labels(tmp_path):
    prep, _ = trained_prep(tmp_path)
    rows = [[1.0, "u", 2.0, "hi"], [2.0, "v", 2.0, "medium"], [3.0, "w", 2.0, "zero"], [4.0, "u", 2.0, "medium"]]
    path = write_csv(tmp_path / "new.csv", ["a", "kind", "b", "label"], rows)
    frame = load_for_model(prep, path, target_required=True)
    with pytest.raises(DataError) as info:
        prep.targets(frame)
    assert_data_error(info, str(path), "never seen in training", "'medium', 'zero'", "lines 3, 4, 5", "'hi', 'lo'")


def test_load_for_model_applies_the_missing_policy(tmp_path):
    prep, _ = trained_prep(tmp_path)
    path = write_csv(tmp_path / "new.csv", ["a", "kind", "b"], [[1.0, "u", 2.0], [None, "v", 2.0]])
    with pytest.raises(DataError) as info:
        load_for_model(prep, path, target_required=False)
    assert_data_error(info, str(path), "column 'a' at line 3;")


def test_missing_categorical_under_mean_is_all_zeros_without_warning(tmp_path):
    rows = [[float(i), ["u", "v"][i % 2], i % 2] for i in range(20)]
    rows[3][1] = None
    path = write_csv(tmp_path / "t.csv", ["a", "kind", "label"], rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MLPWarning)
        dataset = load_dataset(config(path, task="binary", categorical=["kind"], missing="mean", test_fraction=0.5))
    for split in splits(dataset).values():
        for i, r in enumerate(split.rows):
            expected = [0, 0] if r == 3 else [rows[r][1] == "u", rows[r][1] == "v"]
            np.testing.assert_array_equal(split.x[i, 1:].numpy(), expected)


# ---------------------------------------------------------------------------------------------- real data


SATIMAGE = Path(__file__).resolve().parent.parent / "data" / "satimage"


@pytest.mark.skipif(not (SATIMAGE / "satimage_train.csv").exists(), reason="satimage not shipped here")
def test_satimage_label_codes_with_a_gap_round_trip():
    import csv

    with open(SATIMAGE / "satimage_train.csv", newline="") as handle:
        raw = [int(row["label"]) for row in csv.DictReader(handle)]
    dataset = load_dataset(
        config(SATIMAGE / "satimage_train.csv", test=str(SATIMAGE / "satimage_test.csv"), val_fraction=0.1)
    )
    assert dataset.prep.labels == [1, 2, 3, 4, 5, 7]
    assert dataset.n_inputs == 36 and len(dataset.test) == 2000
    assert len(dataset.train) + len(dataset.val) == len(raw) == 4435
    for split in (dataset.train, dataset.val):
        assert [dataset.prep.labels[i] for i in split.y.tolist()] == [raw[r] for r in split.rows]


def test_infinite_feature_value_is_an_error_naming_column_and_line(tmp_path):
    rows = [[float(i), float(i), i % 2] for i in range(10)]
    rows[4][1] = "inf"
    path = write_csv(tmp_path / "t.csv", ["a", "b", "label"], rows)
    with pytest.raises(DataError) as info:
        load_dataset(config(path, task="binary", missing="mean"))
    assert_data_error(info, str(path), "column 'b'", "infinite", "line 6")


def test_constant_regression_target_standardizes_without_dividing_by_zero(tmp_path):
    rows = [[float(i), 4.5] for i in range(20)]
    path = write_csv(tmp_path / "t.csv", ["a", "target"], rows)
    dataset = load_dataset(config(path, target="target", task="regression", standardize_target=True))
    assert dataset.prep.target_mean == 4.5 and dataset.prep.target_scale == 1.0
    for split in splits(dataset).values():
        np.testing.assert_array_equal(split.y.numpy(), 0.0)
        np.testing.assert_array_equal(dataset.prep.unscale_target(split.y).numpy(), 4.5)


def test_tiny_stratified_split_still_holds_out_a_row(tmp_path):
    from mlp_cli.config import load_config as _load
    from mlp_cli.data import load_dataset as _dataset

    from conftest import write_config as _write_config, write_csv as _write_csv

    _write_csv(tmp_path / "tiny.csv", {"a": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "label": ["p", "p", "p", "q", "q", "q"]})
    config = _write_config(tmp_path / "tiny.yaml", {"task": "binary", "data": {"train": "tiny.csv", "target": "label", "val_fraction": 0}})
    data = _dataset(_load(config))
    assert len(data.test) >= 1 and len(data.train) + len(data.test) == 6


def test_standardized_target_keeps_precision_far_from_zero(tmp_path):
    from mlp_cli.config import load_config as _load
    from mlp_cli.data import load_dataset as _dataset

    from conftest import write_config as _write_config, write_csv as _write_csv

    rng = np.random.default_rng(0)
    y = 1e6 + rng.normal(0, 0.05, 400)
    _write_csv(tmp_path / "far.csv", {"a": rng.normal(size=400), "y": y})
    config = _write_config(tmp_path / "far.yaml", {"task": "regression", "data": {"train": "far.csv", "target": "y", "standardize_target": True}})
    data = _dataset(_load(config))
    assert len(np.unique(data.train.y.numpy())) > 200  # float32 before centring left only a handful of values


@pytest.mark.parametrize("missing", ["error", "mean"])
def test_one_file_as_train_and_test_is_read_prepared_and_held_once(tmp_path, missing):
    """With nothing held out for validation, its test split is its training split: the same object, before and
    after moving to a device, with the tensors a separately read copy of the file gives."""
    path, _, _ = classification_file(tmp_path, [1, 2, 3], n_per_class=20)
    copy = tmp_path / "copy.csv"
    copy.write_bytes(path.read_bytes())
    dataset = load_dataset(config(path, test=str(path), val_fraction=0, missing=missing))
    assert dataset.test is dataset.train
    moved = dataset.to("cpu")
    assert moved.test is moved.train
    separate = load_dataset(config(path, test=str(copy), val_fraction=0, missing=missing))
    assert separate.test is not separate.train
    assert torch.equal(separate.test.x, dataset.test.x) and torch.equal(separate.test.y, dataset.test.y)
    held_out = load_dataset(config(path, test=str(path), val_fraction=0.2))
    assert held_out.test is not held_out.train and len(held_out.test) == 60 and len(held_out.train) == 48


def test_read_ahead_gives_prepare_arrays_result_and_its_warnings_in_the_asking_thread(tmp_path):
    import threading

    from mlp_cli.data.load import ReadAhead, prepare_arrays

    path = tmp_path / "semi.csv"
    path.write_text("a;b;label\n" + "".join(f"{i};{i % 3}.5;{i % 2}\n" for i in range(20)))
    cfg = config(path)
    shown: list = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *rest, **kw: shown.append((str(message), threading.current_thread().name))
        ahead = ReadAhead.start(cfg)
        assert ahead is not None
        ahead._thread.join()
        assert shown == []  # held until asked
        prepared = ahead.result()
        assert len(shown) == 1 and "semicolon" in shown[0][0] and shown[0][1] == threading.current_thread().name
        assert warnings.showwarning is not ahead._hold  # the holder is gone once the arrays are taken
    with pytest.warns(MLPWarning, match="semicolon"):
        expected = prepare_arrays(cfg)
    assert prepared.prep.features == ["a", "b"] and sum(len(s.x) for s in (prepared.train, prepared.val, prepared.test) if s is not None) == 20
    for name in ("train", "val", "test"):
        a, b = getattr(prepared, name), getattr(expected, name)
        assert (a is None) == (b is None)
        if a is not None:
            assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and np.array_equal(a.rows, b.rows)


def test_read_ahead_raises_the_readers_error_when_asked(tmp_path):
    from mlp_cli.data import ReadAhead

    ahead = ReadAhead.start(config(tmp_path / "absent.csv"))
    assert ahead is not None
    with pytest.raises(DataError, match="absent.csv"):
        ahead.result()


def test_read_ahead_wait_gives_up_when_asked(tmp_path, monkeypatch):
    """Ctrl-C during a long parse: the trainer stops waiting at once (the daemon thread is left behind)."""
    import threading
    import time

    from mlp_cli.data import load
    from mlp_cli.data.load import ReadAhead

    release = threading.Event()
    monkeypatch.setattr(load, "prepare_arrays", lambda config: release.wait(30))
    path, _, _ = classification_file(tmp_path, ["a", "b"])
    ahead = ReadAhead.start(config(path))
    started = time.perf_counter()
    ahead.wait(lambda: True)
    assert time.perf_counter() - started < 5 and ahead._thread.is_alive()
    release.set()
    ahead.wait(lambda: False)
    assert not ahead._thread.is_alive()
