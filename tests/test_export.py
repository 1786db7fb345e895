"""`mlp export` and `mlp predict model.onnx`: onnxruntime against torch and against `mlp predict` on the checkpoint."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mlp_cli.cli import app

from conftest import blobs, linear_target, write_config, write_csv

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

# The CSV prints probabilities to six decimals: two independently rounded values can differ by one unit in the
# last place even when the underlying numbers are within a hair of each other.
CSV_ROUNDING = 1e-6


def run_cli(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def _with_holes(values, every: int) -> list:
    return [None if i % every == 3 else v for i, v in enumerate(values)]


def _cases(folder: Path) -> dict[str, dict]:
    """Three tiny runs: multiclass with string labels, imputation, a categorical column and batch norm; binary
    with neither standardization nor imputation; regression with a standardized target and imputation only."""
    multi = blobs(240, classes=("forest", "urban", "water"), seed=0)
    multi["f0"] = _with_holes(multi["f0"], 17)
    multi["soil"] = _with_holes([("clay", "loam", "sand")[i % 3] for i in range(240)], 23)
    binary = blobs(200, classes=(False, True), seed=1)
    regression = linear_target(300, seed=2)
    regression["x1"] = _with_holes(regression["x1"], 13)
    cases = {
        "multiclass": (multi, {"task": "multiclass", "data": {"target": "label", "missing": "mean", "categorical": ["soil"]},
                               "model": {"hidden": [16, 8], "batch_norm": True}}),
        "binary": (binary, {"task": "binary", "data": {"target": "label", "standardize": False}, "model": {"hidden": [8]}}),
        "regression": (regression, {"task": "regression",
                                    "data": {"target": "y", "missing": "mean", "standardize": False, "standardize_target": True},
                                    "model": {"hidden": [16, 16], "activation": "tanh"}}),
    }
    made = {}
    for name, (columns, config) in cases.items():
        data = write_csv(folder / f"{name}.csv", columns)
        config["data"] = {"train": data.name, "test_fraction": 0.25, **config["data"]}
        config["train"] = {"epochs": 3, "batch_size": 32, "lr": 0.01}
        config["output_dir"] = str(folder / f"run_{name}")
        path = write_config(folder / f"{name}.yaml", config)
        result = run_cli("train", path, "--quiet")
        assert result.exit_code == 0, result.output
        checkpoint = folder / f"run_{name}" / "best.pt"
        model = folder / "models" / name / "model.onnx"
        model.parent.mkdir(parents=True)
        result = run_cli("export", checkpoint, "-o", model)
        assert result.exit_code == 0, result.output
        made[name] = {"data": data, "checkpoint": checkpoint, "model": model, "summary": result.output}
    return made


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, dict]:
    # The exporter takes seconds per model; every test below shares these three exports.
    return _cases(tmp_path_factory.mktemp("export"))


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def report(case: dict) -> dict:
    return json.loads(case["model"].with_name("model.export.json").read_text())


# ---------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("task", ["multiclass", "binary", "regression"])
def test_predict_onnx_gives_the_checkpoints_csv(exported, tmp_path, task):
    case = exported[task]
    torch_csv, onnx_csv = tmp_path / "torch.csv", tmp_path / "onnx.csv"
    assert run_cli("predict", case["checkpoint"], case["data"], "-o", torch_csv).exit_code == 0
    result = run_cli("predict", case["model"], case["data"], "-o", onnx_csv)
    assert result.exit_code == 0, result.output
    want, got = read_csv(torch_csv), read_csv(onnx_csv)
    assert got[0] == want[0] and len(got) == len(want)
    # The gate's own derived bound (see mlp_cli.export.logit_bound) plus the CSV's last printed digit.
    tolerance = report(case)["tolerance"]["max"] + CSV_ROUNDING
    numbers = want[0][1:] if task != "regression" else want[0]
    for w, g in zip(want[1:], got[1:], strict=True):
        if task != "regression":
            assert g[0] == w[0]  # the predicted label itself, in the user's spelling
        for j in range(len(want[0]) - len(numbers), len(want[0])):
            if w[j] == "":
                assert g[j] == ""  # a dropped row stays blank in both
            elif task == "regression":
                assert abs(float(g[j]) - float(w[j])) <= report(case)["tolerance"]["max"] + 1e-12 * abs(float(w[j]))
            else:
                assert abs(float(g[j]) - float(w[j])) <= tolerance
    if task == "multiclass":
        assert want[0] == ["prediction", "prob_forest", "prob_urban", "prob_water"]
    if task == "binary":
        assert want[0] == ["prediction", "prob_false", "prob_true"]


@pytest.mark.parametrize("task", ["multiclass", "binary", "regression"])
def test_export_report_and_summary(exported, task):
    case = exported[task]
    figures = report(case)
    assert figures["passed"] is True
    assert set(figures["batches"]) == {"all", "1", "7"}
    for entry in figures["batches"].values():
        assert entry["rows"] > 0 and entry["rows_beyond_tolerance"] == 0
        assert entry["max_abs_diff"] <= figures["tolerance"]["max"]
        assert entry.get("argmax_mismatches", 0) == 0
    assert figures["bytes"] == case["model"].stat().st_size
    assert "max |diff|" in case["summary"] and "tolerance" in case["summary"]
    # One self-contained file: the exporter's external-data side file never appears.
    assert sorted(p.name for p in case["model"].parent.iterdir()) == ["model.export.json", "model.onnx"]


def test_metadata_round_trip(exported):
    import torch

    case = exported["multiclass"]
    proto = onnx.load(str(case["model"]))
    meta = {p.key: p.value for p in proto.metadata_props}
    stored = torch.load(case["checkpoint"], weights_only=True)
    prep = stored["preprocessor"]
    assert json.loads(meta["mlp.features"]) == stored["feature_names"]
    assert json.loads(meta["mlp.features"])[-3:] == ["soil=clay", "soil=loam", "soil=sand"]
    assert json.loads(meta["mlp.labels"]) == prep["labels"] == ["forest", "urban", "water"]
    assert json.loads(meta["mlp.categorical"]) == {"soil": ["clay", "loam", "sand"]}
    assert meta["mlp.task"] == "multiclass" and meta["mlp.missing"] == "mean"
    assert meta["mlp.version"] == stored["versions"]["mlp"]
    assert meta["mlp.torch"] == torch.__version__
    opset = next(o.version for o in proto.opset_import if o.domain == "")
    assert meta["mlp.opset"] == str(opset) and report(case)["opset"] == opset
    assert [i.name for i in proto.graph.input] == ["features"] and [o.name for o in proto.graph.output] == ["probabilities"]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_dynamic_batch_of_one_and_ten_thousand(exported, task):
    import torch

    from mlp_cli import checkpoint
    from mlp_cli.export import Exportable, logit_bound, output_tolerance
    from mlp_cli.onnx_model import OnnxModel

    case = exported[task]
    session = OnnxModel(case["model"])
    config, model, prep = checkpoint.restore(checkpoint.load(case["checkpoint"]))
    rng = np.random.default_rng(3)
    scale = np.array(prep.scale if prep.mean is not None else [1.0] * prep.n_inputs, dtype=np.float32)
    centre = np.array(prep.mean if prep.mean is not None else [0.0] * prep.n_inputs, dtype=np.float32)
    raw = (centre + scale * rng.normal(size=(10_000, prep.n_inputs))).astype(np.float32)
    raw[::97, 0] = np.nan  # imputed inside the graph
    if prep.categorical:  # one-hot inputs hold 0 or 1
        raw[:, -3:] = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 10_000)]
    got = session.run(raw, batch=10_000)
    one = session.run(raw[:1], batch=1)
    assert got.shape[0] == 10_000 and one.shape == got[:1].shape
    with torch.inference_mode():
        want = Exportable(model, prep).eval()(torch.from_numpy(raw)).double().numpy()
        x = torch.from_numpy(raw)
        x = torch.where(torch.isnan(x), Exportable(model, prep).fill, x)
        if prep.mean is not None:
            x = (x - torch.tensor(prep.mean, dtype=torch.float32)) / torch.tensor(prep.scale, dtype=torch.float32)
    tolerance = output_tolerance(task, prep, logit_bound(model, x.numpy()), want)
    diff = np.abs(got - want)
    assert np.all((diff.max(axis=1) if diff.ndim == 2 else diff) <= tolerance)
    assert np.all(np.abs(one - want[:1]) <= tolerance[:1, None] if one.ndim == 2 else np.abs(one - want[:1]) <= tolerance[:1])


# ---------------------------------------------------------------------------------------------- the gate refuses


@pytest.fixture
def tampered(exported, monkeypatch):
    """Make the 'exporter' hand back the multiclass model with one bias nudged, without a slow real export."""
    from mlp_cli import export

    def perturbed(module, n_inputs):
        proto = onnx.load(str(exported["multiclass"]["model"]))
        biases = [t for t in proto.graph.initializer if len(t.dims) == 1 and t.data_type == onnx.TensorProto.FLOAT]
        bias = max(biases, key=lambda t: t.name)  # any one will do
        values = onnx.numpy_helper.to_array(bias).copy()
        values[0] += 0.05
        bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
        return proto

    monkeypatch.setattr(export, "onnx_proto", perturbed)
    return exported["multiclass"]


def test_refused_when_onnxruntime_disagrees(tampered, tmp_path):
    target = tmp_path / "model.onnx"
    result = run_cli("export", tampered["checkpoint"], "-o", target)
    assert result.exit_code == 1
    assert "onnxruntime disagrees with torch, so nothing was written" in result.output
    assert list(tmp_path.iterdir()) == []  # no model, no report, no temporary file


def test_a_refused_export_keeps_the_previous_model(tampered, tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"earlier export")
    assert run_cli("export", tampered["checkpoint"], "-o", target).exit_code == 1
    assert target.read_bytes() == b"earlier export" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_ctrl_c_during_export_leaves_nothing(tampered, tmp_path, monkeypatch):
    from mlp_cli import export

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "parity", interrupt)
    result = run_cli("export", tampered["checkpoint"], "-o", tmp_path / "model.onnx")
    assert result.exit_code == 130 and "export interrupted; nothing was written" in result.output
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- without torch, odd inputs


def test_predict_onnx_never_imports_torch(exported, tmp_path):
    case = exported["multiclass"]
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mlp_cli.cli import app\n"
        f"r = CliRunner().invoke(app, ['predict', {str(case['model'])!r}, {str(case['data'])!r}, '-o', {str(tmp_path / 'p.csv')!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(read_csv(tmp_path / "p.csv")) == 241


@pytest.mark.parametrize(("command", "missing"), [("predict", "onnxruntime"), ("export", "onnxscript"), ("export", "onnx")])
def test_missing_extra_is_one_line(exported, monkeypatch, tmp_path, command, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import <missing>` raise ImportError
    case = exported["multiclass"]
    args = ["predict", case["model"], case["data"]] if command == "predict" else ["export", case["checkpoint"], "-o", tmp_path / "m.onnx"]
    result = run_cli(*args)
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {missing} is not installed; ONNX export and prediction need it: pip install 'mlp-cli[onnx]'"


def test_odd_model_files_are_one_line(exported, tmp_path):
    data = exported["multiclass"]["data"]
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\x01 certainly not protobuf" * 10)
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "folder.onnx").mkdir()
    helper = onnx.helper
    graph = helper.make_graph([helper.make_node("Relu", ["features"], ["probabilities"])], "g",
                              [helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, [None, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "foreign.onnx")
    for name, why in [("garbage.onnx", "onnxruntime cannot load it"), ("empty.onnx", "the file is empty"),
                      ("folder.onnx", "it is a folder"), ("missing.onnx", "file not found"),
                      ("foreign.onnx", "not one written by mlp export")]:
        result = run_cli("predict", tmp_path / name, data)
        assert result.exit_code == 2, (name, result.output)
        assert result.output.startswith(f"error: not a usable mlp ONNX model: {tmp_path / name}: ")
        assert why in result.output and len(result.output.strip().splitlines()) == 1


def test_odd_output_paths_are_refused_before_exporting(exported, tmp_path):
    checkpoint = exported["binary"]["checkpoint"]
    (tmp_path / "alias.onnx").symlink_to(checkpoint)
    # The checkpoint as output is files.check_output's refusal (exit 2, like every writer); the others are export's own.
    for target, why, code in [(tmp_path / "alias.onnx", "is the input file", 2), (tmp_path / "model.pt", "must end in .onnx", 1),
                              (tmp_path / "no" / "such" / "m.onnx", "does not exist", 1)]:
        result = run_cli("export", checkpoint, "-o", target)
        assert result.exit_code == code and why in result.output, result.output
    assert (tmp_path / "alias.onnx").resolve() == checkpoint.resolve() and checkpoint.stat().st_size > 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused_before_exporting(exported, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        result = run_cli("export", exported["binary"]["checkpoint"], "-o", folder / "m.onnx")
    finally:
        folder.chmod(0o700)
    assert result.exit_code == 1 and "cannot write" in result.output


def test_predict_refuses_to_write_over_its_inputs(exported, tmp_path):
    case = exported["binary"]
    before = case["model"].read_bytes()
    alias = tmp_path / "alias.csv"
    alias.symlink_to(case["data"])
    for model, output in [(case["model"], case["model"]), (case["checkpoint"], case["checkpoint"]), (case["model"], alias)]:
        result = run_cli("predict", model, case["data"], "-o", output)
        assert result.exit_code == 2 and "is the input file" in result.output  # files.check_output, shared by every writer
    assert case["model"].read_bytes() == before and case["data"].read_text().startswith("f0,")
