"""Atomic writes and the one CSV writer: every CSV mlp writes reads back cell for cell, whatever the text."""

from __future__ import annotations

import csv
import math

import numpy as np
import pyarrow.csv as pacsv

from mlp_cli import files
from mlp_cli.files import csv_line, json_safe, write_csv

from conftest import write_config

AWKWARD = 'say "hi", ok\nnext line'  # a quote, a comma and a newline: what a hand-written writer gets wrong


def read_rows(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_write_csv_round_trips_awkward_text_through_csv_and_pyarrow(tmp_path):
    path = tmp_path / "t.csv"
    write_csv(path, ["name", AWKWARD, "x"], [[AWKWARD, 1, 0.125], ["plain", None, 1 / 3]], digits=6)
    assert read_rows(path) == [["name", AWKWARD, "x"], [AWKWARD, "1", "0.125"], ["plain", "", "0.333333"]]
    table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True))
    assert table.column_names == ["name", AWKWARD, "x"] and table.column("name").to_pylist() == [AWKWARD, "plain"]
    assert not list(tmp_path.glob(f"{files.TEMP_PREFIX}*"))


def test_csv_line_formats_floats_and_blanks():
    assert csv_line([1, 0.1234567891, None, "a,b"]) == '1,0.12345679,,"a,b"\n'
    assert csv_line([math.nan], digits=3) == "nan\n"


def test_json_safe_writes_non_finite_as_null():
    assert json_safe({"a": [math.inf, 1.0, (math.nan,)], "b": "x"}) == {"a": [None, 1.0, [None]], "b": "x"}


def test_every_written_csv_keeps_awkward_labels_and_paths(invoke, tmp_path):
    """metrics.csv, diagnostics.csv, predictions and sweep.csv all parse back with the awkward text intact."""
    rng = np.random.default_rng(0)
    labels = [AWKWARD if i % 2 else "plain" for i in range(120)]
    x = rng.normal(size=(120, 3)) + np.array([[2.0 if label == "plain" else -2.0] for label in labels])
    with open(tmp_path / "t.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["f0", "f1", "f2", "label"])
        writer.writerows([*row, label] for row, label in zip(x.tolist(), labels, strict=True))
    out = tmp_path / 'we"ird, out\nput'
    config = write_config(tmp_path / "c.yaml", {
        "task": "multiclass",
        "data": {"train": "t.csv", "target": "label", "val_fraction": 0.25},
        "model": {"hidden": [8]},
        "train": {"epochs": 2, "batch_size": 32, "diagnostics": True},
        "output_dir": str(out),
    })
    result = invoke("train", config, "--quiet")
    assert result.exit_code == 0, result.output
    metrics = read_rows(out / "metrics.csv")
    assert metrics[0][:3] == ["epoch", "train_loss", "val_loss"] and [r[0] for r in metrics[1:]] == ["1", "2"]
    diagnostics = read_rows(out / "diagnostics.csv")
    assert len({len(r) for r in diagnostics}) == 1 and len(diagnostics) > 2

    result = invoke("predict", out / "best.pt", tmp_path / "t.csv", "-o", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    predictions = read_rows(tmp_path / "p.csv")
    assert sorted(predictions[0]) == sorted(["prediction", f"prob_{AWKWARD}", "prob_plain"])
    assert len(predictions) == 121 and {r[0] for r in predictions[1:]} <= {AWKWARD, "plain"}

    result = invoke("sweep", config, "train.epochs", "1")
    assert result.exit_code == 0, result.output
    sweep = read_rows(out / "sweep-train.epochs" / "sweep.csv")
    assert sweep[0][0] == "value" and sweep[1][0] == "1" and sweep[1][-1].startswith(str(out))
