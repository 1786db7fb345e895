"""`mlp sweep`: one run per value of one config key, on the same data and seed, collected in sweep.csv."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from mlp_cli import files
from mlp_cli.config import Config, load_config
from mlp_cli.errors import MLPError, RunError, TrainingInterrupted
from mlp_cli.tasks import TASKS

# Keys whose value changes the rows or their preparation: the data must then be loaded again for each run.
DATA_KEYS = ("task", "data", "train.seed")


@dataclass
class SweepRow:
    value: str
    params: int
    epochs: int
    train_loss: float
    test_loss: float
    train_metric: float
    test_metric: float
    run_dir: str


@dataclass
class SweepResult:
    key: str
    metric: str
    rows: list[SweepRow] = field(default_factory=list)
    folder: Path | None = None
    interrupted: TrainingInterrupted | None = None
    plot: Path | None = None


def folder_name(value: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in value).strip("_")
    return safe or "value"


def sweep(config_path: Path, key: str, values: list[str], overrides: list[str], *, overwrite: bool = False,
          callback_factory=None, on_row=None) -> SweepResult:
    """Train once per value; a Ctrl-C keeps the finished rows (and sweep.csv) and is reported in the result."""
    if not values:
        raise RunError(f"mlp sweep needs at least one value for {key}")
    configs: list[Config] = [load_config(config_path, [*overrides, f"{key}={value}"]) for value in values]
    assert configs[0].output_dir is not None  # load_config fills output_dir
    out = Path(configs[0].output_dir)
    if out.exists() and not out.is_dir():
        raise RunError(f"output_dir {out} is a file, not a folder")
    base = out / f"sweep-{folder_name(key)}"
    lock = files.FolderLock(base, "sweep").acquire()
    try:
        return _sweep_locked(base, key, values, configs, overwrite, callback_factory, on_row)
    finally:
        lock.release(failed=True)


def _sweep_locked(base: Path, key: str, values: list[str], configs: list[Config], overwrite: bool,
                  callback_factory, on_row) -> SweepResult:
    from mlp_cli.data import load_dataset
    from mlp_cli.train import Trainer

    old = [p for p in base.iterdir() if p.name != files.LOCK_NAME]
    if old and not overwrite:
        raise RunError(f"{base} already holds a sweep; pass --overwrite to replace it")
    shared = None if key.startswith(DATA_KEYS) else load_dataset(configs[0])
    # The old sweep goes only once the new one's first data has loaded: a bad config or file leaves it untouched.
    first = shared if shared is not None else load_dataset(configs[0])
    for item in old:
        try:
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
        except OSError as exc:
            raise RunError(f"cannot remove the old sweep's {item}: {exc.strerror or exc}") from None
    metric = TASKS[configs[0].task].main_metric
    result = SweepResult(key, metric, folder=base)
    for index, (value, config) in enumerate(zip(values, configs, strict=True)):
        run_dir = base / f"{index:02d}-{folder_name(value)}"
        callback = callback_factory(value) if callback_factory else None
        data = shared if shared is not None else (first if index == 0 else None)
        try:
            summary = Trainer(config, run_dir, data=data, callback=callback, overwrite=True).run()
        except TrainingInterrupted as exc:
            result.interrupted = exc
            break
        finally:
            if callback is not None and hasattr(callback, "close"):
                callback.close()
        test = summary["test"] or summary["val"] or {}
        row = SweepRow(value, summary["params"], summary["epochs_run"], summary["train"]["loss"], test.get("loss", math.nan),
                       summary["train"][metric], test.get(metric, math.nan), str(run_dir))
        result.rows.append(row)
        write_csv(result)
        if on_row is not None:
            on_row(row)
    if result.rows:
        result.plot = plot_sweep(result)
    return result


def write_csv(result: SweepResult) -> None:
    columns = ["value", "params", "epochs", "train_loss", "test_loss", f"train_{result.metric}", f"test_{result.metric}", "run_dir"]
    rows = ([row.value, row.params, row.epochs, row.train_loss, row.test_loss, row.train_metric, row.test_metric, row.run_dir]
            for row in result.rows)
    assert result.folder is not None  # sweep() names the folder before any row exists
    files.write_csv(result.folder / "sweep.csv", columns, rows, digits=6)


def plot_sweep(result: SweepResult) -> Path | None:
    """Train and test error against parameter count (the double-descent picture), if matplotlib is there."""
    from mlp_cli.plot import sweep_plot

    try:
        return sweep_plot(result)
    except MLPError:
        return None
