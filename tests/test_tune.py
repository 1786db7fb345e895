"""mlp tune: the search section's validation, real pruning, a study that continues, several workers, best_config.yaml."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import write_config

optuna = pytest.importorskip("optuna")

EPOCHS = 5


def tune_config(tmp_path: Path, search: dict, name: str = "tune", **over) -> Path:
    """Sine regression on 300 generated rows: a trial takes well under a second."""
    config = {
        "task": "regression",
        "data": {"synthetic": {"name": "sine", "n": 300, "noise": 0.1, "seed": 0}, "val_fraction": 0.2},
        "model": {"hidden": [16]},
        "train": {"epochs": EPOCHS, "batch_size": 32, "lr": 0.01, "early_stopping": 0},
        "output_dir": str(tmp_path / "runs" / name),
        "search": search,
    }
    config.update(over)
    return write_config(tmp_path / f"{name}.yaml", config)


def run_json(invoke, *args) -> dict:
    result = invoke("tune", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def load(url: str, name: str):
    return optuna.load_study(study_name=name, storage=url)


def test_seeded_study_improves_on_its_worst_trial_and_continues(invoke, tmp_path):
    search = {"sampler": "random", "pruner": "none", "seed": 3,
              "space": {"train.lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
                        "model.hidden": {"type": "categorical", "choices": [[4], [32, 32]]}}}
    config = tune_config(tmp_path, search)
    first = run_json(invoke, config, "--trials", "3")
    values = [t["value"] for t in first["trials"] if t["state"] == "COMPLETE"]
    assert len(values) == 3 and first["new_trials"] == 3
    assert first["best_value"] == min(values) < max(values)
    folder = tmp_path / "runs" / "tune"
    for trial in first["trials"]:
        run_dir = folder / "trials" / str(trial["number"])
        stored = yaml.safe_load((run_dir / "config.yaml").read_text())
        # The trial trained exactly its params, and its summary is where its value came from.
        assert stored["train"]["lr"] == pytest.approx(trial["params"]["train.lr"], rel=1e-12)
        assert stored["model"]["hidden"] == trial["params"]["model.hidden"]
        assert json.loads((run_dir / "summary.json").read_text())["val"]["loss"] == pytest.approx(trial["value"], rel=1e-12)

    again = run_json(invoke, config, "--trials", "2")
    assert [t["number"] for t in again["trials"]] == [0, 1, 2, 3, 4] and again["new_trials"] == 2
    assert again["trials"][:3] == first["trials"]
    new_lrs = {t["params"]["train.lr"] for t in again["trials"][3:]}
    assert not new_lrs & {t["params"]["train.lr"] for t in first["trials"]}  # the continuation draws afresh
    assert len(load(again["storage"], "tune").trials) == 5

    # best_config.yaml is a complete config that mlp train runs as is, and it reproduces the best trial.
    best_config = Path(again["best_config"])
    result = invoke("train", best_config, "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((folder / "best" / "summary.json").read_text())
    # Same data, seed, widths and thread count on the same machine: the same arithmetic, so only summation-order
    # noise of float32 is allowed (a few ulps relative to a loss of order 0.1-1).
    assert summary["val"]["loss"] == pytest.approx(again["best_value"], rel=1e-5)
    assert "search" not in yaml.safe_load(best_config.read_text())


def test_hopeless_trials_are_pruned_epoch_by_epoch(invoke, tmp_path):
    # lr 1e-7 cannot move the weights in 5 epochs; the median pruner must stop such trials early.
    search = {"sampler": "random", "seed": 0, "startup_trials": 1, "warmup_epochs": 0,
              "space": {"train.lr": {"type": "categorical", "choices": [1e-7, 0.05, 0.03, 0.02]}}}
    config = tune_config(tmp_path, search)
    report = run_json(invoke, config, "--trials", "7")
    pruned = [t for t in report["trials"] if t["state"] == "PRUNED"]
    assert pruned, report["trials"]
    assert any(t["params"]["train.lr"] == 1e-7 for t in pruned)
    study = {t.number: t for t in load(report["storage"], "tune").trials}
    for trial in pruned:
        assert trial["epochs"] < EPOCHS
        # What the pruner saw: one reported value per epoch, and the run folder is a complete, shorter run.
        assert sorted(study[trial["number"]].intermediate_values) == list(range(1, trial["epochs"] + 1))
        summary = json.loads((Path(trial["run_dir"]) / "summary.json").read_text())
        assert summary["epochs_run"] == trial["epochs"]
    assert report["best_params"]["train.lr"] != 1e-7


def test_two_workers_share_one_sqlite_study(invoke, tmp_path):
    search = {"sampler": "tpe", "pruner": "none", "space": {"train.lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True}}}
    config = tune_config(tmp_path, search)
    report = run_json(invoke, config, "--trials", "4", "--workers", "2")
    assert report["counts"] == {"complete": 4, "pruned": 0, "fail": 0, "running": 0}
    assert sorted(t["number"] for t in report["trials"]) == [0, 1, 2, 3]
    assert len({t["run_dir"] for t in report["trials"]}) == 4
    assert len({t["params"]["train.lr"] for t in report["trials"]}) == 4  # each trial number draws with its own seed
    assert report["storage"] == f"sqlite:///{tmp_path / 'runs' / 'tune' / 'study.db'}"


def test_journal_storage_and_a_study_that_optimizes_something_else(invoke, tmp_path):
    space = {"train.lr": {"type": "float", "low": 1e-3, "high": 0.1}}
    config = tune_config(tmp_path, {"pruner": "none", "space": space})
    journal = tmp_path / "shared" / "study.log"
    journal.parent.mkdir()
    report = run_json(invoke, config, "--trials", "1", "--storage", f"journal:{journal}", "--study", "s")
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    stored = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(journal))))
    assert [t.value for t in stored.trials] == [report["best_value"]]

    other = tune_config(tmp_path, {"metric": "val_r2", "space": space}, name="other")
    result = invoke("tune", other, "--trials", "1", "--storage", f"journal:{journal}", "--study", "s")
    assert result.exit_code == 2
    assert "created to minimize, but search asks to maximize val_r2" in result.output
    assert len(stored.trials) == 1


def test_a_crashed_trial_is_failed_with_its_error_never_pruned(invoke, tmp_path):
    # batch_norm with a batch of one row is refused when the trial starts: a failed trial, one line, others go on.
    search = {"sampler": "grid", "pruner": "median",
              "space": {"train.batch_size": {"type": "categorical", "choices": [1, 32]}}}
    config = tune_config(tmp_path, search, model={"hidden": [8], "batch_norm": True})
    result = invoke("tune", config, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    states = {t["params"]["train.batch_size"]: t for t in report["trials"]}
    assert states[1]["state"] == "FAIL" and "batch_size >= 2" in states[1]["error"] and "\n" not in states[1]["error"]
    assert states[32]["state"] == "COMPLETE"
    assert len(report["trials"]) == 2  # the grid was exhausted after two trials, although search.trials is 20


def before_each_epoch(monkeypatch, hook) -> None:
    """Run `hook(trial, report)` in every trial's epoch callback, before the trial reports to Optuna."""
    from mlp_cli import tune as tune_module

    real = tune_module._pruning_callback

    def hooked(trial, metric):
        callback = real(trial, metric)
        on_epoch = callback.on_epoch

        def on_epoch_after_hook(report):
            hook(trial, report)
            return on_epoch(report)

        callback.on_epoch = on_epoch_after_hook
        return callback

    monkeypatch.setattr(tune_module, "_pruning_callback", hooked)


