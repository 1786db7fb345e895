"""`mlp train`, `mlp eval` and `mlp predict` through the real CLI, for all three tasks."""

import csv
import io
import json

import pytest
import torch

from conftest import blobs, write_csv


def train_json(invoke, config, *extra):
    result = invoke("train", config, "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("fixture", ["multiclass_config", "binary_config", "regression_config"])
def test_train_eval_predict(request, invoke, tmp_path, fixture):
    config = request.getfixturevalue(fixture)
    summary = train_json(invoke, config)
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.csv", "best.pt", "last.pt", "summary.json"):
        assert (run / name).exists(), name
    assert json.loads((run / "summary.json").read_text())["test"] == summary["test"]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == summary["epochs_run"] and set(rows[0]) >= {"epoch", "train_loss", "val_loss", "lr"}

    # eval of best.pt on the run's own test split equals the test metrics printed at the end of training
    result = invoke("eval", run / "best.pt", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == summary["test"]

    data_file = next(tmp_path.glob("*.csv"))
    result = invoke("predict", run / "best.pt", data_file)
    assert result.exit_code == 0, result.output
    table = list(csv.reader(io.StringIO(result.stdout)))
    header, body = table[0], table[1:]
    source_rows = data_file.read_text().strip().splitlines()[1:]
    assert len(body) == len(source_rows)
    assert header[0] == "prediction"
    if fixture == "regression_config":
        assert header == ["prediction"]
        assert all(abs(float(r[0])) > 1000 for r in body)  # back in target units, not standardized
    else:
        probs = torch.tensor([[float(v) for v in r[1:]] for r in body])
        assert torch.allclose(probs.sum(1), torch.ones(len(body)), atol=1e-5)
        labels = [h.removeprefix("prob_") for h in header[1:]]
        assert [r[0] for r in body] == [labels[i] for i in probs.argmax(1).tolist()]
        expected = {"multiclass_config": ["1", "2", "7"], "binary_config": ["false", "true"]}[fixture]
        assert labels == expected


def test_human_output_has_table_progress_and_confusion_matrix(invoke, multiclass_config):
    result = invoke("train", multiclass_config)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # everything human goes to stderr
    text = result.stderr
    assert "16·(4+1) = 80" in text and "epoch 1/6" in text and "confusion matrix" in text
    assert "majority" in text and "no hidden" in text


def test_quiet_prints_nothing(invoke, multiclass_config):
    result = invoke("train", multiclass_config, "--quiet")
    assert result.exit_code == 0 and result.output == ""


def test_existing_run_is_refused_without_overwrite(invoke, multiclass_config, tmp_path):
    train_json(invoke, multiclass_config)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()}
    result = invoke("train", multiclass_config)
    assert result.exit_code == 2 and "--overwrite" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()} == before
    train_json(invoke, multiclass_config, "--overwrite")


def test_same_seed_gives_identical_weights_and_metrics(invoke, multiclass_config, tmp_path):
    first = train_json(invoke, multiclass_config, "output_dir=" + str(tmp_path / "a"))
    second = train_json(invoke, multiclass_config, "output_dir=" + str(tmp_path / "b"))
    assert first["test"] == second["test"]
    a = torch.load(tmp_path / "a" / "best.pt", weights_only=True)["model_state"]
    b = torch.load(tmp_path / "b" / "best.pt", weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    train_json(invoke, multiclass_config, "output_dir=" + str(tmp_path / "c"), "train.seed=1")
    c = torch.load(tmp_path / "c" / "best.pt", weights_only=True)["model_state"]
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_checkpoint_is_plain_data_loadable_weights_only(invoke, binary_config, tmp_path):
    train_json(invoke, binary_config)
    data = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert data["format"] == "mlp-checkpoint" and data["format_version"] == 1
    assert data["preprocessor"]["labels"] == [False, True]
    assert data["feature_names"] == ["f0", "f1", "f2", "f3"]
    assert data["config"]["task"] == "binary" and "test" in data["metrics"]
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert "optimizer" in last["train_state"]


def test_eval_on_a_file_and_unseen_labels(invoke, multiclass_config, tmp_path):
    train_json(invoke, multiclass_config)
    other = write_csv(tmp_path / "other.csv", blobs(30, classes=(1, 2, 7), seed=0))
    result = invoke("eval", tmp_path / "run" / "best.pt", "--data", other)
    assert result.exit_code == 0 and "accuracy" in result.stdout and "confusion matrix" in result.stdout
    unseen = write_csv(tmp_path / "unseen.csv", blobs(30, classes=(1, 2, 9), seed=0))
    result = invoke("eval", tmp_path / "run" / "best.pt", "--data", unseen)
    assert result.exit_code == 2 and "never seen in training: 9" in result.stderr


def test_predict_refuses_renamed_columns(invoke, multiclass_config, tmp_path):
    train_json(invoke, multiclass_config)
    columns = blobs(10, classes=(1, 2, 7))
    columns["band0"] = columns.pop("f0")
    renamed = write_csv(tmp_path / "renamed.csv", columns)
    result = invoke("predict", tmp_path / "run" / "best.pt", renamed)
    assert result.exit_code == 2 and "'f0'" in result.stderr and "band0" in result.stderr


def test_predict_writes_file(invoke, regression_config, tmp_path):
    train_json(invoke, regression_config)
    out = tmp_path / "pred.csv"
    result = invoke("predict", tmp_path / "run" / "best.pt", tmp_path / "reg.csv", "-o", out)
    assert result.exit_code == 0 and out.read_text().startswith("prediction\n")


def test_cuda_request_without_gpu_is_a_clear_error(invoke, multiclass_config):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = invoke("train", multiclass_config, "train.device=cuda")
    assert result.exit_code == 2 and "no CUDA GPU" in result.stderr
