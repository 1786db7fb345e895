"""Parquet larger than memory: one statistics pass, then batches read row group by row group and shuffled
through a bounded buffer, with the shard order reshuffled (and dealt out to ranks) every epoch.

Rows are assigned to train/validation/test by a seeded hash of their position in the dataset, so the split
is the same on every pass without holding it in memory (it is random, not stratified). Memory is bounded by
one row group plus the shuffle buffer, whatever the size of the dataset.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlp_cli.config import Config
from mlp_cli.data.prepare import Dataset, Preprocessor, Split, to_split
from mlp_cli.data.readers import (
    Frame,
    ParquetReader,
    TextFormat,
    check_columns,
    load_frame,
    rounded_integers,
    stored_index,
    to_frame,
)
from mlp_cli.data.rules import (
    check_regression_target,
    class_labels,
    count_labels,
    feature_scaling,
    handle_missing,
    impute_means,
    standardizes_target,
    target_scaling,
    usable_rows,
)
from mlp_cli.errors import DataError, MLPWarning
from mlp_cli.tasks import TASKS

ROLES = ("train", "val", "test")
_MASK = (1 << 64) - 1


@dataclass
class Unit:
    """One row group of one Parquet file: the smallest piece read at a time."""

    path: str
    row_group: int
    rows: int
    first_row: int  # position of its first row in the whole dataset (for the split hash)
    counts: dict  # usable rows per role, after missing-value handling
    file_row: int = 0  # position of its first row in its own file (for messages)


def uniform(ids: np.ndarray, seed: int) -> np.ndarray:
    """A fixed pseudo-random number in [0, 1) per row id (splitmix64), the same on every pass."""
    z = ids.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _MASK)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in ParquetReader.suffixes and p.is_file())
        if not files:
            raise DataError(f"{path}: no .parquet files in this folder")
        return files
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if path.suffix.lower() not in ParquetReader.suffixes:
        raise DataError(f"{path}: data.streaming reads Parquet (a file or a folder of shards), not {path.suffix or 'this file'}")
    return [path]


def _streams(path: Path) -> bool:
    """A Parquet file or folder is streamed; any other test file (a CSV) is small enough to read whole."""
    return path.is_dir() or path.name.lower().endswith(ParquetReader.suffixes)


def read_test_frame(config: Config, features: list[str]) -> Frame:
    """data.test read whole, as the in-memory path reads it (CSV or anything the readers know)."""
    data = config.data
    assert data.test is not None  # called only when data.test names a file
    frame, _ = load_frame(Path(data.test), features, [], data.target, target_required=True, text=TextFormat.of(data))
    return handle_missing(frame, data.missing)


class ParquetSource:
    """The row groups of a Parquet file or folder and what role each of their rows plays."""

    def __init__(self, path: Path, config: Config, roles_from_hash: bool):
        self.config = config
        self.path = path
        self.roles_from_hash = roles_from_hash  # False for a test file: every row is a test row
        self.units: list[Unit] = []
        self.names: list[str] = []
        self._readers: dict[str, tuple[ParquetReader, object]] = {}  # path -> (reader, its parsed footer)
        offset = 0
        for file in _files(path):
            reader = ParquetReader(file)
            meta = reader.metadata()
            self._readers[str(file)] = (reader, meta)
            names = [meta.schema.column(i).name for i in range(meta.num_columns)]
            names = [n for n in names if not stored_index(n)]
            if not self.names:
                self.names = names
            elif names != self.names:
                raise DataError(f"{file}: columns differ from the other shards ({', '.join(names)} vs {', '.join(self.names)})")
            file_row = 0
            for group in range(meta.num_row_groups):
                rows = meta.row_group(group).num_rows
                if rows:
                    self.units.append(Unit(str(file), group, rows, offset, {}, file_row))
                    offset += rows
                    file_row += rows
        if not self.units:
            raise DataError(f"{path}: no data rows")
        self.total_rows = offset

    def read(self, unit: Unit, features: list[str], target: str | None) -> Frame:
        columns = features + ([target] if target else [])
        # The footer is parsed once per file and kept; the file itself is opened per read, so a folder of
        # thousands of shards never holds thousands of descriptors.
        reader, meta = self._readers[unit.path]
        table = reader.row_group(unit.row_group, columns, meta)
        return to_frame(table, unit.path, reader.kind, features, [], target or None, unit.file_row + np.arange(unit.rows),
                        TextFormat.of(self.config.data).na_values)

    def roles(self, unit: Unit) -> np.ndarray:
        """0 train, 1 validation, 2 test, for each row of the unit."""
        if not self.roles_from_hash:
            return np.full(unit.rows, 2, dtype=np.int8)
        data = self.config.data
        test_share = 0.0 if data.test else data.test_fraction
        val_share = data.val_fraction * (1 - test_share)
        u = uniform(np.arange(unit.first_row, unit.first_row + unit.rows), self.config.train.seed)
        roles = np.zeros(unit.rows, dtype=np.int8)
        roles[u < test_share + val_share] = 1
        roles[u < test_share] = 2
        return roles


def fit_streaming(config: Config) -> tuple[Preprocessor, ParquetSource, ParquetSource | Frame | None]:
    """One pass over the data: label set, training-split means and scales, and row counts per role and unit."""
    data, task = config.data, config.task
    if config.model.batch_norm:
        raise DataError(
            "model.batch_norm is not supported with data.streaming yet (a streamed epoch can end on a one-row batch); "
            "turn one of them off"
        )
    if data.categorical:
        raise DataError("data.categorical is not supported with data.streaming yet; encode the columns in the Parquet file")
    assert data.train is not None and data.target is not None  # load_config requires both unless data.synthetic
    source = ParquetSource(Path(data.train), config, roles_from_hash=True)
    check_columns(source.path, source.names, [data.target], "target")
    features = data.features or [n for n in source.names if n != data.target]
    check_columns(source.path, source.names, features, "feature")
    test: ParquetSource | Frame | None = None
    if data.test and _streams(Path(data.test)):
        test = ParquetSource(Path(data.test), config, roles_from_hash=False)
        check_columns(test.path, test.names, features + [data.target], "test")
    elif data.test:
        test = read_test_frame(config, features)

    width = len(features)
    total, squares, present = np.zeros(width), np.zeros(width), np.zeros(width)
    y_sum = y_squares = 0.0
    label_counts: dict = {}
    reported: set = set()
    for owner in (source, test):
        if not isinstance(owner, ParquetSource):  # an in-memory test file needs no pass
            continue
        for unit in owner.units:
            frame = owner.read(unit, features, data.target)
            for note in rounded_integers(frame, reported):
                warnings.warn(note, MLPWarning, stacklevel=2)
            keep = usable_rows(frame, data.missing)
            roles = owner.roles(unit)
            unit.counts = {role: int(((roles == i) & keep).sum()) for i, role in enumerate(ROLES)}
            if owner is test:
                continue
            train_rows = (roles == 0) & keep
            x = frame.numeric[train_rows].astype(np.float64)
            finite = ~np.isnan(x)
            total += np.where(finite, x, 0).sum(axis=0)
            squares += np.where(finite, x * x, 0).sum(axis=0)
            present += finite.sum(axis=0)
            if not TASKS[task].classes:
                check_regression_target(frame, data.target)
                assert frame.target is not None  # fit_streaming checked the target column exists; every unit is read with it
                y = frame.target[train_rows]
                y_sum += float(y.sum())
                y_squares += float((y * y).sum())
            else:
                count_labels(frame.take(np.flatnonzero(keep)), data.target, label_counts)
    n_train = sum(u.counts["train"] for u in source.units)
    if n_train < 2:
        raise DataError(f"{source.path}: only {n_train} training row(s) after the split; a model needs more data")
    prep = Preprocessor(task, data.target, features, {}, data.missing, text=TextFormat.of(data).to_dict())
    mean = total / np.maximum(present, 1)
    if data.missing == "mean":
        prep.impute = impute_means(features, total, present)
    if data.standardize:
        # Imputed values sit at the mean, so they add nothing to the sum of squared deviations.
        variance = np.maximum(squares / np.maximum(present, 1) - mean * mean, 0) * present / n_train
        prep.mean, prep.scale = feature_scaling(mean, np.sqrt(variance))
    if not TASKS[task].classes:
        if standardizes_target(task, data.standardize_target):
            y_mean = y_sum / n_train
            prep.target_mean, prep.target_scale = target_scaling(y_mean, np.sqrt(max(y_squares / n_train - y_mean**2, 0)))
    else:
        prep.labels = class_labels(task, label_counts, str(source.path), data.target)
    return prep, source, test


class StreamSplit:
    """A split that lives on disk: batches are read, transformed and moved to the device as they are used."""

    def __init__(self, source: ParquetSource, role: str, prep: Preprocessor, shuffle_buffer: int, device=None, units=None):
        self.source, self.role, self.prep = source, role, prep
        self.shuffle_buffer = shuffle_buffer
        self.device = device
        self.units = units if units is not None else [u for u in source.units if u.counts.get(role)]
        self.n_rows = sum(u.counts[role] for u in self.units)  # a count only: nothing per row is held

    def __len__(self) -> int:
        return self.n_rows

    def to(self, device) -> StreamSplit:
        return StreamSplit(self.source, self.role, self.prep, self.shuffle_buffer, device, self.units)

    def shard(self, world) -> StreamSplit:
        """This rank's share for evaluation: every world.size-th row group."""
        return StreamSplit(self.source, self.role, self.prep, self.shuffle_buffer, self.device, self.units[world.rank :: world.size])

    def _arrays(self, unit: Unit):
        frame = self.source.read(unit, self.prep.features, self.prep.target)
        keep = usable_rows(frame, self.prep.missing) & (self.source.roles(unit) == ROLES.index(self.role))
        frame = frame.take(np.flatnonzero(keep))
        return self.prep.inputs(frame), self.prep.targets(frame)

    def _tensors(self, x: np.ndarray, y: np.ndarray):
        import torch

        xb, yb = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
        if self.device is not None:
            xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
        return xb, yb

    def _read_ahead(self, units: list[Unit]):
        """(x, y) of each unit in order, the next one decoded on a second thread while this one is used.

        pyarrow releases the GIL while it decodes, so reading overlaps training; memory grows by one row group.
        """
        from concurrent.futures import ThreadPoolExecutor

        if not units:
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlp-read") as pool:
            pending = pool.submit(self._arrays, units[0])
            for following in units[1:]:
                ready = pending.result()
                pending = pool.submit(self._arrays, following)
                yield ready
            yield pending.result()

    def batches(self, size: int):
        """In order, for evaluation."""
        for x, y in self._read_ahead(self.units):
            for start in range(0, len(x), size):
                yield self._tensors(x[start : start + size], y[start : start + size])

    def head(self, n: int):
        xs, ys, have = [], [], 0
        for unit in self.units:
            x, y = self._arrays(unit)
            xs.append(x[: n - have])
            ys.append(y[: n - have])
            have += len(xs[-1])
            if have >= n:
                break
        return self._tensors(np.concatenate(xs), np.concatenate(ys))

    def epoch(self, seed: int, batch_size: int, world, skip: int = 0):
        """(global rows per step, iterator of this rank's (x, y) batches) for one shuffled pass.

        Row groups are shuffled and dealt to ranks; each rank shuffles its rows through a bounded buffer and
        cuts batches of batch_size / world rows, so all ranks know every step's global row count in advance.
        """
        rng = np.random.default_rng(seed)
        order = [self.units[i] for i in rng.permutation(len(self.units))]
        local = max(1, -(-batch_size // world.size))
        per_rank = [sum(u.counts[self.role] for u in order[r :: world.size]) for r in range(world.size)]
        steps = max(-(-n // local) for n in per_rank)
        counts = [sum(min(local, max(n - step * local, 0)) for n in per_rank) for step in range(steps)]
        mine = order[world.rank :: world.size]
        return counts, self._shuffled(mine, rng, local, steps, skip)

    def _shuffled(self, units: list[Unit], rng, local: int, steps: int, skip: int):
        import torch

        capacity = max(self.shuffle_buffer, local)
        held_x: list[np.ndarray] = []
        held_y: list[np.ndarray] = []
        held = emitted = 0

        def emit(final: bool):
            nonlocal held_x, held_y, held
            x, y = np.concatenate(held_x), np.concatenate(held_y)
            mix = rng.permutation(len(x))
            # Keep half the buffer back (unless this is the end) so rows from the next row groups mix in.
            ready = len(x) if final else (len(x) - capacity // 2) // local * local
            # One gather for the rows going out, then contiguous slices, as in memory.
            out_x, out_y = x[mix[:ready]], y[mix[:ready]]
            rest = mix[ready:]
            held_x, held_y, held = [x[rest]], [y[rest]], len(rest)
            return [(out_x[i : i + local], out_y[i : i + local]) for i in range(0, ready, local)]

        for x, y in self._read_ahead(units):
            held_x.append(x)
            held_y.append(y)
            held += len(x)
            if held >= capacity + local:
                for xb, yb in emit(final=False):
                    if emitted >= skip:
                        yield self._tensors(xb, yb)
                    emitted += 1
        if held:
            for xb, yb in emit(final=True):
                if emitted >= skip:
                    yield self._tensors(xb, yb)
                emitted += 1
        # A rank with fewer rows keeps stepping with empty batches so every rank joins every all-reduce.
        width = len(self.prep.feature_names)
        empty_y = torch.empty(0, dtype=getattr(torch, TASKS[self.prep.task].target_dtype))
        while emitted < steps:
            if emitted >= skip:
                xb = torch.empty(0, width)
                yield (xb.to(self.device), empty_y.to(self.device)) if self.device is not None else (xb, empty_y)
            emitted += 1


def load_streaming(config: Config):
    """A Dataset whose splits stream from Parquet; only the fitted preprocessor is held in memory."""
    prep, source, test = fit_streaming(config)
    buffer = config.data.shuffle_buffer
    train = StreamSplit(source, "train", prep, buffer)
    val = StreamSplit(source, "val", prep, buffer)
    test_split: Split | StreamSplit
    if isinstance(test, Frame):
        test_split = to_split(prep, test)
    else:
        test_split = StreamSplit(test if test is not None else source, "test", prep, buffer)
    # Dataset's fields name the in-memory Split; a StreamSplit stands in for it by duck typing (the Trainer branches on
    # isinstance). Naming both there would make data.prepare import data.stream, upward in the layers.
    return Dataset(train, val if len(val) else None, test_split if len(test_split) else None, prep)  # type: ignore[arg-type]


def streaming_split(config: Config, prep: Preprocessor, role: str) -> StreamSplit | Split:
    """A split of a trained run rebuilt from its stored config and preprocessor, without a statistics pass."""
    data = config.data
    if role == "test" and data.test and not _streams(Path(data.test)):
        return to_split(prep, read_test_frame(config, prep.features))
    assert data.train is not None  # load_config requires it unless data.synthetic
    source = ParquetSource(Path(data.test if role == "test" and data.test else data.train), config,
                           roles_from_hash=not (role == "test" and data.test))
    for unit in source.units:
        unit.counts = {role: unit.rows}  # an upper bound; batches hold only the rows that really play the role
    return StreamSplit(source, role, prep, data.shuffle_buffer)
