"""The table of file readers (CSV, Parquet; one class per format) and the `Frame` each of them yields: typed
column arrays, whole or chunk by chunk, with errors that name file, column and row."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlp_cli.errors import DataError


def label_text(value) -> str:
    """A label as a CSV file writes it: booleans as true/false, everything else as str()."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Reader:
    """One file format: its column names, the whole file as a pyarrow Table, and the file in chunks.

    `load_frame` turns either into the same `Frame`. A new format is one subclass and one entry in READERS.
    """

    kind = ""
    suffixes: tuple[str, ...] = ()
    row_word = "row"  # how a user counts the file's data rows in messages
    first_number = 1  # the number a user gives the first data row

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def claims(cls, path: Path) -> bool:
        return path.name.lower().endswith(cls.suffixes)

    def check_exists(self) -> None:
        if not self.path.exists():
            raise DataError(f"data file not found: {self.path}")

    def columns(self) -> list[str]:
        """Column names without reading the data."""
        raise NotImplementedError

    def table(self, columns: list[str] | None = None, float_columns: Sequence[str] = ()):
        """The file as a pyarrow Table; a reader may parse `float_columns` straight to float32."""
        raise NotImplementedError

    def chunks(self, columns: list[str] | None = None):
        """The file as consecutive pyarrow Tables, each small enough to hold while the next is read."""
        yield self.table(columns)


class CsvReader(Reader):
    kind = "csv"
    suffixes = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".tsv")
    row_word = "line"
    first_number = 2  # the header is line 1
    chunk_bytes = 1 << 24  # text decoded per chunk; pyarrow's default block is 1 MiB

    def check_exists(self) -> None:
        super().check_exists()
        if self.path.is_dir():
            raise DataError(f"{self.path} is a folder, not a CSV file")

    def _parse_options(self):
        import pyarrow.csv as pacsv

        return pacsv.ParseOptions(delimiter="\t" if self.path.name.lower().endswith(".tsv") else ",")

    def _error(self, exc: Exception) -> DataError:
        text = str(exc)
        if "Empty CSV file" in text:
            return DataError(f"{self.path}: the file is empty; a CSV needs a header row and data rows")
        return DataError(f"{self.path}: cannot parse as CSV: {text.splitlines()[0]}")

    def columns(self) -> list[str]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        self.check_exists()
        try:
            reader = pacsv.open_csv(str(self.path), parse_options=self._parse_options())
            return list(reader.schema.names)
        except pa.ArrowInvalid as exc:
            raise self._error(exc) from None
        except OSError as exc:
            raise DataError(f"cannot read {self.path}: {exc}") from None

    def _convert(self, columns, float_columns=()):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        return pacsv.ConvertOptions(
            include_columns=columns,
            column_types={c: pa.float32() for c in float_columns},
            # pyarrow keeps an empty cell of a text column as "", which would become a category or a class;
            # it is a missing value like an empty number cell, so data.missing must see it.
            strings_can_be_null=True,
        )

    def table(self, columns: list[str] | None = None, float_columns: Sequence[str] = ()):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        self.check_exists()
        if self.path.stat().st_size == 0:
            raise DataError(f"{self.path}: the file is empty; a CSV needs a header row and data rows")
        convert = self._convert(columns, float_columns)
        try:
            if float_columns:
                # Streaming reader: a quarter of read_csv's peak memory at the same speed. It infers the types of
                # the remaining (target, categorical) columns from the first block, so any surprise later falls
                # back to read_csv below, which looks at the whole file.
                table = pacsv.open_csv(str(self.path), parse_options=self._parse_options(), convert_options=convert).read_all()
            else:
                table = pacsv.read_csv(str(self.path), parse_options=self._parse_options(), convert_options=convert)
        except pa.ArrowInvalid as exc:
            if float_columns and "conversion error" in str(exc).lower():
                # A number column holds text somewhere: read it with type inference to name the value and row.
                return self.table(columns)
            raise self._error(exc) from None
        except OSError as exc:
            raise DataError(f"cannot read {self.path}: {exc}") from None
        return _nonempty(self.path, table)

    def chunks(self, columns: list[str] | None = None):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        self.check_exists()
        try:
            reader = pacsv.open_csv(str(self.path), read_options=pacsv.ReadOptions(block_size=self.chunk_bytes),
                                    parse_options=self._parse_options(), convert_options=self._convert(columns))
            for batch in reader:
                yield pa.Table.from_batches([batch])
        except pa.ArrowInvalid as exc:
            raise self._error(exc) from None


