"""The data rules both the in-memory and the streaming path follow: what a label is, which rows a missing value
removes or refuses, and how scaling statistics become a mean and a scale."""

from __future__ import annotations

import re
import warnings

import numpy as np

from mlp_cli.data.readers import Frame
from mlp_cli.errors import DataError, MLPWarning
from mlp_cli.tasks import TASKS

# ---------------------------------------------------------------------------------------------- labels


def label_values(values: np.ndarray, origin: str, target: str | None) -> np.ndarray:
    """Raw target values as comparable Python values: integral numbers become ints, text and bools stay."""
    if values.dtype.kind == "f":
        _check_whole(values, origin, target)
        return np.array([None if np.isnan(v) else int(v) for v in values], dtype=object)
    return _text_labels(values, origin, target)


def _check_whole(values: np.ndarray, origin: str, target: str | None) -> None:
    finite = values[~np.isnan(values)]
    if np.any(finite != np.round(finite)):
        example = next(v for v in finite if v != round(v))
        raise DataError(
            f"{origin}: target {target!r} holds non-integer numbers such as {example:g}; "
            "class labels must be integers, text or booleans (for a continuous target use task: regression)"
        )


def numeric_codes(values: np.ndarray, labels: list) -> np.ndarray | None:
    """Class indices of number labels (the common case) in one vectorized lookup, -1 for a value not in `labels`;
    None when the values are not numbers or the labels not all ints, for the caller's per-value lookup."""
    if values.dtype.kind != "f" or not all(type(label) is int for label in labels):
        return None
    known = np.asarray(labels, dtype=np.float64)
    position = np.clip(np.searchsorted(known, values), 0, len(known) - 1)
    return np.where(known[position] == values, position, -1).astype(np.int64)


_INTEGER = re.compile(r"^[-+]?[0-9]+$")


def _text_labels(values: np.ndarray, origin: str, target: str | None) -> np.ndarray:
    """Labels read as text: all whole numbers ("1", "2": a Parquet string column, or a CSV column with a stray cell
    fixed) become ints, as a number column gives; whole numbers mixed with other text are refused, at training and
    at evaluation alike, since "10" and 10 would otherwise be two classes, or a label unseen in training."""
    texts = [v for v in values if isinstance(v, str)]
    if not texts:
        return values
    numeric = [v for v in texts if _INTEGER.match(v.strip())]
    if len(numeric) == len(texts):
        return np.array([int(v) if isinstance(v, str) else v for v in values], dtype=object)
    if numeric:
        words = sorted({v for v in texts if not _INTEGER.match(v.strip())})
        counts = sum(1 for v in texts if not _INTEGER.match(v.strip()))
        raise DataError(
            f"{origin}: target {target!r} mixes whole numbers ({', '.join(sorted(set(numeric), key=len)[:3])}, ...) with text "
            f"({', '.join(map(repr, words[:5]))}: {counts} row{'s' if counts != 1 else ''}); class labels must be all numbers "
            "or all text: fix those cells, or list them in data.na_values if they mean a missing value"
        )
    return values


