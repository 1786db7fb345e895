"""The table of file readers (CSV, Parquet; one class per format) and the `Frame` each of them yields: typed
column arrays, whole or chunk by chunk, with errors that name file, column and row."""

from __future__ import annotations

import codecs
import csv
import difflib
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlp_cli import host
from mlp_cli.errors import DataError, MLPWarning


def label_text(value) -> str:
    """A label as a CSV file writes it: booleans as true/false, everything else as str()."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class TextFormat:
    """How text cells are read, the same for every reader: data.encoding, data.delimiter and data.na_values."""

    encoding: str | None = None  # None: UTF-8, or what the file's byte-order mark says
    delimiter: str | None = None  # None: sniffed from the first lines among DELIMITERS
    na_values: tuple[str, ...] = ("",)  # text cells that count as missing

    @classmethod
    def of(cls, source) -> TextFormat:
        """From a DataConfig or a Preprocessor's `text` dict (absent keys keep the defaults)."""
        if source is None:
            return cls()
        get = source.get if isinstance(source, dict) else lambda key, default=None: getattr(source, key, default)
        na = get("na_values", None)
        return cls(get("encoding", None), get("delimiter", None), cls.na_values if na is None else tuple(na))

    def to_dict(self) -> dict:
        return {"encoding": self.encoding, "delimiter": self.delimiter, "na_values": list(self.na_values)}


DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
# Cells a number column reads as missing whatever data.na_values says: no number is spelled like these, so they
# can only mean "no value" (pyarrow's list: R's NA, pandas' NaN, SQL's NULL, Excel's #N/A ...).
NUMBER_NA = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "N/A", "NA",
             "NULL", "NaN", "n/a", "nan", "null")
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_BAD_ROW = re.compile(r"Expected (\d+) columns, got (\d+): (.*)")
WHOLE_FILE_SHARE = 8  # a CSV is read whole (in parallel) when 8x its size is free memory, else block by block
_SAMPLE_BYTES = 1 << 16  # enough for the header and the first lines; sniffing and the UTF-8 check look at these


