"""Which way a config's data arrives: in memory (a file or the generator) or streamed from Parquet; and reading a
new file the way a trained model's data was read."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlp_cli.config import Config
from mlp_cli.data.groups import feature_columns
from mlp_cli.data.prepare import Dataset, Preprocessor, SplitArrays, as_split, fit, split_arrays, split_frames
from mlp_cli.data.readers import Frame, TextFormat, check_columns, header, load_frame
from mlp_cli.data.rules import handle_missing
from mlp_cli.errors import DataError


def load_dataset(config: Config, ahead: ReadAhead | None = None) -> Dataset:
    """Read, validate, split and fit; the same config and seed always give the same tensors.

    `ahead`: the same config's data already being prepared on a thread (ReadAhead.start), taken from there."""
    if config.data.streaming:
        from mlp_cli.data.stream import load_streaming

        return load_streaming(config)
    prepared = ahead.result() if ahead is not None else prepare_arrays(config)
    train = as_split(prepared.train)
    val = as_split(prepared.val) if prepared.val is not None else None
    test = train if prepared.test is prepared.train else as_split(prepared.test) if prepared.test is not None else None
    return Dataset(train, val, test, prepared.prep)


@dataclass
class PreparedArrays:
    """A config's splits as numpy arrays and the fitted preprocessor: everything before torch is needed."""

    train: SplitArrays
    val: SplitArrays | None
    test: SplitArrays | None  # the very object `train` when one file is train and test with no validation
    prep: Preprocessor


def prepare_arrays(config: Config) -> PreparedArrays:
    """Read, split and fit with numpy alone (ReadAhead runs this while torch imports)."""
    train_frame, test_frame, features = read_frames(config)
    parts = split_frames(config, train_frame, test_frame)
    del train_frame, test_frame  # the splits own their rows now; let the full table go
    assert parts["train"] is not None  # split_frames always returns the training rows
    # One file named as train and test, nothing held out for validation: the test split is the training split,
    # the same object, so it is prepared, moved and evaluated once.
    same = parts["test"] is parts["train"]
    prep, x_train = fit(config, parts["train"], features)
    train = split_arrays(prep, parts["train"], x_train)
    val = split_arrays(prep, parts["val"]) if parts["val"] is not None else None
    test = train if same else split_arrays(prep, parts["test"]) if parts["test"] is not None else None
    return PreparedArrays(train, val, test, prep)


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
            return frame, frame, features  # read once: a 118 MB CSV takes a second to parse
        check_columns(test_path, header(test_path, text), features + [data.target], "test")
        test, _ = load_frame(test_path, features, data.categorical, data.target, target_required=True, text=text)
        test = handle_missing(test, config.data.missing)
    return frame, test, features


class ReadAhead:
    """prepare_arrays on a thread, started before the caller imports torch: parsing a CSV (pyarrow, its own
    threads), splitting and fitting (numpy) overlap importing torch (one thread, 1.5-2.5 s) on a machine with a core
    to spare.

    What the caller sees does not change: the arrays, an error, or a warning (a detected delimiter, rounded
    integers, dropped rows) come when `result()` is called, in the calling thread, as from prepare_arrays there.
    """

    def __init__(self, config: Config):
        self.config = config
        self._thread: threading.Thread | None = None
        self._result: PreparedArrays | None = None
        self._error: BaseException | None = None
        self._held: list[warnings.WarningMessage] = []
        self._show = warnings.showwarning
        self._hold: object = None  # the showwarning that holds the thread's warnings, while it is installed

    @classmethod
    def start(cls, config: Config) -> ReadAhead | None:
        """Start reading `config`'s data; None where there is nothing to read up front (streamed data)."""
        if config.data.streaming:
            return None
        import numpy  # noqa: F401  imported here first, so the two threads never import it at once

        ahead = cls(config)
        shown = ahead._show

        def hold(message, category, filename, lineno, file=None, line=None):
            if threading.current_thread() is ahead._thread:
                ahead._held.append(warnings.WarningMessage(message, category, filename, lineno, file, line))
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = ahead._hold = hold
        ahead._thread = threading.Thread(target=ahead._read, name="mlp-read-ahead", daemon=True)
        ahead._thread.start()
        return ahead

    def _read(self) -> None:
        try:
            self._result = prepare_arrays(self.config)
        except BaseException as exc:  # noqa: BLE001  handed to the thread that asks, which raises it there
            self._error = exc

    def wait(self, stop: Callable[[], bool], poll: float = 0.1) -> None:
        """Until the arrays are ready or `stop()` says to give up (Ctrl-C during a long parse: the thread is a daemon
        and is left behind; pyarrow cancels a parse on Ctrl-C only on the main thread)."""
        assert self._thread is not None, "ReadAhead.start() makes these"
        while self._thread.is_alive() and not stop():
            self._thread.join(poll)

    def result(self) -> PreparedArrays:
        assert self._thread is not None, "ReadAhead.start() makes these"
        self._thread.join()
        if warnings.showwarning is self._hold:
            warnings.showwarning = self._show
        for held in self._held:
            warnings.showwarning(held.message, held.category, held.filename, held.lineno, held.file, held.line)
        self._held.clear()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        assert self._result is not None  # set by _read unless it raised
        result, self._result = self._result, None
        return result


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
