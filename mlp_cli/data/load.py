"""Which way a config's data arrives: in memory (a file or the generator) or streamed from Parquet; and reading a
new file the way a trained model's data was read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlp_cli.config import Config
from mlp_cli.data.groups import feature_columns
from mlp_cli.data.prepare import Dataset, Preprocessor, fit, split_frames, to_split
from mlp_cli.data.readers import Frame, TextFormat, check_columns, header, load_frame
from mlp_cli.data.rules import handle_missing
from mlp_cli.errors import DataError


def load_dataset(config: Config) -> Dataset:
    """Read, validate, split and fit; the same config and seed always give the same tensors."""
    if config.data.streaming:
        from mlp_cli.data.stream import load_streaming

        return load_streaming(config)
    train_frame, test_frame, features = read_frames(config)
    parts = split_frames(config, train_frame, test_frame)
    del train_frame, test_frame  # the splits own their rows now; let the full table go
    assert parts["train"] is not None  # split_frames always returns the training rows
    prep, x_train = fit(config, parts["train"], features)
    train = to_split(prep, parts["train"], x_train)
    val, test = (to_split(prep, part) if (part := parts[name]) is not None else None for name in ("val", "test"))
    return Dataset(train, val, test, prep)


def read_frames(config: Config) -> tuple[Frame, Frame | None, list[str]]:
    data = config.data
    if data.synthetic is not None:
        from mlp_cli.data.synthetic import generate

        frame = generate(data.synthetic, config.task)
        return frame, None, list(frame.numeric_names)
    assert data.train is not None and data.target is not None  # load_config requires both unless data.synthetic
    train_path = Path(data.train)
    text = TextFormat.of(data)
    wanted = data.features
    if data.group or data.exclude:  # data.group and data.exclude: columns kept out of the features
        names = header(train_path, text)
        check_columns(train_path, names, [c for c in [data.group, *data.exclude] if c], "data.group/exclude")
        if wanted is not None and data.group in wanted:
            raise DataError(f"data.features lists the group column {data.group!r}; groups decide the split, they are never a feature")
        wanted = wanted if wanted is not None else feature_columns(names, data.target, data.group, data.exclude)
    frame, features = load_frame(train_path, wanted, data.categorical, data.target, target_required=True, text=text)
    frame = handle_missing(frame, config.data.missing)
    test = None
    if data.test:
        test_path = Path(data.test)
        if _same_file(test_path, train_path):
            # Read once (a 118 MB CSV takes seconds to parse); a copy, since preparing a split fills holes in place.
            return frame, frame.take(np.arange(len(frame))), features
        check_columns(test_path, header(test_path, text), features + [data.target], "test")
        test, _ = load_frame(test_path, features, data.categorical, data.target, target_required=True, text=text)
        test = handle_missing(test, config.data.missing)
    return frame, test, features


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def load_for_model(prep: Preprocessor, path: Path, *, target_required: bool) -> Frame:
    """Read a new file the way the model's training data was read; columns are checked by name."""
    text = TextFormat.of(prep.text)
    found = header(path, text)
    wanted = list(prep.features) + ([prep.target] if target_required else [])
    missing = [c for c in wanted if c not in found]
    if missing:
        extra = [c for c in found if c not in wanted and c != prep.target]
        raise DataError(
            f"{path}: the model expects columns {', '.join(map(repr, missing))}, which the file lacks"
            + (f" (found instead: {', '.join(map(repr, extra[:10]))})" if extra else "")
            + f"; the model was trained on: {', '.join(prep.features)}"
        )
    target = prep.target if target_required else None
    frame, _ = load_frame(path, prep.features, list(prep.categorical), target, target_required=target_required, text=text)
    return handle_missing(frame, prep.missing)
