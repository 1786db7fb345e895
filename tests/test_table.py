"""The file layer (mlp_cli.data.readers): choosing a reader by extension, CSV/Parquet parity and file-level errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mlp_cli.config import config_from_dict, load_config
from mlp_cli.data import READERS, file_kind, header, load_dataset, load_frame, load_frames, read_table, reader_for
from mlp_cli.errors import DataError, MLPError

from conftest import assert_data_error


def write_csv(path: Path, columns: list[str], rows: list[list]) -> Path:
    lines = [",".join(columns)] + [",".join("" if v is None else str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(path: Path, columns: list[str], rows: list[list]) -> Path:
    table = pa.table({name: [row[j] for row in rows] for j, name in enumerate(columns)})
    pq.write_table(table, str(path))
    return path


def config(train: Path, target: str = "label", task: str = "multiclass", **data):
    seed = data.pop("seed", 0)
    return config_from_dict({"task": task, "data": {"train": str(train), "target": target, **data}, "train": {"seed": seed}})


def mixed_table(n: int = 60, label_kind: str = "str") -> tuple[list[str], list[list]]:
    """Numeric, integer and text feature columns plus a label column, deterministic."""
    rng = np.random.default_rng(7)
    labels = {
        "str": ["cat", "dog", "emu"],
        "int": [1, 2, 3, 4, 5, 7],
        "bool": [False, True],
    }[label_kind]
    rows = []
    for i in range(n):
        rows.append(
            [
                round(float(rng.normal()), 3),
                int(rng.integers(-5, 50)),
                ["red", "green", "blue"][i % 3],
                labels[i % len(labels)],
            ]
        )
    return ["x1", "count", "colour", "label"], rows


def csv_value(value):
    return str(value).lower() if isinstance(value, bool) else value


# ---------------------------------------------------------------------------------------------- readers


@pytest.mark.parametrize(
    "name, kind",
    [
        ("a.csv", "csv"),
        ("a.CSV", "csv"),
        ("a.tsv", "csv"),
        ("a.csv.gz", "csv"),
        ("a.parquet", "parquet"),
        ("a.pq", "parquet"),
    ],
)
def test_reader_is_chosen_by_extension(name, kind):
    assert file_kind(Path(name)) == kind


@pytest.mark.parametrize("name", ["table.xlsx", "table.json", "table"])
def test_unsupported_extension_is_refused_naming_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_text("x,label\n1,0\n")
    with pytest.raises(DataError) as info:
        load_dataset(config(path))
    message = str(info.value)
    assert str(path) in message
    assert "unsupported file type" in message
    assert (".xlsx" in message) if name.endswith(".xlsx") else True
    assert isinstance(info.value, MLPError)


@pytest.mark.parametrize("label_kind", ["str", "int", "bool"])
def test_csv_and_parquet_of_the_same_table_give_identical_tensors(tmp_path, label_kind):
    columns, rows = mixed_table(label_kind=label_kind)
    csv = write_csv(tmp_path / "t.csv", columns, [[csv_value(v) for v in row] for row in rows])
    parquet = write_parquet(tmp_path / "t.parquet", columns, rows)
    options = dict(categorical=["colour"], val_fraction=0.2, seed=3)
    a, b = load_dataset(config(csv, **options)), load_dataset(config(parquet, **options))
    assert a.prep.feature_names == b.prep.feature_names == ["x1", "count", "colour=blue", "colour=green", "colour=red"]
    assert a.prep.labels == b.prep.labels
    assert [type(v) for v in a.prep.labels] == [type(v) for v in b.prep.labels]
    assert a.prep.mean == b.prep.mean and a.prep.scale == b.prep.scale
    for name in ("train", "val", "test"):
        sa, sb = getattr(a, name), getattr(b, name)
        assert torch.equal(sa.x, sb.x), name
        assert torch.equal(sa.y, sb.y), name
        assert sa.x.dtype == sb.x.dtype == torch.float32
        np.testing.assert_array_equal(sa.rows, sb.rows)


def test_csv_reads_values_exactly(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["b", "a", "label"], [[1.5, -2, "x"], [0.25, 3, "y"], [7, 1e3, "x"]])
    frame, features = load_frame(path, None, [], "label", target_required=True)
    assert features == ["b", "a"]
    assert frame.kind == "csv" and frame.numeric.dtype == np.float32
    np.testing.assert_array_equal(frame.numeric, np.array([[1.5, -2], [0.25, 3], [7, 1000]], dtype=np.float32))
    assert list(frame.target) == ["x", "y", "x"]
    np.testing.assert_array_equal(frame.rows, [0, 1, 2])


def test_tsv_and_gzipped_csv_are_read(tmp_path):
    (tmp_path / "t.tsv").write_text("a\tlabel\n1\t0\n2\t1\n")
    with gzip.open(tmp_path / "t.csv.gz", "wt") as handle:
        handle.write("a,label\n1,0\n2,1\n")
    for name in ("t.tsv", "t.csv.gz"):
        frame, features = load_frame(tmp_path / name, None, [], "label", target_required=True)
        assert features == ["a"]
        np.testing.assert_array_equal(frame.numeric[:, 0], [1, 2])
        np.testing.assert_array_equal(frame.target, [0.0, 1.0])


def test_header_reads_names_of_both_formats(tmp_path):
    columns, rows = mixed_table(n=5)
    assert header(write_csv(tmp_path / "t.csv", columns, rows)) == columns
    assert header(write_parquet(tmp_path / "t.parquet", columns, rows)) == columns


def test_explicit_feature_order_is_kept_for_both_formats(tmp_path):
    columns, rows = mixed_table(n=10)
    for path in (write_csv(tmp_path / "t.csv", columns, rows), write_parquet(tmp_path / "t.parquet", columns, rows)):
        frame, features = load_frame(path, ["count", "x1"], [], "label", target_required=True)
        assert features == ["count", "x1"] and frame.numeric_names == ["count", "x1"]
        np.testing.assert_array_equal(frame.numeric[:, 0], [row[1] for row in rows])
        np.testing.assert_allclose(frame.numeric[:, 1], [row[0] for row in rows], rtol=1e-6)


def test_yaml_config_resolves_data_paths_against_its_folder(tmp_path):
    folder = tmp_path / "exp"
    folder.mkdir()
    write_csv(folder / "train.csv", ["a", "label"], [[i, i % 2] for i in range(20)])
    (folder / "exp.yaml").write_text("task: binary\ndata:\n  train: train.csv\n  target: label\n  val_fraction: 0\n")
    cfg = load_config(folder / "exp.yaml")
    assert Path(cfg.data.train) == (folder / "train.csv").resolve()
    dataset = load_dataset(cfg)
    assert len(dataset.train) + len(dataset.test) == 20
    assert dataset.val is None


# ---------------------------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.csv"
    with pytest.raises(DataError) as info:
        load_dataset(config(path))
    assert_data_error(info, str(path), "not found")


@pytest.mark.parametrize("name", ["empty.csv", "empty.tsv"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(DataError) as info:
        load_dataset(config(path))
    assert_data_error(info, str(path), "empty")


def test_empty_file_via_read_table(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_table(path)


def test_header_only(tmp_path):
    path = tmp_path / "head.csv"
    path.write_text("a,b,label\n")
    with pytest.raises(DataError) as info:
        load_dataset(config(path))
    assert_data_error(info, str(path), "no data rows")


def test_header_only_parquet(tmp_path):
    path = tmp_path / "head.parquet"
    pq.write_table(pa.table({"a": pa.array([], pa.float64()), "label": pa.array([], pa.int64())}), str(path))
    with pytest.raises(DataError) as info:
        load_dataset(config(path))
    assert_data_error(info, str(path), "no data rows")


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(DataError) as info:
        load_dataset(config(path))
    assert_data_error(info, str(path), "Parquet")


def test_target_absent_lists_columns_and_suggests_closest(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["height", "width", "label"], [[1, 2, 0], [3, 4, 1]])
    with pytest.raises(DataError) as info:
        load_dataset(config(path, target="lable"))
    message = assert_data_error(info, str(path), "'lable'", "did you mean 'label'?")
    assert "height, width, label" in message


def test_feature_absent(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["height", "width", "label"], [[1, 2, 0], [3, 4, 1]])
    with pytest.raises(DataError) as info:
        load_dataset(config(path, features=["height", "widht"]))
    assert_data_error(info, str(path), "feature column", "'widht'", "did you mean 'width'?")


def test_duplicate_column_names(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,a,label\n1,2,0\n3,4,1\n")
    with pytest.raises(DataError) as info:
        load_dataset(config(path))
    assert_data_error(info, str(path), "duplicate", "'a'")


@pytest.mark.parametrize("row, line", [(0, 2), (5, 7), (19, 21)])
def test_text_in_numeric_column_names_file_column_value_and_line(tmp_path, row, line):
    rows = [[i * 0.5, i, i % 2] for i in range(20)]
    rows[row][1] = "oops"
    path = write_csv(tmp_path / "t.csv", ["a", "b", "label"], rows)
    with pytest.raises(DataError) as info:
        load_dataset(config(path, task="binary"))
    message = assert_data_error(info, str(path), "column 'b'", "'oops'", f"line {line}")
    assert "data.categorical" in message  # says how to use it as text


def test_text_in_numeric_parquet_column_counts_rows_from_one(tmp_path):
    rows = [[float(i), str(i), i % 2] for i in range(10)]
    rows[3][1] = "n/a?"
    path = write_parquet(tmp_path / "t.parquet", ["a", "b", "label"], rows)
    with pytest.raises(DataError) as info:
        load_dataset(config(path, task="binary"))
    assert_data_error(info, str(path), "column 'b'", "'n/a?'", "row 4")


def test_non_numeric_value_deep_in_a_large_csv_is_located(tmp_path):
    # Far past pyarrow's first block, where the fast float32 path fails and the type is inferred per block.
    n = 120_000
    lines = ["a,label"] + [f"{i % 97 * 0.25},{i % 2}" for i in range(n)]
    lines[n - 3] = "seven,0"  # data row n - 4
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        load_frame(path, None, [], "label", target_required=True)
    assert_data_error(info, str(path), "column 'a'", "'seven'", f"line {n - 2}")


@pytest.mark.parametrize("value", ["1_000", "\u0661\u0662"])  # numbers to Python's float(), text to pyarrow
def test_value_python_would_parse_but_pyarrow_does_not_is_named(tmp_path, value):
    rows = [[float(i), i % 2] for i in range(10)]
    rows[6][0] = value
    path = tmp_path / "t.csv"
    path.write_text("a,label\n" + "\n".join(f"{a},{b}" for a, b in rows) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_frame(path, None, [], "label", target_required=True)
    assert_data_error(info, str(path), "column 'a'", repr(value), "line 8")


def test_empty_text_cell_is_missing_not_a_category(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('a,kind,label\n1,u,x\n2,,y\n3,"",x\n4,v,\n')
    frame, _ = load_frame(path, None, ["kind"], "label", target_required=True)
    assert list(frame.text["kind"]) == ["u", None, None, "v"]
    assert list(frame.target) == ["x", "y", "x", None]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_every_reader_yields_the_same_frame_whole_or_in_chunks(tmp_path, suffix):
    # Chunks small enough that the file arrives in several: Parquet row groups of 7 rows, CSV blocks of 64 bytes.
    columns, rows = mixed_table(60)
    path = tmp_path / f"t{suffix}"
    if suffix == ".csv":
        write_csv(path, columns, rows)
    else:
        pq.write_table(pa.table({name: [row[j] for row in rows] for j, name in enumerate(columns)}), str(path), row_group_size=7)
    features = [c for c in columns if c != "label"]
    whole, _ = load_frame(path, features, ["colour"], "label", target_required=True)
    reader = reader_for(path)
    assert type(reader) is READERS[suffix[1:]]
    if suffix == ".csv":
        reader.chunk_bytes = 64
    parts = list(load_frames(path, features, ["colour"], "label", reader=reader))
    assert len(parts) > 1
    np.testing.assert_array_equal(np.concatenate([p.numeric for p in parts]), whole.numeric)
    np.testing.assert_array_equal(np.concatenate([p.text["colour"] for p in parts]), whole.text["colour"])
    assert [str(v) for p in parts for v in p.target] == [str(v) for v in whole.target]
    np.testing.assert_array_equal(np.concatenate([p.rows for p in parts]), whole.rows)
    assert parts[-1].rows_text(np.array([len(parts[-1]) - 1])) == whole.rows_text(np.array([len(whole) - 1]))


# ---------------------------------------------------------------------------------------------- #12: text formats


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_the_delimiter_is_sniffed_among_the_four(tmp_path, delimiter):
    path = tmp_path / "d.csv"
    path.write_text(delimiter.join(["a", "b c", "label"]) + "\n" + "".join(f"{i}{delimiter}{i / 3}{delimiter}x\n" for i in range(5)))
    reader = reader_for(path)
    assert reader.columns() == ["a", "b c", "label"]
    assert reader.dialect()[1] == delimiter
    assert bool(reader.notes()) == (delimiter != ",")


def test_a_chosen_delimiter_wins_over_sniffing(tmp_path):
    from mlp_cli.data import TextFormat

    path = tmp_path / "d.csv"
    path.write_text("a;b,c\n1;2,3\n4;5,6\n")
    assert reader_for(path, TextFormat(delimiter=",")).columns() == ["a;b", "c"]
    assert reader_for(path, TextFormat(delimiter=";")).columns() == ["a", "b,c"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
def test_a_byte_order_mark_chooses_the_encoding(tmp_path, encoding):
    path = tmp_path / "bom.csv"
    path.write_bytes("é,label\n1,forêt\n2,blé\n".encode(encoding))
    frame, features = load_frame(path, None, [], "label", target_required=True)
    assert features == ["é"] and list(frame.target) == ["forêt", "blé"]


def test_non_utf8_bytes_after_the_sample_are_refused_naming_the_key(tmp_path):
    path = tmp_path / "late.csv"
    # 70 000 ASCII rows first: the 64 KiB sniff sample is clean, so the column check must catch it.
    path.write_bytes(b"x,label\n" + b"1,a\n2,b\n" * 10_000 + "3,forêt\n".encode("cp1252"))
    with pytest.raises(DataError) as info:
        load_frame(path, None, [], "label", target_required=True)
    assert_data_error(info, "'label'", "not UTF-8", "data.encoding", "line 20002")


def test_integer_columns_beyond_float32_are_cast_and_reported_once_per_column():
    from mlp_cli.data import rounded_integers, to_frame

    table = pa.table({"ts": pa.array([2**62, 2**62 + 1], pa.int64()), "id": pa.array([2**64 - 1, 7], pa.uint64()),
                      "small": pa.array([1, 2], pa.int64()), "label": ["a", "b"]})
    frame = to_frame(table, "t", "parquet", ["ts", "id", "small"], [], "label")
    assert frame.numeric[0, 0] == np.float32(2**62) and frame.numeric[0, 1] == np.float32(2**64)
    seen: set = set()
    assert len(rounded_integers(frame, seen)) == 2 and seen == {"ts", "id"}
    assert rounded_integers(frame, seen) == []  # the next chunk says nothing new


def test_na_values_apply_to_text_cells_of_every_reader(tmp_path):
    from mlp_cli.data import TextFormat

    columns, rows = ["x", "country", "label"], [[1.0, "NA", "a"], [2.0, "ZA", "NA"], [3.0, "", "b"]]
    for path in (write_csv(tmp_path / "t.csv", columns, rows), write_parquet(tmp_path / "t.parquet", columns, rows)):
        frame, _ = load_frame(path, None, ["country"], "label", target_required=True)
        assert list(frame.text["country"]) == ["NA", "ZA", None] and list(frame.target) == ["a", "NA", "b"]
        frame, _ = load_frame(path, None, ["country"], "label", target_required=True, text=TextFormat(na_values=("", "NA")))
        assert list(frame.text["country"]) == [None, "ZA", None] and list(frame.target) == ["a", None, "b"]


@pytest.mark.parametrize("label_kind", ["str", "int"])
def test_a_csv_is_read_whole_when_memory_allows_and_block_by_block_otherwise_with_the_same_frame(tmp_path, monkeypatch, label_kind):
    from mlp_cli import host
    from mlp_cli.data.readers import WHOLE_FILE_SHARE, CsvReader

    columns, rows = mixed_table(400, label_kind)
    path = write_csv(tmp_path / "t.csv", columns, [[csv_value(v) for v in row] for row in rows])
    size = path.stat().st_size
    frames = {}
    for free, whole in [(size * WHOLE_FILE_SHARE, True), (size * WHOLE_FILE_SHARE - 1, False), (None, False)]:
        monkeypatch.setattr(host, "available_bytes", lambda free=free: free)
        assert CsvReader(path)._fits_whole() is whole
        frames[free], _ = load_frame(path, None, ["colour"], "label", target_required=True)
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    monkeypatch.setattr(host, "available_bytes", lambda: 1 << 60)
    assert not CsvReader(gz)._fits_whole()  # compressed bytes say little about what read_csv would hold
    first, *others = frames.values()
    for other in others:
        assert np.array_equal(first.numeric, other.numeric) and first.numeric.dtype == other.numeric.dtype == np.float32
        assert list(first.target) == list(other.target) and list(first.text["colour"]) == list(other.text["colour"])


def test_torchrun_ranks_of_one_node_share_the_free_memory_a_whole_read_needs(tmp_path, monkeypatch):
    from mlp_cli import host
    from mlp_cli.data.readers import WHOLE_FILE_SHARE, CsvReader

    path = write_csv(tmp_path / "t.csv", ["a", "label"], [[1, 0], [2, 1]])
    monkeypatch.setattr(host, "available_bytes", lambda: path.stat().st_size * WHOLE_FILE_SHARE * 4)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert CsvReader(path)._fits_whole()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "5")
    assert not CsvReader(path)._fits_whole()


def test_negative_whole_numbers_beyond_2_24_are_noted_too():
    from mlp_cli.data import Frame, rounded_integers

    numeric = np.array([[-(2.0**25), 0.5], [-(2.0**25) - 2, np.nan], [4.0, np.inf]], dtype=np.float32)
    notes = rounded_integers(Frame("f", "csv", numeric, ["id", "x"]))
    assert len(notes) == 1 and "'id'" in notes[0] and "3.355443e+07" in notes[0]