class ParquetReader(Reader):
    kind = "parquet"
    suffixes = (".parquet", ".pq")

    @classmethod
    def claims(cls, path: Path) -> bool:
        return super().claims(path) or path.is_dir()  # a folder of Parquet shards

    def columns(self) -> list[str]:
        import pyarrow.dataset as ds

        self.check_exists()
        try:
            return list(ds.dataset(str(self.path), format="parquet").schema.names)
        except Exception as exc:  # pyarrow raises several types for a corrupt file
            raise DataError(f"{self.path}: not a readable Parquet file: {exc}") from None

    def table(self, columns: list[str] | None = None, float_columns: Sequence[str] = ()):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.check_exists()
        try:
            # pre_buffer=False reads column chunks as they are decoded instead of the whole file up front,
            # which halves peak memory at the same speed.
            table = pq.read_table(str(self.path), columns=columns, pre_buffer=False)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{self.path}: not a readable Parquet file: {exc}") from None
        return _nonempty(self.path, table)

    def metadata(self):
        """The footer of this one file (row groups, schema), parsed once by whoever keeps it."""
        import pyarrow.parquet as pq

        try:
            return pq.read_metadata(str(self.path))
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise DataError(f"{self.path}: not a readable Parquet file: {exc}") from None

    def row_group(self, group: int, columns: list[str] | None, metadata=None):
        """One row group of this file as a Table; the file is opened for this read only."""
        import pyarrow.parquet as pq

        handle = pq.ParquetFile(str(self.path), metadata=metadata)
        try:
            return handle.read_row_group(group, columns=columns)
        finally:
            handle.close()

    def chunks(self, columns: list[str] | None = None):
        metadata = self.metadata()
        for group in range(metadata.num_row_groups):
            yield self.row_group(group, columns, metadata)


# kind -> reader class, asked in order which one claims a path
READERS: dict[str, type[Reader]] = {reader.kind: reader for reader in (CsvReader, ParquetReader)}


def reader_for(path: Path) -> Reader:
    for reader in READERS.values():
        if reader.claims(path):
            return reader(path)
    raise DataError(
        f"{path}: unsupported file type {''.join(path.suffixes) or '(no extension)'}; use "
        + " or ".join(f"{_FORMAT_NAMES.get(kind, kind)} ({', '.join(reader.suffixes)})" for kind, reader in READERS.items())
    )


_FORMAT_NAMES = {"csv": "CSV", "parquet": "Parquet"}


def file_kind(path: Path) -> str:
    return reader_for(path).kind


def _nonempty(path: Path, table):
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows (only a header); the table needs at least one row")
    return table


def where(origin: str, kind: str, row: int) -> str:
    """A 0-based data row as the user counts it: CSV line (header is line 1) or 1-based Parquet row."""
    reader = READERS.get(kind, Reader)
    return f"{reader.row_word} {row + reader.first_number}"