def test_ctrl_c_mid_trial_keeps_finished_trials(invoke, tmp_path, monkeypatch):
    def ctrl_c(trial, report):
        if trial.number == 1 and report.epoch == 2:
            os.kill(os.getpid(), signal.SIGINT)  # what a terminal's Ctrl-C does, in the middle of trial 1

    before_each_epoch(monkeypatch, ctrl_c)
    config = tune_config(tmp_path, {"pruner": "none", "space": {"train.lr": {"type": "float", "low": 1e-3, "high": 0.1}}})
    result = invoke("tune", config, "--trials", "3")
    assert result.exit_code == 130, result.output
    assert "interrupted after 2 trial(s)" in result.output and "Traceback" not in result.output
    study = load(f"sqlite:///{tmp_path / 'runs' / 'tune' / 'study.db'}", "tune")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]
    assert study.trials[1].user_attrs["error"].startswith("interrupted: SIGINT received")
    assert (tmp_path / "runs" / "tune" / "trials" / "1" / "last.pt").exists()
    assert (tmp_path / "runs" / "tune" / "best_config.yaml").exists()


@pytest.mark.parametrize(
    ("space", "extra", "expected"),
    [
        ({"train.lr": {"type": "float", "low": 0.1, "high": 0.01}}, {}, ":6: search.space.train.lr: low 0.1 must be below high 0.01"),
        ({"train.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}, {}, "a log scale needs low > 0"),
        ({"train.lrr": {"type": "float", "low": 0.01, "high": 0.1}}, {}, "'train.lrr' is not a config key: train has no 'lrr' (did you mean 'train.lr'?)"),
        ({"train.lr": {"type": "float", "low": 0.01, "high": 0.1, "stepp": 2}}, {}, "unknown key"),
        ({"model.dropout": {"type": "float", "low": 0.0, "high": 1.5}}, {}, "1.5 does not fit model.dropout: model.dropout must be < 1"),
        ({"train.epochs": {"type": "float", "low": 1, "high": 9}}, {}, "type float does not fit train.epochs"),
        ({"model.hidden": {"type": "categorical", "choices": [[8], 8]}}, {}, "8 does not fit model.hidden"),
        ({"train": {"type": "int", "low": 1, "high": 2}}, {}, "train is a section"),
        ({"train.lr": {"type": "float", "low": 0.01, "high": 0.1}}, {"sampler": "grid"}, "the grid sampler needs a finite set"),
        ({"train.lr": {"type": "float", "low": 0.01, "high": 0.1}}, {"metric": "val_accuracy"}, "a regression run's validation metrics are"),
        ({"train.lr": {"type": "logfloat", "low": 0.01, "high": 0.1}}, {}, "type is 'logfloat'; expected one of float, int, categorical"),
    ],
)
def test_search_section_refusals_exit_2_with_their_line(invoke, tmp_path, space, extra, expected):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "task: regression\ndata:\n  synthetic: {name: sine, n: 100}\nsearch:\n  space:\n"
        + "".join(f"    {k}: {json.dumps(v)}\n" for k, v in space.items())
        + "".join(f"  {k}: {v}\n" for k, v in extra.items())
    )
    result = invoke("tune", config)
    assert result.exit_code == 2
    assert expected in result.output and "Traceback" not in result.output
    assert "bad.yaml:" in result.output
    assert not (tmp_path / "runs").exists()


def test_tune_without_a_search_section_and_without_optuna(invoke, tmp_path, monkeypatch):
    config = write_config(tmp_path / "plain.yaml", {"task": "regression", "data": {"synthetic": {"name": "sine"}}})
    result = invoke("tune", config)
    assert result.exit_code == 2 and "needs a search: section" in result.output
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    config = tune_config(tmp_path, {"space": {"train.lr": {"type": "float", "low": 1e-3, "high": 0.1}}})
    result = invoke("tune", config)
    assert result.exit_code == 2
    assert result.output.strip() == "error: mlp tune needs optuna: pip install 'mlp-cli[tune]' (or pip install optuna)"


def test_search_metrics_are_the_metrics_a_run_reports():
    import torch

    from mlp_cli.config import SEARCH_METRICS
    from mlp_cli.metrics import Accumulator

    for task, names in SEARCH_METRICS.items():
        acc = Accumulator(task, 3 if task == "multiclass" else 2, "cpu")
        outputs = torch.zeros(4, 3) if task == "multiclass" else torch.zeros(4, 1)
        acc.update(outputs, torch.tensor([0, 1, 1, 0]), torch.tensor(1.0))
        result = acc.result()
        assert set(names) <= set(result) and all(isinstance(result[n], float) for n in names)


def test_help_imports_neither_torch_nor_optuna():
    code = "import sys\nfrom mlp_cli.cli import app\nprint('optuna' in sys.modules, 'torch' in sys.modules)\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_the_trials_table_lists_every_trial_and_marks_the_best():
    # A merge once dropped tune_table's `return`: `mlp tune` then printed "None" instead of the table.
    from rich.console import Console

    from mlp_cli.render import tune_table
    from mlp_cli.tune import TrialRow, TuneResult

    rows = [TrialRow(0, "COMPLETE", {"train.lr": 0.01}, 0.5, 3, None, "trials/0"),
            TrialRow(1, "FAIL", {"train.lr": 9.0}, None, None, "loss diverged", "trials/1")]
    result = TuneResult("s", "sqlite:///x.db", "accuracy", "maximize", Path("."), rows, best=rows[0])
    console = Console(record=True, width=200)
    console.print(tune_table(result))
    text = console.export_text()
    assert "*0" in text and "complete" in text and "loss diverged" in text and "1 complete, 1 fail" in text


def test_a_running_trial_folder_is_locked_like_any_run(invoke, tmp_path, monkeypatch):
    # A trial is an ordinary run: its Trainer holds the folder's lock, so `mlp train` into it (another process) is refused.
    intruder = write_config(tmp_path / "intruder.yaml", {
        "task": "regression", "data": {"synthetic": {"name": "sine", "n": 50}}, "train": {"epochs": 1},
        "output_dir": str(tmp_path / "runs" / "tune" / "trials" / "0")})
    refused = []

    def train_into_the_trial(trial, report):
        if trial.number == 0 and report.epoch == 1:
            refused.append(subprocess.run([sys.executable, "-m", "mlp_cli", "train", str(intruder), "--overwrite"],
                                          capture_output=True, text=True, timeout=120, check=False))

    before_each_epoch(monkeypatch, train_into_the_trial)
    config = tune_config(tmp_path, {"pruner": "none", "space": {"train.lr": {"type": "float", "low": 1e-3, "high": 0.1}}})
    result = invoke("tune", config, "--trials", "1")
    assert result.exit_code == 0, result.output
    assert refused[0].returncode == 2 and f"pid {os.getpid()}" in refused[0].stderr, refused[0].stderr
    assert (tmp_path / "runs" / "tune" / "trials" / "0" / "best.pt").exists()  # the trial finished, untouched


def test_tuning_a_config_named_best_config_in_its_own_folder_is_refused(invoke, tmp_path):
    config = tune_config(tmp_path, {"space": {"train.lr": {"type": "float", "low": 1e-3, "high": 0.1}}})
    own = tmp_path / "runs" / "tune" / "best_config.yaml"
    own.parent.mkdir(parents=True)
    own.write_text(config.read_text())
    result = invoke("tune", own, "--trials", "1")
    assert result.exit_code == 2 and "is the input file" in result.output, result.output
    assert own.read_text() == config.read_text()
