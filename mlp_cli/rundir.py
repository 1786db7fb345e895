"""The run directory: refusing to clobber a run, loading last.pt for --resume, preparing the folder, metrics.csv."""

from __future__ import annotations

from pathlib import Path

from mlp_cli import checkpoint
from mlp_cli.config import Config, dump_yaml, flatten
from mlp_cli.errors import RunError
from mlp_cli.files import check_output, csv_line, remove_stale_temps, write_text

RUN_FILES = ("config.yaml", "metrics.csv", "best.pt", "last.pt", "summary.json", "diagnostics.csv")
RESUMABLE_KEYS = {"train.epochs"}  # the only config keys that may change on resume


class RunDir:
    """One run's folder: what may be written there, and the files written along the way."""

    def __init__(self, path: Path, config: Config, *, resume: bool = False, overwrite: bool = False):
        self.path = Path(path)
        self.config = config
        self.resume = resume
        self.overwrite = overwrite
        self._metrics_lines: list[str] = []  # metrics.csv lines already formatted, kept across epochs

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def check(self) -> dict | None:
        """Refuse to clobber a run unless asked; with --resume, load last.pt. Changes nothing on disk."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise RunError(f"output_dir {path} is a file, not a folder")
        data = self.config.data
        for name in RUN_FILES:  # a data file kept in the run folder under a run file's name would be overwritten
            check_output(path / name, inputs=[data.train, data.test])
        present = [name for name in RUN_FILES if (path / name).exists()]
        if self.resume:
            last = path / "last.pt"
            if not last.exists():
                raise RunError(f"nothing to resume: {last} does not exist (start the run without --resume)")
            stored = checkpoint.load(last)
            if "train_state" not in stored:
                raise RunError(f"{last} holds no training state to resume from")
            self._check_same_config(stored["config"])
            return stored
        if present and not self.overwrite:
            raise RunError(
                f"{path} already holds a run ({', '.join(present)}); pass --overwrite to replace it, "
                f"--resume to continue it, or set output_dir=<new folder>"
            )
        return None

    def _check_same_config(self, stored: dict) -> None:
        old, new = flatten(stored), flatten(self.config.to_dict())
        # A key the stored run's version did not have yet (data.na_values ...) is unchanged while it keeps its default.
        defaults = flatten(type(self.config).model_validate({"task": self.config.task, "data": {}}).to_dict())
        differ = sorted(k for k in set(old) | set(new) if k not in RESUMABLE_KEYS and old.get(k, defaults.get(k)) != new.get(k))
        if differ:
            details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ[:8])
            raise RunError(
                f"cannot resume {self.path}: the config differs from the stored one in {', '.join(differ)} ({details}); "
                "only train.epochs may change on resume"
            )

    def check_same_data(self, stored: dict, prep) -> None:
        """--resume continues the stored weights: the data must still have the classes and features they were built for."""
        old = stored.get("preprocessor", {})
        problems = []
        for what, before, now in (("classes", old.get("labels"), prep.labels),
                                  ("features", _feature_names(old), prep.feature_names)):
            if before is not None and list(before) != list(now or []):
                gone = [v for v in before if v not in (now or [])]
                new = [v for v in (now or []) if v not in before]
                change = "; ".join(part for part in (
                    f"gone: {', '.join(map(repr, gone[:8]))}" if gone else "",
                    f"new: {', '.join(map(repr, new[:8]))}" if new else "",
                ) if part) or "same names in another order"
                problems.append(f"{what} ({change})")
        if problems:
            raise RunError(
                f"cannot resume {self.path}: the data's {' and '.join(problems)} differ from the stored run's; "
                "the stored weights fit the old ones: restore the data, or start a new run (another output_dir, or --overwrite)"
            )

    def prepare(self, fresh: bool) -> int:
        """Create the folder and write config.yaml; a fresh run clears the old run's files. Returns stale temps removed."""
        path = self.path
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create output_dir {path}: {exc.strerror or exc}") from None
        removed = remove_stale_temps(path)
        # Writing config.yaml first also proves the folder is writable before any training time is spent.
        write_text(path / "config.yaml", dump_yaml(self.config))
        if fresh:
            for name in RUN_FILES:
                if name != "config.yaml":
                    (path / name).unlink(missing_ok=True)
        return removed

    def write_metrics(self, history: list[dict]) -> None:
        """metrics.csv from the epoch rows; rows already formatted are kept, so a long run does not redo them all."""
        lines = self._metrics_lines
        if not lines:
            lines.append(csv_line(history[0]))
        for row in history[len(lines) - 1 :]:
            lines.append(csv_line(row.values(), digits=8))
        write_text(self.path / "metrics.csv", "".join(lines))


def _feature_names(prep: dict) -> list[str] | None:
    if "features" not in prep:
        return None
    names: list[str] = []
    for column in prep["features"]:
        if column in prep.get("categorical", {}):
            names.extend(f"{column}={category}" for category in prep["categorical"][column])
        else:
            names.append(column)
    return names
