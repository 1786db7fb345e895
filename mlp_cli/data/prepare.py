"""The fitted `Preprocessor` (label map, categories, imputation, one-hot, scaling) and the in-memory splits.

Everything fitted (label map, categories, means, scales) is fitted on the training split only and kept in a
plain-data `Preprocessor`, which a checkpoint carries so that predictions on a new file get the same treatment.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlp_cli.config import Config
from mlp_cli.data.groups import group_split_indices
from mlp_cli.data.readers import Frame, TextFormat, read_table
from mlp_cli.data.rules import (
    check_regression_target,
    class_labels,
    column_stats,
    count_labels,
    feature_scaling,
    impute_means,
    label_values,
    numeric_codes,
    sort_key,
    standardizes_target,
    target_scaling,
)
from mlp_cli.errors import DataError, MLPWarning
from mlp_cli.tasks import TASKS

# ---------------------------------------------------------------------------------------------- preprocessor


@dataclass
class Preprocessor:
    """The fitted transformation from a file's columns to model inputs and targets, as plain data."""

    task: str
    target: str | None
    features: list[str]  # input columns, in order
    categorical: dict[str, list[str]]  # column -> categories seen in training, one-hot in place
    missing: str
    impute: dict[str, float] = field(default_factory=dict)  # numeric column -> training mean (missing: mean)
    mean: list[float] | None = None  # per encoded column; one-hot columns keep 0 and 1
    scale: list[float] | None = None
    labels: list | None = None  # class index -> the user's label
    target_mean: float | None = None
    target_scale: float | None = None
    text: dict = field(default_factory=dict)  # how files are read: encoding, delimiter, na_values (TextFormat)

    @property
    def feature_names(self) -> list[str]:
        names: list[str] = []
        for column in self.features:
            if column in self.categorical:
                names.extend(f"{column}={category}" for category in self.categorical[column])
            else:
                names.append(column)
        return names

    @property
    def n_inputs(self) -> int:
        return len(self.feature_names)

    @property
    def n_outputs(self) -> int:
        return TASKS[self.task].width(self.labels)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict) -> Preprocessor:
        return cls(**state)

    # -- transforming

    def inputs(self, frame: Frame, scaled: bool = True) -> np.ndarray:
        """Encoded, imputed and (unless `scaled` is false) scaled float32 inputs; reuses the frame's memory."""
        numeric = frame.numeric
        if self.impute:
            for j, name in enumerate(frame.numeric_names):
                holes = np.isnan(numeric[:, j])
                if holes.any():
                    numeric[holes, j] = self.impute[name]
        if self.categorical:
            blocks, j = [], 0
            for column in self.features:
                if column in self.categorical:
                    blocks.append(self._one_hot(frame, column))
                else:
                    blocks.append(numeric[:, j : j + 1])
                    j += 1
            x = np.concatenate(blocks, axis=1).astype(np.float32, copy=False)
        else:
            x = numeric
        if scaled and self.mean is not None:
            x -= np.asarray(self.mean, dtype=np.float32)
            x /= np.asarray(self.scale, dtype=np.float32)
        return x

    def _one_hot(self, frame: Frame, column: str) -> np.ndarray:
        categories = self.categorical[column]
        lookup = {c: i for i, c in enumerate(categories)}
        values = frame.text[column]
        codes = np.array([lookup.get(v, -1) for v in values], dtype=np.int64)
        block = np.zeros((len(values), len(categories)), dtype=np.float32)
        known = codes >= 0
        block[np.flatnonzero(known), codes[known]] = 1.0
        unseen = int((~known & np.array([v is not None for v in values])).sum())
        if unseen:
            examples = sorted({v for v, k in zip(values, known, strict=True) if not k and v is not None})[:5]
            warnings.warn(
                f"{frame.origin}: {unseen} rows have a {column!r} category never seen in training "
                f"({', '.join(map(repr, examples))}); they are encoded as all zeros",
                MLPWarning,
                stacklevel=2,
            )
        return block

    def targets(self, frame: Frame) -> np.ndarray:
        """int64 class indices, float32 0/1 (binary) or float32 values (regression, scaled if fitted so)."""
        if frame.target is None:
            raise DataError(f"{frame.origin}: target column {self.target!r} not found")
        if not TASKS[self.task].classes:
            if self.target_mean is None:
                return frame.target.astype(np.float32)
            # Centre in float64 first: a target like 1e6 ± 0.05 would lose its variation in float32.
            assert self.target_scale is not None  # fitted together with target_mean
            return ((frame.target.astype(np.float64) - self.target_mean) / self.target_scale).astype(np.float32)
        assert self.labels is not None  # a classification task is fitted with its labels
        codes = numeric_codes(frame.target, self.labels)
        if codes is None:
            values = label_values(frame.target, frame.origin, self.target)
            lookup = {label: i for i, label in enumerate(self.labels)}
            codes = np.array([lookup.get(v, -1) for v in values], dtype=np.int64)
        if (codes < 0).any():
            values = label_values(frame.target, frame.origin, self.target)
            unseen = sorted({v for v, c in zip(values, codes, strict=True) if c < 0}, key=sort_key)
            first = np.flatnonzero(codes < 0)
            raise DataError(
                f"{frame.origin}: target {self.target!r} has labels never seen in training: "
                f"{', '.join(map(repr, unseen))} (at {frame.rows_text(first)}); the model knows {', '.join(map(repr, self.labels))}"
            )
        return codes.astype(TASKS[self.task].target_dtype, copy=False)

    def unscale_target(self, y):
        """Regression outputs back in the target's own units (works on numpy arrays and tensors)."""
        if self.target_mean is None:
            return y
        return y * self.target_scale + self.target_mean