def missing_target(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return np.isnan(values)
    return np.array([v is None for v in values], dtype=bool)


def sort_key(value):
    # bools sort False < True, numbers numerically, text alphabetically; mixed types by type name first.
    return (type(value).__name__ if not isinstance(value, (int, float)) or isinstance(value, bool) else "number", value)


def count_labels(frame: Frame, target: str, counts: dict) -> dict:
    """Add the frame's class labels to `counts` (label -> rows); called once per file or per chunk."""
    assert frame.target is not None  # training frames are read with their target
    values = frame.target
    if values.dtype.kind == "f":  # numbers: counted by np.unique, as label_values would name them (int, None for NaN)
        _check_whole(values, frame.origin, target)
        missing = np.isnan(values)
        found, found_counts = np.unique(values[~missing], return_counts=True)
        pairs: list[tuple[int | None, int]] = [(int(v), int(c)) for v, c in zip(found.tolist(), found_counts.tolist(), strict=True)]
        if missing.any():
            pairs.append((None, int(missing.sum())))
        for value, count in pairs:
            counts[value] = counts.get(value, 0) + count
        return counts
    for value in label_values(values, frame.origin, target):
        counts[value] = counts.get(value, 0) + 1
    return counts


def check_regression_target(frame: Frame, target: str | None) -> None:
    if frame.target is not None and frame.target.dtype == object:
        example = next(v for v in frame.target if v is not None)
        raise DataError(
            f"{frame.origin}: regression target {target!r} is not numeric (e.g. {example!r}); "
            "for class labels use task: binary or multiclass"
        )


def class_labels(task: str, counts: dict, origin: str, target: str | None) -> list:
    """The sorted label set from label counts of the training data, checked against the task."""
    labels = sorted(counts, key=sort_key)
    shown = ", ".join(f"{label!r} ({counts[label]} rows)" for label in labels[:20])
    if len(labels) < 2:
        raise DataError(f"{origin}: target {target!r} has one class only ({shown}); a classifier needs at least two")
    wanted = TASKS[task].n_classes
    if wanted is not None and len(labels) != wanted:
        raise DataError(
            f"{origin}: task {task} needs exactly {_NUMBERS.get(wanted, wanted)} classes, target {target!r} has {len(labels)}: {shown}"
            + ("; use task: multiclass" if len(labels) > wanted else "")
        )
    single = [label for label in labels if counts[label] == 1]
    if single:
        raise DataError(
            f"{origin}: class {', '.join(map(repr, single))} of target {target!r} has a single row; "
            "a class needs at least two rows to be learned and checked (remove it or add data)"
        )
    return [label.item() if hasattr(label, "item") else label for label in labels]


_NUMBERS = {2: "two", 3: "three"}

# ---------------------------------------------------------------------------------------------- missing values


def usable_rows(frame: Frame, policy: str) -> np.ndarray:
    """data.missing applied to a frame: a bool mask of rows to keep (missing targets never, missing features only
    unless `drop`); infinite values and, under `error`, any missing value raise, naming columns and rows."""
    if frame.target is not None and frame.target.dtype.kind == "f" and np.isinf(frame.target).any():
        raise DataError(f"{frame.origin}: the target holds an infinite value at {frame.rows_text(np.flatnonzero(np.isinf(frame.target))[:1])}; "
                        "fix the value, or list it in data.na_values if it means a missing value")
    # One pass over the features in the common case of none missing or infinite; the cell-wise masks otherwise.
    all_finite = bool(np.isfinite(frame.numeric).all())
    if not all_finite and np.isinf(frame.numeric).any():
        rows, cols = np.nonzero(np.isinf(frame.numeric))
        raise DataError(
            f"{frame.origin}: column {frame.numeric_names[cols[0]]!r} holds an infinite value at {frame.rows_text(rows[:1])}"
        )
    by_column = {}
    if not all_finite:
        nan_cells = np.isnan(frame.numeric)
        by_column = {name: np.flatnonzero(nan_cells[:, j]) for j, name in enumerate(frame.numeric_names) if nan_cells[:, j].any()}
    for name, values in frame.text.items():
        holes = np.flatnonzero(np.array([v is None for v in values], dtype=bool))
        if len(holes):
            by_column[name] = holes
    target_holes = np.flatnonzero(missing_target(frame.target)) if frame.target is not None else np.array([], dtype=np.int64)
    if policy == "error" and (by_column or len(target_holes)):
        parts = [f"column {name!r} at {frame.rows_text(rows)}" for name, rows in by_column.items()]
        if len(target_holes):
            parts.append(f"target at {frame.rows_text(target_holes)}")
        raise DataError(
            f"{frame.origin}: missing values in {'; '.join(parts)}; "
            "set data.missing: drop (remove those rows) or mean (impute training means)"
        )
    keep = np.ones(len(frame), dtype=bool)
    if policy == "drop":
        for rows in by_column.values():
            keep[rows] = False
    keep[target_holes] = False
    return keep


def handle_missing(frame: Frame, policy: str) -> Frame:
    """Apply data.missing to a freshly read frame: error names columns and rows; drop removes rows."""
    keep = usable_rows(frame, policy)
    if keep.all():
        return frame
    kept = np.flatnonzero(keep)
    if not len(kept):
        raise DataError(f"{frame.origin}: every row has a missing value; nothing is left to learn from")
    reason = "a missing value" if policy == "drop" else "a missing target"
    warnings.warn(f"{frame.origin}: dropped {int((~keep).sum())} rows with {reason}", MLPWarning, stacklevel=2)
    return frame.take(kept)


def impute_means(names: list[str], sums: np.ndarray, counts: np.ndarray) -> dict[str, float]:
    """data.missing: mean. Each numeric column's training mean over its present values; a column with none gets 0."""
    return {name: float(total / count) if count else 0.0 for name, total, count in zip(names, sums, counts, strict=True)}


# ---------------------------------------------------------------------------------------------- scaling


def column_stats(x: np.ndarray, chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Float64 mean and population std per column, in chunks so a large table is not copied to float64."""
    n = len(x)
    total = np.zeros(x.shape[1])
    for start in range(0, n, chunk):
        total += x[start : start + chunk].sum(axis=0, dtype=np.float64)
    mean = total / max(n, 1)
    squares = np.zeros(x.shape[1])
    for start in range(0, n, chunk):
        centred = x[start : start + chunk].astype(np.float64) - mean
        squares += (centred * centred).sum(axis=0)
    return mean, np.sqrt(squares / max(n, 1))


def feature_scaling(mean: np.ndarray, std: np.ndarray, unscaled: list[bool] | None = None) -> tuple[list[float], list[float]]:
    """Per-column (mean, scale) for standardizing; `unscaled` columns (one-hot) keep 0 and 1."""
    mean, scale = np.array(mean, dtype=np.float64), np.array(std, dtype=np.float64)
    # A constant column would divide by zero; leaving it unscaled keeps it finite (it carries no signal anyway).
    scale[scale < 1e-12] = 1.0
    if unscaled is not None:
        mean[unscaled], scale[unscaled] = 0.0, 1.0
    return mean.tolist(), scale.tolist()


def standardizes_target(task: str, setting: bool | None) -> bool:
    """data.standardize_target: unset means on for regression (targets like 25-346 stall an MLP that starts near 0)."""
    return not TASKS[task].classes and (setting is None or setting)


def target_scaling(mean: float, std: float) -> tuple[float, float]:
    """(mean, scale) of a standardized regression target; a constant target keeps scale 1."""
    return float(mean), float(std) or 1.0