def _rows_text(origin: str, kind: str, rows: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(where(origin, kind, int(r)).split(" ")[1] for r in rows[:limit])
    unit = READERS.get(kind, Reader).row_word + ("s" if len(rows) > 1 else "")
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"{unit} {shown}{more}"


def header(path: Path) -> list[str]:
    """Column names without reading the data (cheap for both formats)."""
    return reader_for(path).columns()


def read_table(path: Path, columns: list[str] | None = None, float_columns: Sequence[str] = ()):
    """The file as a pyarrow Table; `float_columns` are parsed straight to float32 (fast path, half the memory)."""
    return reader_for(path).table(columns, float_columns)


def check_columns(path: Path, found: list[str], wanted: list[str], role: str) -> None:
    """Every wanted column must exist; the error lists what is missing, what exists, and the closest names."""
    missing = [c for c in wanted if c not in found]
    if not missing:
        return
    hints = []
    for name in missing:
        close = difflib.get_close_matches(name, found, n=1, cutoff=0.6)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    shown = ", ".join(found[:40]) + (" ..." if len(found) > 40 else "")
    noun = "column" if len(missing) == 1 else "columns"
    raise DataError(f"{path}: {role} {noun} {', '.join(hints)} not found; the file has: {shown}")


@dataclass
class Frame:
    """One file's feature and target columns as arrays, rows aligned, before anything is fitted."""

    origin: str
    kind: str  # csv | parquet | synthetic
    numeric: np.ndarray  # (rows, numeric features) float32, NaN where a value is missing
    numeric_names: list[str]
    text: dict[str, np.ndarray] = field(default_factory=dict)  # categorical columns, None where missing
    target: np.ndarray | None = None  # raw target values (float64 for numbers, object for text/bool)
    rows: np.ndarray | None = None  # 0-based data row in the file, for messages
    n_source: int = -1  # rows in the file before any were dropped

    def __post_init__(self):
        if self.rows is None:
            self.rows = np.arange(len(self.numeric))
        if self.n_source < 0:
            self.n_source = len(self.rows)

    def __len__(self) -> int:
        assert self.rows is not None  # __post_init__ fills rows
        return len(self.rows)

    def take(self, index: np.ndarray) -> "Frame":
        assert self.rows is not None  # __post_init__ fills rows
        return Frame(
            self.origin,
            self.kind,
            self.numeric[index],
            self.numeric_names,
            {k: v[index] for k, v in self.text.items()},
            None if self.target is None else self.target[index],
            self.rows[index],
            self.n_source,
        )

    def rows_text(self, positions: np.ndarray) -> str:
        assert self.rows is not None  # __post_init__ fills rows
        return _rows_text(self.origin, self.kind, self.rows[positions])


def load_frame(
    path: Path, features: list[str] | None, categorical: list[str], target: str | None, *, target_required: bool
) -> tuple[Frame, list[str]]:
    """Read the feature columns (default: all but the target) and the target; returns the frame and feature order."""
    names = header(path)
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{path}: duplicate column names {', '.join(map(repr, dupes))}")
    if target is not None and target_required:
        check_columns(path, names, [target], "target")
    if features is None:
        features = [n for n in names if n != target]
    else:
        check_columns(path, names, features, "feature")
        if target in features:
            raise DataError(f"data.features lists the target column {target!r}; a model cannot see its own answer")
    check_columns(path, names, list(categorical), "categorical")
    unused = [c for c in categorical if c not in features]
    if unused:
        raise DataError(f"data.categorical names {', '.join(map(repr, unused))}, which {'is' if len(unused) == 1 else 'are'} not among the features")
    if not features:
        raise DataError(f"{path}: no feature columns left besides the target {target!r}")
    has_target = target is not None and target in names
    numeric_names = [f for f in features if f not in categorical]
    columns = features + ([target] if target is not None and has_target else [])
    reader = reader_for(path)
    table = reader.table(columns, float_columns=numeric_names)
    return to_frame(table, str(path), reader.kind, numeric_names, categorical, target if has_target else None), features


def to_frame(table, origin: str, kind: str, numeric_names: list[str], categorical: list[str], target: str | None,
             rows: np.ndarray | None = None) -> Frame:
    """A pyarrow Table (a whole file or one chunk of it) as a Frame; `rows` are its rows' positions in the file."""
    first_row = int(rows[0]) if rows is not None and len(rows) else 0
    numeric = _numeric_matrix(table, numeric_names, origin, kind, first_row)
    text = {c: _text_column(table, c) for c in categorical}
    target_values = _target_column(table, target) if target is not None else None
    return Frame(origin, kind, numeric, numeric_names, text, target_values, rows)


def load_frames(path: Path, features: list[str], categorical: list[str], target: str | None, reader: Reader | None = None):
    """The file chunk by chunk as Frames (row groups for Parquet, blocks for CSV), with rows numbered in the file."""
    reader = reader or reader_for(path)
    numeric_names = [f for f in features if f not in categorical]
    first = 0
    for table in reader.chunks(features + ([target] if target is not None else [])):
        rows = np.arange(first, first + table.num_rows)
        first += table.num_rows
        yield to_frame(table, str(path), reader.kind, numeric_names, categorical, target, rows)


def _numeric_matrix(table, names: list[str], origin: str, kind: str, first_row: int = 0) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    for name in names:
        column = table.column(name)
        kind_of = column.type
        if pa.types.is_string(kind_of) or pa.types.is_large_string(kind_of):
            raise DataError(_text_in_numeric(column, name, origin, kind, first_row))
        if pa.types.is_null(kind_of):
            column = pa.chunked_array([pa.nulls(len(column), pa.float32())])
        elif not (pa.types.is_integer(kind_of) or pa.types.is_floating(kind_of) or pa.types.is_boolean(kind_of) or pa.types.is_decimal(kind_of)):
            raise DataError(
                f"{origin}: column {name!r} has type {kind_of}; features must be numbers (or text listed in data.categorical)"
            )
        elif not pa.types.is_float32(kind_of):
            column = pc.cast(column, pa.float32())
        columns.append(column)
    matrix = np.empty((table.num_rows, len(names)), dtype=np.float32)
    if not names:
        return matrix
    # Fill the row-major matrix a few thousand rows at a time across all columns: column-at-a-time writes
    # stride through memory and are several times slower on wide tables.
    block = 4096
    row = 0
    for batch in pa.table(columns, names=[str(i) for i in range(len(names))]).to_batches():
        arrays = [batch.column(j).to_numpy(zero_copy_only=False) for j in range(len(names))]
        for start in range(0, batch.num_rows, block):
            stop = min(start + block, batch.num_rows)
            target = matrix[row + start : row + stop]
            for j, values in enumerate(arrays):
                target[:, j] = values[start:stop]
        row += batch.num_rows
    return matrix


def _text_in_numeric(column, name: str, origin: str, kind: str, first_row: int = 0) -> str:
    values = column.to_pylist()
    for row, value in enumerate(values):
        if value is None:
            continue
        try:
            # Python's float() also takes "1_000" and non-ASCII digits, which pyarrow refuses: those are the culprit.
            if not value.isascii() or "_" in value:
                raise ValueError(value)
            float(value)
        except ValueError:
            return (
                f"{origin}: column {name!r} holds text, e.g. {value!r} at {where(origin, kind, first_row + row)}; "
                f"features must be numbers: fix the value, or list {name!r} in data.categorical to one-hot encode it"
            )
    return f"{origin}: column {name!r} holds text; features must be numbers"


def _text_column(table, name: str) -> np.ndarray:
    values = table.column(name).to_pylist()
    return np.array([None if v is None else str(v) for v in values], dtype=object)


def _target_column(table, name: str) -> np.ndarray:
    import pyarrow as pa

    column = table.column(name)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_decimal(column.type):
        return column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_null(column.type):
        return np.full(table.num_rows, np.nan)
    return np.array(column.to_pylist(), dtype=object)
