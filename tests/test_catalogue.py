"""The bad-input catalogue: each case exits 2 with one message naming file/key/column and line/row, no
traceback, and leaves an existing run directory exactly as it was (even with --overwrite)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlp_cli.cli import app

from conftest import blobs, write_csv

GOOD = "task: multiclass\ndata:\n  train: good.csv\n  target: label\nmodel:\n  hidden: [4]\ntrain:\n  epochs: 1\n"

# name: (config text, files to write {name: text or columns}, words the message must contain)
CONFIG_CASES = {
    "yaml syntax": ("task: [multiclass\n", {}, ["c.yaml:2:1", "YAML syntax error"]),
    "tab indentation": ("task: multiclass\ndata:\n\ttrain: good.csv\n", {}, ["c.yaml:3:1", "tab"]),
    "duplicate key": (GOOD + "task: binary\n", {}, ["c.yaml:9", "duplicate key 'task'", "line 1"]),
    "unknown key": (GOOD + "  epoch: 3\n", {}, ["c.yaml:9", "unknown key 'train.epoch'", "did you mean 'epochs'"]),
    "wrong type": (GOOD.replace("epochs: 1", "epochs: ten"), {}, ["c.yaml:8", "train.epochs must be a whole number", "'ten'"]),
    "yaml 1.1 boolean": (GOOD.replace("hidden: [4]", "activation: no"), {}, ["c.yaml:6", "model.activation", "unquoted no"]),
    "python tag": ("task: !!python/object/apply:os.system [ls]\n", {}, ["c.yaml:1", "not allowed"]),
    "zero width": (GOOD.replace("[4]", "[4, 0]"), {}, ["c.yaml:6", "model.hidden.1 must be >= 1"]),
    "negative width": (GOOD.replace("[4]", "[-2]"), {}, ["c.yaml:6", "model.hidden.0 must be >= 1"]),
    "empty config": ("", {}, ["c.yaml", "empty"]),
    "list config": ("- task\n- data\n", {}, ["c.yaml", "mapping", "not a list"]),
    "missing data file": (GOOD.replace("good.csv", "nope.csv"), {}, ["data file not found", "nope.csv"]),
    "empty csv": (GOOD.replace("good.csv", "empty.csv"), {"empty.csv": ""}, ["empty.csv", "empty"]),
    "header only": (GOOD.replace("good.csv", "header.csv"), {"header.csv": "f0,f1,label\n"}, ["header.csv", "no data rows"]),
    "missing target": (GOOD.replace("target: label", "target: lable"), {}, ["good.csv", "'lable'", "did you mean 'label'"]),
    "non-numeric feature": (
        GOOD.replace("good.csv", "text.csv"),
        {"text.csv": "f0,f1,label\n1,2,a\n3,x7,b\n5,6,a\n7,8,b\n"},
        ["text.csv", "'f1'", "'x7'", "line 3", "data.categorical"],
    ),
    "nan features": (
        GOOD.replace("good.csv", "nan.csv"),
        {"nan.csv": "f0,f1,label\n1,2,a\n3,,b\n5,NaN,a\n7,8,b\n"},
        ["nan.csv", "missing values", "'f1'", "lines 3, 4", "data.missing"],
    ),
    "single class": (
        GOOD.replace("good.csv", "one.csv"),
        {"one.csv": "f0,label\n1,a\n2,a\n3,a\n"},
        ["one.csv", "one class only", "'a' (3 rows)"],
    ),
    "binary with three classes": (
        GOOD.replace("multiclass", "binary").replace("good.csv", "three.csv"),
        {"three.csv": "f0,label\n1,a\n2,b\n3,c\n4,a\n5,b\n6,c\n"},
        ["three.csv", "exactly two classes", "has 3", "'c' (2 rows)"],
    ),
}


def snapshot(folder: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()) for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("catalogue")
    write_csv(folder / "good.csv", blobs(60, classes=("a", "b")))
    (folder / "c.yaml").write_text(GOOD)
    result = CliRunner().invoke(app, ["train", str(folder / "c.yaml"), f"output_dir={folder / 'run'}", "--quiet"])
    assert result.exit_code == 0, result.output
    return folder


def check_clean_failure(result, words, run: Path, before: dict) -> None:
    assert result.exit_code == 2, result.output
    message = result.stderr
    assert message.startswith("error: ") and "Traceback" not in result.output
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert snapshot(run) == before


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_train_refuses_bad_input_and_changes_nothing(workspace, case):
    text, extra, words = CONFIG_CASES[case]
    for name, content in extra.items():
        (workspace / name).write_text(content)
    config = workspace / "c.yaml"
    config.write_text(text)
    run = workspace / "run"
    before = snapshot(run)
    try:
        result = CliRunner().invoke(app, ["train", str(config), f"output_dir={run}", "--overwrite"])
    finally:
        config.write_text(GOOD)
    check_clean_failure(result, words, run, before)


@pytest.mark.parametrize(
    "case,columns,words",
    [
        ("renamed column", {"band0": [1.0, 2.0], "f1": [1.0, 2.0], "f2": [0.0, 1.0], "f3": [0.0, 1.0], "label": ["a", "b"]},
         ["expects columns 'f0'", "found instead: 'band0'"]),
        ("missing column", {"f1": [1.0, 2.0], "f2": [0.0, 1.0], "f3": [0.0, 1.0], "label": ["a", "b"]}, ["expects columns 'f0'"]),
        ("unseen label", {"f0": [1.0, 2.0], "f1": [1.0, 2.0], "f2": [0.0, 1.0], "f3": [0.0, 1.0], "label": ["a", "zebra"]},
         ["never seen in training: 'zebra'", "line 3"]),
    ],
)
def test_eval_and_predict_refuse_mismatched_files(workspace, tmp_path, case, columns, words):
    data = write_csv(tmp_path / "new.csv", columns)
    run = workspace / "run"
    before = snapshot(run)
    result = CliRunner().invoke(app, ["eval", str(run / "best.pt"), "--data", str(data)])
    check_clean_failure(result, words, run, before)
    if case != "unseen label":  # predict ignores the target column, so only column problems apply
        result = CliRunner().invoke(app, ["predict", str(run / "best.pt"), str(data)])
        check_clean_failure(result, words, run, before)


def test_not_a_checkpoint(workspace):
    run = workspace / "run"
    before = snapshot(run)
    result = CliRunner().invoke(app, ["eval", str(run / "config.yaml")])
    check_clean_failure(result, ["not a usable mlp checkpoint", "config.yaml", "not a torch file"], run, before)