class Reader:
    """One file format: its column names, the whole file as a pyarrow Table, and the file in chunks.

    `load_frame` turns either into the same `Frame`. A new format is one subclass and one entry in READERS.
    """

    kind = ""
    suffixes: tuple[str, ...] = ()
    row_word = "row"  # how a user counts the file's data rows in messages
    first_number = 1  # the number a user gives the first data row

    def __init__(self, path: Path, text: TextFormat | None = None):
        self.path = path
        self.text = text or TextFormat()

    def notes(self) -> list[str]:
        """What the reader decided on its own that the user should hear (e.g. a detected delimiter)."""
        return []

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

    _dialect: tuple[str, str, bool] | None = None  # (encoding, delimiter, delimiter was sniffed)

    def _head(self) -> bytes:
        import pyarrow as pa

        try:
            with pa.input_stream(str(self.path), compression="detect") as stream:
                return stream.read(_SAMPLE_BYTES)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(f"cannot read {self.path}: {exc}") from None

    def dialect(self) -> tuple[str, str, bool]:
        """(encoding, delimiter, sniffed?) from data.encoding / data.delimiter, else from the file's first bytes."""
        if self._dialect is not None:
            return self._dialect
        head = self._head()
        encoding = self.text.encoding
        if encoding is None:
            encoding = next((name for bom, name in _BOMS if head.startswith(bom)), "utf-8")
            if encoding == "utf-8" and b"\x00" in head:  # no text file holds NUL bytes; UTF-16 without a mark does
                raise DataError(
                    f"{self.path}: holds NUL bytes, as UTF-16 text without a byte-order mark does; set data.encoding, "
                    "e.g. data.encoding: utf-16-le (Windows) or utf-16-be"
                )
        try:
            encoding = codecs.lookup(encoding).name  # "UTF8", "utf_8" ... are all "utf-8"
        except LookupError:
            raise DataError(f"data.encoding {encoding!r} is not an encoding Python knows (e.g. utf-8, latin-1, cp1252, utf-16)") from None
        sample = head.decode(encoding, errors="replace" if self.text.encoding else "strict") if encoding != "utf-8" else None
        if sample is None:
            try:
                sample = head.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                if exc.start < len(head) - 3:  # not merely a character cut at the end of the sample
                    raise self._not_utf8(head, exc.start) from None
                sample = head[: exc.start].decode("utf-8-sig")
        delimiter, sniffed = self.text.delimiter, False
        if delimiter is None:
            tsv = self.path.name.lower().endswith(".tsv")  # tab by name: nothing to report
            delimiter, sniffed = ("\t", False) if tsv else (_sniff(sample), True)
        self._dialect = (encoding, delimiter, sniffed)
        return self._dialect

    def _not_utf8(self, head: bytes, at: int) -> DataError:
        line = head[:at].count(b"\n") + 1
        return DataError(
            f"{self.path}: line {line} is not UTF-8 text (byte 0x{head[at]:02x}); set data.encoding to the file's "
            "encoding, e.g. data.encoding: cp1252 (Windows, European Excel) or latin-1"
        )

    def notes(self) -> list[str]:
        _, delimiter, sniffed = self.dialect()
        if sniffed and delimiter != ",":
            return [(f"{self.path}: read with {DELIMITERS.get(delimiter, repr(delimiter))} ({delimiter!r}) as the delimiter, "
                     "detected from the first lines; set data.delimiter to choose another")]
        return []

    def _read_options(self, **extra):
        import pyarrow.csv as pacsv

        encoding = self.dialect()[0]
        return pacsv.ReadOptions(encoding="utf8" if encoding == "utf-8" else encoding, **extra)

    def _parse_options(self):
        import pyarrow.csv as pacsv

        return pacsv.ParseOptions(delimiter=self.dialect()[1])

    def _error(self, exc: Exception) -> DataError:
        text = str(exc)
        if "Empty CSV file" in text:
            return DataError(f"{self.path}: the file is empty; a CSV needs a header row and data rows")
        # pyarrow names the row's text but not its line (an invalid_row_handler would, but calling back into Python
        # from pyarrow's threads aborts the interpreter at exit); find the line from the text.
        bad = _BAD_ROW.search(text)
        if bad:
            expected, actual, row = int(bad[1]), int(bad[2]), bad[3]
            line = self._line_of(row)
            return DataError(
                f"{self.path}: {'line ' + str(line) if line else 'a line'} has {actual} field{'s' if actual != 1 else ''} but the "
                f"header has {expected} ({row[:80]!r}); every line needs one value per column"
                + (f" (the delimiter {self.dialect()[1]!r} was detected; set data.delimiter if it is wrong)" if self.dialect()[2] else "")
            )
        return DataError(f"{self.path}: cannot parse as CSV: {text.splitlines()[0]}")

    def _line_of(self, text: str) -> int | None:
        import pyarrow as pa

        encoding = self.dialect()[0]
        try:
            with pa.input_stream(str(self.path), compression="detect") as stream:
                reader = codecs.getreader("utf-8-sig" if encoding == "utf-8" else encoding)(stream, "replace")  # errors="replace"
                for number, line in enumerate(reader, start=1):
                    if line.rstrip("\r\n") == text:
                        return number
        except Exception:  # the message is still useful without the number
            return None
        return None

    def columns(self) -> list[str]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        self.check_exists()
        try:
            reader = pacsv.open_csv(str(self.path), read_options=self._read_options(), parse_options=self._parse_options())
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
            # Number columns take the usual missing markers; text columns stay text here and data.na_values
            # decides in to_frame which of their cells are missing (so "NA", Namibia, stays a country).
            null_values=sorted(set(NUMBER_NA) | set(self.text.na_values)),
            strings_can_be_null=False,
        )

    def table(self, columns: list[str] | None = None, float_columns: Sequence[str] = ()):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        self.check_exists()
        if self.path.stat().st_size == 0:
            raise DataError(f"{self.path}: the file is empty; a CSV needs a header row and data rows")
        convert = self._convert(columns, float_columns)
        try:
            if float_columns and not self._fits_whole():
                # Streaming reader: it never holds the whole file's bytes, only the parsed columns, but parses on
                # one thread (1.8x read_csv's time on 2 cores). It infers the types of the remaining (target,
                # categorical) columns from the first block, so any surprise later falls back to read_csv below,
                # which looks at the whole file.
                table = pacsv.open_csv(str(self.path), read_options=self._read_options(), parse_options=self._parse_options(),
                                       convert_options=convert).read_all()
            else:
                table = pacsv.read_csv(str(self.path), read_options=self._read_options(), parse_options=self._parse_options(),
                                       convert_options=convert)
        except pa.ArrowInvalid as exc:
            if float_columns and "conversion error" in str(exc).lower() and not _BAD_ROW.search(str(exc)):
                # A number column holds text somewhere: read it with type inference to name the value and row.
                return self.table(columns)
            raise self._error(exc) from None
        except OSError as exc:
            raise DataError(f"cannot read {self.path}: {exc}") from None
        return _nonempty(self.path, table)

    def _fits_whole(self) -> bool:
        """read_csv (parallel) holds the file's bytes besides the parsed table: fine while they are a small share of
        the memory the machine has free; a file too large for that is parsed block by block instead."""
        if self.path.name.lower().endswith((".gz", ".bz2", ".zst")):
            return False  # the bytes on disk say little about the bytes read_csv holds
        free = host.available_bytes()
        ranks = host.ranks_on_this_node()  # torchrun: each rank of this node reads the file at the same moment
        return free is not None and self.path.stat().st_size * WHOLE_FILE_SHARE * ranks <= free

    def chunks(self, columns: list[str] | None = None):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        self.check_exists()
        try:
            reader = pacsv.open_csv(str(self.path), read_options=self._read_options(block_size=self.chunk_bytes),
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
            return [n for n in ds.dataset(str(self.path), format="parquet").schema.names if not stored_index(n)]
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


def _sniff(sample: str) -> str:
    """The delimiter of a CSV sample among DELIMITERS (csv.Sniffer on whole lines); a comma when unsure."""
    lines = sample.splitlines()
    if len(lines) > 1 and not sample.endswith(("\n", "\r")):
        lines = lines[:-1]  # the sample may end inside a line
    text = "\n".join(lines[:50])
    try:
        found = csv.Sniffer().sniff(text, delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        return ","
    # The sniffer can pick a character that merely repeats within one column; the header must split on it too.
    return found if found in DELIMITERS and lines and lines[0].count(found) > 0 else ","


_STORED_INDEX = re.compile(r"^__index_level_\d+__$")


def stored_index(name: str) -> bool:
    """pandas' unnamed index written into a Parquet file: row numbers, never a feature."""
    return bool(_STORED_INDEX.match(name))


# kind -> reader class, asked in order which one claims a path
READERS: dict[str, type[Reader]] = {reader.kind: reader for reader in (CsvReader, ParquetReader)}


def reader_for(path: Path, text: TextFormat | None = None) -> Reader:
    for reader in READERS.values():
        if reader.claims(path):
            return reader(path, text)
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


def header(path: Path, text: TextFormat | None = None) -> list[str]:
    """Column names without reading the data (cheap for both formats)."""
    return reader_for(path, text).columns()


def read_table(path: Path, columns: list[str] | None = None, float_columns: Sequence[str] = (), text: TextFormat | None = None):
    """The file as a pyarrow Table; `float_columns` are parsed straight to float32 (fast path, half the memory)."""
    return reader_for(path, text).table(columns, float_columns)


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

    def take(self, index: np.ndarray) -> Frame:
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
    path: Path, features: list[str] | None, categorical: list[str], target: str | None, *, target_required: bool,
    text: TextFormat | None = None,
) -> tuple[Frame, list[str]]:
    """Read the feature columns (default: all but the target) and the target; returns the frame and feature order."""
    reader = reader_for(path, text)
    names = reader.columns()
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
    table = reader.table(columns, float_columns=numeric_names)
    for note in reader.notes():
        warnings.warn(note, MLPWarning, stacklevel=2)
    frame = to_frame(table, str(path), reader.kind, numeric_names, categorical, target if has_target else None,
                     na_values=reader.text.na_values)
    for note in rounded_integers(frame):
        warnings.warn(note, MLPWarning, stacklevel=2)
    return frame, features


_EXACT = 1 << 24  # float32 holds every integer up to 2^24 exactly, and then only every 2nd, 4th, ...


def rounded_integers(frame: Frame, names: set[str] | None = None) -> list[str]:
    """A note per numeric column of whole numbers beyond 2^24 (ids, timestamps), which float32 features round.

    `names` collects the columns already reported, so a file read chunk by chunk reports each column once.
    """
    notes: list[str] = []
    if not frame.numeric.size:
        return notes
    # Only columns whose largest magnitude passes 2^24 are looked at closely (NaN ignored, inf counts as large).
    with np.errstate(invalid="ignore"):  # without np.abs: that would copy the whole matrix
        largest = np.fmax(np.fmax.reduce(frame.numeric, axis=0), -np.fmin.reduce(frame.numeric, axis=0))
    for j, name in enumerate(frame.numeric_names):
        if (names is not None and name in names) or not largest[j] > _EXACT:
            continue
        column = frame.numeric[:, j]
        finite = column[np.isfinite(column)]
        if len(finite) and np.abs(finite).max() > _EXACT and np.all(finite == np.round(finite)):
            notes.append(
                f"{frame.origin}: column {name!r} holds whole numbers beyond 2^24 (up to {np.abs(finite).max():.7g}); "
                "features are float32, which keeps about 7 significant digits, so nearby values become equal "
                "(an id carries no signal: leave it out of data.features; a timestamp: make it relative, e.g. days since start)"
            )
            if names is not None:
                names.add(name)
    return notes


def to_frame(table, origin: str, kind: str, numeric_names: list[str], categorical: list[str], target: str | None,
             rows: np.ndarray | None = None, na_values=("",)) -> Frame:
    """A pyarrow Table (a whole file or one chunk of it) as a Frame; `rows` are its rows' positions in the file.

    Text cells listed in `na_values` (data.na_values) become missing, in every reader.
    """
    first_row = int(rows[0]) if rows is not None and len(rows) else 0
    for name in [*categorical, *([target] if target is not None else [])]:
        _check_text(table.column(name), name, origin, kind, first_row)
    numeric = _numeric_matrix(table, numeric_names, origin, kind, first_row)
    missing = frozenset(na_values)
    text = {c: _text_column(table, c, missing) for c in categorical}
    target_values = _target_column(table, target, missing, origin) if target is not None else None
    return Frame(origin, kind, numeric, numeric_names, text, target_values, rows)


def load_frames(path: Path, features: list[str], categorical: list[str], target: str | None, reader: Reader | None = None):
    """The file chunk by chunk as Frames (row groups for Parquet, blocks for CSV), with rows numbered in the file."""
    reader = reader or reader_for(path)
    na_values = reader.text.na_values
    numeric_names = [f for f in features if f not in categorical]
    first = 0
    for table in reader.chunks(features + ([target] if target is not None else [])):
        rows = np.arange(first, first + table.num_rows)
        first += table.num_rows
        yield to_frame(table, str(path), reader.kind, numeric_names, categorical, target, rows, na_values)


def _check_text(column, name: str, origin: str, kind: str, first_row: int) -> None:
    """Bytes are never labels or categories: a CSV's non-UTF-8 cell names data.encoding, a Parquet blob is refused."""
    import pyarrow as pa

    if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        return
    for row, value in enumerate(column.to_pylist()):  # noqa: B007 (row names the bad cell after the break)
        if value is None:
            continue
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            break
    else:
        row, value = 0, b""
    if kind == "csv":
        raise DataError(
            f"{origin}: column {name!r} is not UTF-8 text (e.g. {value!r} at {where(origin, kind, first_row + row)}); "
            "set data.encoding to the file's encoding, e.g. data.encoding: cp1252 (Windows, European Excel) or latin-1"
        )
    raise DataError(f"{origin}: column {name!r} holds binary values, not text; labels and categories must be text or numbers")


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
            # Unsafe: pyarrow's safe cast refuses integers beyond 2^24 (int64 timestamps, uint64 ids); float32
            # rounds them like any float, and load_frame says so (rounded_integers).
            column = pc.cast(column, pa.float32(), safe=False)
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
            if _DECIMAL_COMMA.match(value.strip()):
                return (
                    f"{origin}: column {name!r} holds {value!r} at {where(origin, kind, first_row + row)}, a decimal comma; "
                    "mlp reads decimal points: save the file with '.' as the decimal separator (in Excel: File > Options > "
                    "Advanced > uncheck 'Use system separators'), or convert it, e.g. sed 's/,/./g' on a ';' file"
                )
            return (
                f"{origin}: column {name!r} holds text, e.g. {value!r} at {where(origin, kind, first_row + row)}; "
                f"features must be numbers: fix the value, or list {name!r} in data.categorical to one-hot encode it"
            )
    return f"{origin}: column {name!r} holds text; features must be numbers"


_DECIMAL_COMMA = re.compile(r"^[-+]?[0-9]+,[0-9]+$")


def _text_column(table, name: str, missing=frozenset({""})) -> np.ndarray:
    values = table.column(name).to_pylist()
    return np.array([None if v is None or str(v) in missing else str(v) for v in values], dtype=object)


def _target_column(table, name: str, missing=frozenset({""}), origin: str = "") -> np.ndarray:
    import pyarrow as pa

    column = table.column(name)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_decimal(column.type):
        return column.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    if pa.types.is_null(column.type):
        return np.full(table.num_rows, np.nan)
    values = column.to_pylist()
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        values = [None if v is None or v in missing else v for v in values]
    return np.array(values, dtype=object)
