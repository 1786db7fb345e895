"""Tracking: a real SQLite MLflow store and real TensorBoard event files, read back with their own readers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import blobs, write_config, write_csv

pytest.importorskip("mlflow")
pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

EPOCHS = 3


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for the module: creating its tables (alembic migrations) takes seconds, so do it once."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()
    return uri


def make_config(tmp_path: Path, name: str = "sat", tracking: dict | None = None, **train) -> Path:
    write_csv(tmp_path / "train.csv", blobs(120, classes=(1, 2, 7), seed=0))
    return write_config(
        tmp_path / f"{name}.yaml",
        {
            "task": "multiclass",
            "data": {"train": "train.csv", "target": "label", "val_fraction": 0.25, "test_fraction": 0.25},
            "model": {"hidden": [8]},
            "train": {"epochs": EPOCHS, "batch_size": 32, "lr": 0.01, "early_stopping": 0, **train},
            "output_dir": str(tmp_path / "run"),
            **({"tracking": tracking} if tracking is not None else {}),
        },
    )


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def runs_of(uri: str, experiment: str) -> list:
    c = client(uri)
    found = c.get_experiment_by_name(experiment)
    return c.search_runs([found.experiment_id]) if found is not None else []


def test_mlflow_and_tensorboard_read_back(tmp_path, invoke, store):
    config = make_config(tmp_path, tracking={"mlflow": {"uri": store}, "tensorboard": True}, diagnostics=True)
    result = invoke("train", config, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # MLflow adds nothing to --json's stdout
    assert "warning" not in result.stderr

    (run,) = runs_of(store, "sat")  # experiment default: the config file's name
    c = client(store)
    assert run.info.status == "FINISHED"
    assert json.loads((tmp_path / "run" / "mlflow.json").read_text())["run_id"] == run.info.run_id
    params = run.data.params
    assert params["model.hidden"] == "[8]" and params["train.lr"] == "0.01" and params["task"] == "multiclass"
    assert params["tracking.mlflow.uri"] == store
    for name in ("train_loss", "val_loss", "val_accuracy"):
        history = c.get_metric_history(run.info.run_id, name)
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1)), name
    stored = {m.step: m.value for m in c.get_metric_history(run.info.run_id, "train_loss")}
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]
    assert [float(r.split(",")[1]) for r in rows] == pytest.approx([stored[s] for s in sorted(stored)], rel=1e-7)
    assert run.data.metrics["test_accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(summary["val"]["accuracy"])
    artifacts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.csv", "summary.json", "best.pt"} <= artifacts
    assert run.info.artifact_uri.startswith(Path(store[len("sqlite:///"):]).parent.as_uri())  # beside the db, not the cwd

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert [e.step for e in events.Scalars("loss/train")] == list(range(1, EPOCHS + 1))
    assert [e.step for e in events.Scalars("val/accuracy")] == list(range(1, EPOCHS + 1))
    # gradient flow: epoch 0 (at initialization) and every epoch, per layer
    assert [e.step for e in events.Scalars("grad_norm/hidden_1")] == list(range(EPOCHS + 1))
    assert "grad_norm/output" in scalars
    assert events.Tags()["histograms"] == []  # only on request
    best = [e.value for e in events.Scalars("hparam/best_val_accuracy")]  # the best epoch's, not the last's
    assert best == [pytest.approx(summary["val"]["accuracy"])]


def test_resume_continues_the_same_mlflow_run(tmp_path, invoke, store):
    config = make_config(tmp_path, name="resumed", tracking={"mlflow": {"uri": store}})
    assert invoke("train", config, "-q").exit_code == 0
    (first,) = runs_of(store, "resumed")
    result = invoke("train", config, "train.epochs=5", "--resume", "-q")
    assert result.exit_code == 0, result.output
    (run,) = runs_of(store, "resumed")  # never a second run
    assert run.info.run_id == first.info.run_id and run.info.status == "FINISHED"
    history = client(store).get_metric_history(run.info.run_id, "train_loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5]
    assert run.data.params["train.epochs"] == str(EPOCHS) and run.data.tags["resumed.train.epochs"] == "5"


def test_track_uploads_a_run_folder_once(tmp_path, invoke, store):
    config = make_config(tmp_path, name="offline")
    assert invoke("train", config, "-q").exit_code == 0
    (tmp_path / "run" / "last.pt").unlink()  # not needed: the folder's finished files are enough
    first = invoke("track", tmp_path / "run", "--mlflow", store, "--experiment", "uploads")
    assert first.exit_code == 0 and "created" in first.stderr, first.output
    (tmp_path / "run" / "mlflow.json").unlink()  # a copied folder without the record: found again by its summary
    again = invoke("track", tmp_path / "run", "--mlflow", store, "--experiment", "uploads")
    assert again.exit_code == 0 and "updated" in again.stderr, again.output
    (run,) = runs_of(store, "uploads")
    c = client(store)
    assert sorted(m.step for m in c.get_metric_history(run.info.run_id, "val_loss")) == list(range(1, EPOCHS + 1))
    assert run.data.params["model.hidden"] == "[8]" and run.info.status == "FINISHED"
    assert {"config.yaml", "metrics.csv", "summary.json", "best.pt"} <= {a.path for a in c.list_artifacts(run.info.run_id)}

    nowhere = invoke("track", tmp_path / "run", "--mlflow", f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    assert nowhere.exit_code == 2 and nowhere.stderr.count("\n") == 1 and "does not exist" in nowhere.stderr
    plain = invoke("track", tmp_path / "run", "--mlflow", str(tmp_path / "mlruns"))
    assert plain.exit_code == 2 and "file store is retired" in plain.stderr

    unfinished = tmp_path / "empty"
    unfinished.mkdir()
    bad = invoke("track", unfinished, "--mlflow", store)
    assert bad.exit_code != 0 and "not a finished run" in bad.stderr and "Traceback" not in bad.output


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("where", ["missing folder", "closed port"])
def test_unreachable_store_is_one_warning_and_a_complete_run(tmp_path, invoke, where):
    uri = f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}" if where == "missing folder" else f"http://127.0.0.1:{closed_port()}"
    config = make_config(tmp_path, tracking={"mlflow": {"uri": uri}})
    result = invoke("train", config, "--json")
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "MLflow tracking is off" in warned[0] and "mlp track" in warned[0], result.stderr
    for name in ("config.yaml", "metrics.csv", "best.pt", "last.pt", "summary.json"):
        assert (tmp_path / "run" / name).is_file()


@pytest.mark.parametrize("module, section", [("mlflow", {"mlflow": True}), ("torch.utils.tensorboard", {"tensorboard": True})])
def test_missing_package_is_a_warning_with_the_install_hint(tmp_path, invoke, monkeypatch, module, section):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")] + [module]:
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if the package were not installed
    config = make_config(tmp_path, tracking=section)
    result = invoke("train", config)
    assert result.exit_code == 0, result.output
    assert "pip install 'mlp-cli[track]'" in result.stderr and (tmp_path / "run" / "summary.json").is_file()


def test_long_values_are_cut_to_mlflow_limit_and_logged(store):
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    from mlp_cli.tracking import config_params, log_params

    params, cut = config_params({"data": {"features": [f"band_{i:04d}" for i in range(1000)]}, "train": {"lr": 0.1}})
    assert cut == ["data.features"] and len(params["data.features"]) == MAX_PARAM_VAL_LENGTH
    assert params["train.lr"] == "0.1"
    c = client(store)
    run = c.create_run(c.create_experiment("long"))
    many = {f"k{i}": str(i) for i in range(250)} | params  # more than one batch of params
    log_params(c, run.info.run_id, many, {})
    stored = c.get_run(run.info.run_id).data.params
    assert len(stored) == len(many) and stored["data.features"] == params["data.features"]


def test_tracking_section_typo_has_a_suggestion(tmp_path, invoke):
    config = make_config(tmp_path, tracking={"mlfow": True, "tensorboard": {"histogram": True}})
    result = invoke("train", config)
    assert result.exit_code == 2
    assert "did you mean 'mlflow'" in result.stderr and "did you mean 'histograms'" in result.stderr


def test_tracking_off_adds_nothing_and_imports_nothing(tmp_path):
    from mlp_cli.config import load_config
    from mlp_cli.tracking import attach
    from mlp_cli.train import Callback

    config = load_config(make_config(tmp_path))
    callback = Callback()
    assert attach(config, callback) is callback and attach(config, None) is None  # the trainer sees no wrapper at all
    tracked = load_config(make_config(tmp_path, tracking={"mlflow": True}))
    assert tracked.tracking.mlflow.experiment == "sat" and attach(tracked, callback, is_main=False) is callback
    code = (
        "import sys; from mlp_cli.cli import app; from mlp_cli.tracking import attach; from mlp_cli.config import load_config;"
        f"attach(load_config({str(make_config(tmp_path))!r}), None);"
        "print([m for m in ('mlflow', 'tensorboard', 'sqlalchemy', 'alembic') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_config_true_and_options_round_trip(tmp_path):
    from mlp_cli.config import config_from_dict, load_config

    config = load_config(make_config(tmp_path, tracking={"mlflow": True, "tensorboard": False}))
    assert config.tracking.tensorboard is None and config.tracking.mlflow.uri is None
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict())))
    assert again.tracking == config.tracking