# ---------------------------------------------------------------------------------------------- dataset


@dataclass
class Split:
    x: Any  # float32 tensor (rows, inputs)
    y: Any  # int64 class indices or float32 targets
    rows: np.ndarray  # 0-based file rows, for messages and for keeping predictions in input order

    def __len__(self) -> int:
        return len(self.rows)

    def to(self, device) -> Split:
        return Split(self.x.to(device, non_blocking=True), self.y.to(device, non_blocking=True), self.rows)

    def batches(self, size: int):
        for start in range(0, len(self.rows), size):
            yield self.x[start : start + size], self.y[start : start + size]

    def head(self, n: int):
        return self.x[:n], self.y[:n]

    def shard(self, world) -> Split:
        """This rank's contiguous share of the rows, for a sharded evaluation."""
        from mlp_cli.distributed import shard_bounds

        lo, hi = shard_bounds(len(self.rows), world)
        return Split(self.x[lo:hi], self.y[lo:hi], self.rows[lo:hi])


@dataclass
class Dataset:
    """Train/validation/test tensors plus the fitted preprocessor; `.to(device)` moves them in one call."""

    train: Split
    val: Split | None
    test: Split | None
    prep: Preprocessor

    @property
    def n_inputs(self) -> int:
        return self.prep.n_inputs

    @property
    def n_outputs(self) -> int:
        return self.prep.n_outputs

    def to(self, device) -> Dataset:
        move = lambda split: None if split is None else split.to(device)  # noqa: E731
        train = self.train.to(device)
        return Dataset(train, move(self.val), train if self.test is self.train else move(self.test), self.prep)


@dataclass
class SplitArrays:
    """A split before torch: float32 inputs, targets as Split.y holds them, and the rows' file positions."""

    x: np.ndarray
    y: np.ndarray
    rows: np.ndarray


def split_arrays(prep: Preprocessor, frame: Frame, x: np.ndarray | None = None) -> SplitArrays:
    x = prep.inputs(frame) if x is None else x
    assert frame.rows is not None  # Frame.__post_init__ fills rows
    return SplitArrays(x, prep.targets(frame), frame.rows)


def as_split(arrays: SplitArrays) -> Split:
    """The arrays as tensors, sharing their memory."""
    import torch

    return Split(torch.from_numpy(arrays.x), torch.from_numpy(arrays.y), arrays.rows)


def to_split(prep: Preprocessor, frame: Frame, x: np.ndarray | None = None) -> Split:
    return as_split(split_arrays(prep, frame, x))


# ---------------------------------------------------------------------------------------------- splitting


def split_indices(strata: np.ndarray | None, n: int, fraction: float, seed: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) row positions; per class when `strata` is given, so each class keeps its share."""
    if fraction <= 0:
        return np.arange(n), np.array([], dtype=np.int64)
    rng = np.random.default_rng([seed, stream])
    if strata is None:
        order = rng.permutation(n)
        k = min(max(int(round(n * fraction)), 1), n - 1)
        return np.sort(order[k:]), np.sort(order[:k])
    held = []
    largest: np.ndarray | None = None
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        rng.shuffle(members)
        k = min(int(round(len(members) * fraction)), len(members) - 1)
        held.append(members[:k])
        if largest is None or len(members) > len(largest):
            largest = members
    assert largest is not None  # np.unique of a non-empty strata array gives at least one class
    if not sum(len(h) for h in held) and len(largest) > 1:
        # Per-class rounding gave nothing; a split that was asked for gets at least one row.
        held.append(largest[:1])
    held_rows = np.sort(np.concatenate(held))
    kept = np.setdiff1d(np.arange(n), held_rows, assume_unique=True)
    return kept, held_rows


def split_frames(config: Config, train: Frame, test: Frame | None) -> dict[str, Frame | None]:
    data, seed = config.data, config.train.seed
    strata = None
    if TASKS[config.task].classes:
        labels = frame_labels(config, train)
        assert train.target is not None  # frame_labels has just read the labels from it
        strata = numeric_codes(train.target, labels)
        if strata is None or (strata < 0).any():
            lookup = {label: i for i, label in enumerate(labels)}
            strata = np.array([lookup[v] for v in label_values(train.target, train.origin, data.target or "label")])
    else:
        check_regression_target(train, data.target)
    groups = group_values(config, train) if data.group else None
    if test is None:
        if groups is not None:
            kept, held = group_split_indices(groups, strata, data.test_fraction, seed, 1, train.origin)
            groups = groups[kept]
        else:
            kept, held = split_indices(strata, len(train), data.test_fraction, seed, stream=1)
        train, test = train.take(kept), train.take(held)
        strata = None if strata is None else strata[kept]
    if len(train) < 2:
        raise DataError(f"{train.origin}: only {len(train)} training row(s); a model needs more data")
    val = None
    if data.val_fraction > 0:
        if groups is not None:
            kept, held = group_split_indices(groups, strata, data.val_fraction, seed, 2, train.origin)
        else:
            kept, held = split_indices(strata, len(train), data.val_fraction, seed, stream=2)
        if len(held):
            train, val = train.take(kept), train.take(held)
    return {"train": train, "val": val, "test": test}


def group_values(config: Config, frame: Frame) -> np.ndarray:
    """The data.group column for the frame's rows (read on its own: it is not a feature)."""
    assert config.data.train is not None and config.data.group is not None  # called only for a data.group of a file
    column = read_table(Path(config.data.train), [config.data.group], text=TextFormat.of(config.data)).column(config.data.group)
    values = np.asarray(column.to_pylist(), dtype=object)[frame.rows]
    missing = np.flatnonzero(np.array([v is None for v in values], dtype=bool))
    if len(missing):
        raise DataError(f"{frame.origin}: group column {config.data.group!r} is empty at {frame.rows_text(missing)}; every row needs a group")
    return values.astype(str) if len({type(v) for v in values}) > 1 else values


def fit(config: Config, train: Frame, features: list[str]) -> tuple[Preprocessor, np.ndarray]:
    """Learn categories, imputation means, scaling and the label map from the training split only.

    Returns the preprocessor and the training inputs it produced, so they are not computed twice.
    """
    data = config.data
    categorical = {}
    for column in data.categorical:
        seen = {v for v in train.text[column] if v is not None}
        categorical[column] = sorted(seen)
    prep = Preprocessor(config.task, data.target, features, categorical, data.missing, text=TextFormat.of(data).to_dict())
    if data.missing == "mean":
        present = ~np.isnan(train.numeric)
        sums = np.where(present, train.numeric, 0).sum(axis=0, dtype=np.float64)
        prep.impute = impute_means(train.numeric_names, sums, present.sum(axis=0))
    if TASKS[config.task].classes:
        prep.labels = frame_labels(config, train)
    x = prep.inputs(train, scaled=False)
    if data.standardize:
        one_hot = [name not in train.numeric_names for name in prep.feature_names]
        prep.mean, prep.scale = feature_scaling(*column_stats(x), unscaled=one_hot)
        x -= np.asarray(prep.mean, dtype=np.float32)
        x /= np.asarray(prep.scale, dtype=np.float32)
    if standardizes_target(config.task, data.standardize_target):
        assert train.target is not None  # the training frame is always read with its target
        y = train.target.astype(np.float64)
        prep.target_mean, prep.target_scale = target_scaling(y.mean(), y.std())
    return prep, x


def frame_labels(config: Config, frame: Frame) -> list:
    """The sorted label set of an in-memory training frame, checked against the task."""
    return class_labels(config.task, count_labels(frame, config.data.target or "label", {}), frame.origin, config.data.target)
