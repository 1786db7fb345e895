"""Experiment tracking as callbacks: MLflow and TensorBoard fed from what training reports, never failing a run.

The trainer knows nothing of trackers; `attach` wraps the CLI's callback with the trackers a config asks for, and
returns it untouched when tracking is off, so an untracked epoch costs nothing. mlflow and tensorboard are imported
only when a tracker starts. Any tracker error becomes one warning and switches that tracker off: the run folder is
the source of truth and `mlp track RUN_DIR` can upload it later (`upload`, idempotent: see there).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

from mlp_cli.callback import Callback, Callbacks, EpochReport, RunInfo
from mlp_cli.config import Config, config_from_dict, flatten
from mlp_cli.errors import MLPError, MLPWarning
from mlp_cli.files import write_text

RECORD = "mlflow.json"  # in the run folder: the MLflow run this folder feeds, so --resume continues it
ARTIFACTS = ("config.yaml", "metrics.csv", "summary.json", "best.pt", "diagnostics.csv")
INSTALL_HINT = "pip install 'mlp-cli[track]'"


class TrackingUnavailable(MLPError):
    """A tracker cannot start: package missing or store unreachable."""


# ---------------------------------------------------------------------------------------------- wiring


def attach(config: Config, callback: Callback | None, is_main: bool = True) -> Callback | None:
    """`callback` plus the trackers `config.tracking` asks for; `callback` itself when there are none (or not rank 0)."""
    tracking = config.tracking
    if not is_main or (tracking.mlflow is None and tracking.tensorboard is None):
        return callback
    trackers: list[Callback] = []
    if tracking.mlflow is not None:
        trackers.append(MlflowTracker(tracking.mlflow.uri, tracking.mlflow.experiment))
    if tracking.tensorboard is not None:
        trackers.append(TensorBoardTracker(histograms=tracking.tensorboard.histograms))
    return Callbacks([c for c in (callback, *trackers) if c is not None])


class Tracker(Callback):
    """A callback whose failures become one warning and switch it off; training never notices."""

    name = "tracking"

    def __init__(self) -> None:
        self.active = True

    def guarded(self, action, *args) -> None:
        if not self.active:
            return
        try:
            with warnings.catch_warnings():
                # mlflow and tensorboard warn about their own deprecations; not the user's business mid-training.
                warnings.simplefilter("ignore")
                action(*args)
        except Exception as exc:  # noqa: BLE001 - a tracker must never take the run down with it
            self.active = False
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if not isinstance(exc, TrackingUnavailable):
                reason = f"{type(exc).__name__}: {reason}"
            warnings.warn(f"{self.name} is off for this run: {reason[:300]}; the run folder is complete"
                          f"{self.later_hint()}", MLPWarning, stacklevel=2)

    def later_hint(self) -> str:
        return ""


# ---------------------------------------------------------------------------------------------- MLflow


def default_uri(run_dir: Path) -> str:
    """A SQLite database beside the run folders: <folder holding run_dir>/mlflow.db."""
    return "sqlite:///" + str((Path(run_dir).absolute().parent / "mlflow.db").resolve())


def resolve_uri(uri: str | None, run_dir: Path) -> str:
    """Relative sqlite: paths resolve against the working directory (as output_dir does); other URIs pass through."""
    if uri is None:
        return default_uri(run_dir)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rest = uri[len("sqlite:///") :]
        if rest and rest != ":memory:" and not rest.startswith("/"):
            return "sqlite:///" + str(Path(rest).expanduser().absolute())
    if "://" not in uri and not uri.startswith(("databricks", "sqlite:")):
        raise TrackingUnavailable(
            f"tracking URI {uri!r} is a plain path: MLflow's file store is retired; use sqlite:///{uri.rstrip('/')}/mlflow.db "
            "or an http(s):// server"
        )
    return uri


def _quiet_logging() -> None:
    # MLflow and alembic log INFO lines (migrations, run links) to stderr; keep them to real warnings.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # an unreachable server costs seconds, not minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)


def mlflow_client(uri: str):
    """An MlflowClient for `uri`, or TrackingUnavailable naming what to install."""
    _quiet_logging()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingUnavailable(f"mlflow is not installed ({INSTALL_HINT})") from None
    if uri.startswith("sqlite:"):
        for module in ("sqlalchemy", "alembic"):
            try:
                __import__(module)
            except ImportError:
                raise TrackingUnavailable(f"a sqlite: tracking URI needs {module} ({INSTALL_HINT})") from None
        db = Path(uri[len("sqlite:///") :])
        if not db.parent.is_dir():
            raise TrackingUnavailable(f"cannot create the MLflow database {db}: folder {db.parent} does not exist")
    _quiet_logging()
    with _store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        client.get_experiment_by_name("Default")  # opens the store: a new SQLite one gets its tables here
    return client


@contextlib.contextmanager
def _store_lock(uri: str):
    """Serialize opening a SQLite store: two runs creating one new database at once race in alembic's migrations."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the race only matters for a brand-new database
        yield
        return
    lock = Path(uri[len("sqlite:///") :] + ".lock")
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def experiment_id(client, name: str, uri: str) -> str:
    """The id of experiment `name`, created if missing (with artifacts beside a SQLite database, not in the cwd)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise TrackingUnavailable(f"MLflow experiment {name!r} is deleted; restore it or pick another name")
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:
        found = client.get_experiment_by_name(name)  # another run created it in between
        if found is None:
            raise
        return found.experiment_id


def limits() -> tuple[int, int, int]:
    """(params per batch, metrics per batch, longest param value) from the installed MLflow."""
    try:
        from mlflow.utils import validation as v

        return v.MAX_PARAMS_TAGS_PER_BATCH, v.MAX_METRICS_PER_BATCH, v.MAX_PARAM_VAL_LENGTH
    except (ImportError, AttributeError):
        return 100, 1000, 6000


def config_params(config: dict) -> tuple[dict[str, str], list[str]]:
    """The resolved config as dotted string params (lists as JSON), values cut to MLflow's limit; also the keys cut."""
    longest = limits()[2]
    params: dict[str, str] = {}
    cut: list[str] = []
    for key, value in flatten(config).items():
        text = value if isinstance(value, str) else json.dumps(value)
        if len(text) > longest:
            text, cut = text[: longest - 3] + "...", [*cut, key]
        params[key] = text
    return params, cut


def log_params(client, run_id: str, params: dict[str, str], existing: dict[str, str]) -> None:
    """Params in batches; a value changed since (train.epochs on resume) goes to a `resumed.<key>` tag: MLflow params are immutable."""
    from mlflow.entities import Param, RunTag

    per_batch = limits()[0]
    new = [Param(k, v) for k, v in params.items() if k not in existing]
    changed = [RunTag(f"resumed.{k}", v) for k, v in params.items() if k in existing and existing[k] != v]
    for i in range(0, len(new), per_batch):
        client.log_batch(run_id, params=new[i : i + per_batch])
    for i in range(0, len(changed), per_batch):
        client.log_batch(run_id, tags=changed[i : i + per_batch])


def epoch_metrics(row: dict) -> dict[str, float]:
    """A metrics.csv row (or history row) as MLflow metrics; empty cells are left out."""
    return {k: float(v) for k, v in row.items() if k not in ("epoch", "seconds") and v not in (None, "")}


def log_epochs(client, run_id: str, rows: list[dict], skip_steps: set[int] | frozenset[int] = frozenset(),
               synchronous: bool = True) -> list:
    """Epoch rows as metrics with step = epoch; returns the pending operations when not synchronous."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, int(row["epoch"])) for row in rows if int(row["epoch"]) not in skip_steps
               for k, v in epoch_metrics(row).items()]
    per_batch = limits()[1]
    pending = []
    for i in range(0, len(metrics), per_batch):
        if synchronous:
            client.log_batch(run_id, metrics=metrics[i : i + per_batch])
        else:
            pending.append(client.log_batch(run_id, metrics=metrics[i : i + per_batch], synchronous=False))
    return pending


def final_metrics(summary: dict) -> dict[str, float]:
    """test_<metric> (and best_val_<metric>, train_<metric>) for every number in the summary's splits."""
    out = {}
    for split, prefix in (("test", "test_"), ("val", "best_val_"), ("train", "final_train_")):
        for key, value in (summary.get(split) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "n":
                out[prefix + key] = float(value)
    for key in ("best_epoch", "epochs_run", "params", "wall_seconds"):
        if isinstance(summary.get(key), (int, float)):
            out[key] = float(summary[key])
    return out


def read_metrics_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def summary_key(run_dir: Path) -> str | None:
    """sha256 of summary.json: the same finished run, wherever its folder was copied, has the same key."""
    path = run_dir / "summary.json"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def read_record(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_record(run_dir: Path, uri: str, experiment: str, run_id: str) -> None:
    record = read_record(run_dir)
    runs: dict = record["runs"] if isinstance(record.get("runs"), dict) else {}
    runs[uri] = run_id
    record = {"uri": uri, "experiment": experiment, "run_id": run_id, "runs": runs}
    write_text(run_dir / RECORD, json.dumps(record, indent=2) + "\n")


def finish_run(client, run_id: str, run_dir: Path, summary: dict) -> None:
    """Final metrics, run files as artifacts, the summary key tag, then FINISHED."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    step = int(summary.get("epochs_run") or 0)
    client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in final_metrics(summary).items()])
    for name in ARTIFACTS:
        if (run_dir / name).is_file():
            client.log_artifact(run_id, str(run_dir / name))
    key = summary_key(run_dir)
    if key is not None:
        client.set_tag(run_id, "mlp.summary_sha256", key)
    client.set_terminated(run_id, "FINISHED")


def resuming(run_dir: Path) -> bool:
    """At on_start, last.pt exists only when resuming: a fresh run (--overwrite too) has removed it by then."""
    return (Path(run_dir) / "last.pt").exists()


class MlflowTracker(Tracker):
    """Logs one run folder into one MLflow run: params at start, metrics per epoch, test metrics and files at the end."""

    name = "MLflow tracking"

    def __init__(self, uri: str | None, experiment: str | None):
        super().__init__()
        self.uri_setting, self.experiment = uri, experiment
        self.client: Any = None
        self.run_id: Any = None  # str once the MLflow run exists
        self.run_dir: Any = None
        self.cut: list[str] = []
        self.pending: list = []  # MLflow's async logging operations not yet waited for
        self.ended = False

    def later_hint(self) -> str:
        if self.run_dir is None:
            return ""
        return f"; upload it later with `mlp track {self.run_dir} --mlflow URI`"

    def on_start(self, info: RunInfo) -> None:
        self.run_dir = Path(info.run_dir)
        self.guarded(self._start, info)
        if self.cut:  # outside the guard, which silences the libraries' own warnings
            warnings.warn(f"MLflow keeps at most {limits()[2]} characters of a parameter; cut {', '.join(self.cut)}",
                          MLPWarning, stacklevel=2)

    def _start(self, info: RunInfo) -> None:
        run_dir = self.run_dir
        uri = resolve_uri(self.uri_setting, run_dir)
        experiment = self.experiment or run_dir.name
        client = self.client = mlflow_client(uri)
        record = read_record(run_dir)
        run_id, existing = None, {}
        if resuming(run_dir) and isinstance(record.get("runs"), dict) and record["runs"].get(uri):
            try:
                run = client.get_run(record["runs"][uri])
            except Exception:  # noqa: BLE001 - the run was since removed from the store: start a new one
                run = None
            if run is not None and run.info.lifecycle_stage != "deleted":
                run_id, existing = run.info.run_id, run.data.params
                client.update_run(run_id, status="RUNNING")
        if run_id is None:
            exp = experiment_id(client, experiment, uri)
            run = client.create_run(exp, run_name=run_dir.name, tags={"mlp.run_dir": str(run_dir.absolute())})
            run_id = run.info.run_id
        self.run_id = run_id
        write_record(run_dir, uri, experiment, run_id)
        params, cut = config_params(info.config.to_dict())
        self.cut = cut
        log_params(client, run_id, params, existing)
        if resuming(run_dir):  # epochs trained before a resume that this MLflow run has not seen yet
            seen = {m.step for m in client.get_metric_history(run_id, "train_loss")}
            rows = [r for r in read_metrics_csv(run_dir / "metrics.csv") if int(r["epoch"]) <= info.start_epoch]
            log_epochs(client, run_id, rows, seen)

    def on_epoch(self, report: EpochReport) -> None:
        if self.run_id is not None:
            self.guarded(self._epoch, report)

    def _epoch(self, report: EpochReport) -> None:
        row = {"epoch": report.epoch, "train_loss": report.train_loss, "lr": report.lr}
        if report.val is not None:
            row["val_loss"] = report.val["loss"]
            row[f"val_{report.main_metric}"] = report.val[report.main_metric]
        # MLflow's async logging writes from a background thread, so a SQLite commit per epoch does not stall training.
        self.pending.extend(log_epochs(self.client, self.run_id, [row], synchronous=False))

    def _flush(self) -> None:
        pending, self.pending = self.pending, []
        for operation in pending:
            if operation is not None:
                operation.wait()

    def on_end(self, summary: dict) -> None:
        self.ended = True
        if self.run_id is not None:
            self.guarded(self._flush)
            self.guarded(finish_run, self.client, self.run_id, self.run_dir, summary)

    def close(self) -> None:
        # Interrupted or failed: mark the MLflow run KILLED; --resume sets it RUNNING again and continues it.
        if not self.ended and self.run_id is not None:
            self.guarded(self._flush)
            self.guarded(self.client.set_terminated, self.run_id, "KILLED")
        self.ended = True


def upload(run_dir: Path, uri: str | None = None, experiment: str | None = None) -> tuple[str, str, bool]:
    """Log a finished run folder into MLflow; returns (uri, run_id, created).

    Idempotent: a run is found again, rather than duplicated, by the run id this folder recorded for `uri` or by the
    tag mlp.summary_sha256 (the hash of its summary.json), so uploading twice, or a run already tracked live, only
    fills in what is missing: metrics of epochs not yet logged, params not yet set, and the files.
    """
    shown, run_dir = run_dir, Path(run_dir).resolve()  # a symlink to a run means that run, and its store beside it
    if not run_dir.is_dir():
        raise MLPError(f"{shown} is not a run folder")
    for name in ("config.yaml", "metrics.csv", "summary.json"):
        if not (run_dir / name).is_file():
            raise MLPError(f"{shown} is not a finished run: {name} is missing (finish it with `mlp train ... --resume`)")
    import yaml

    try:
        raw = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        config = config_from_dict(raw, str(run_dir / "config.yaml"), warn=False)
    except (ValueError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MLPError(f"{shown}: cannot read its config.yaml or summary.json ({type(exc).__name__})") from None
    setting = config.tracking.mlflow
    if experiment is None:
        experiment = (setting.experiment if setting is not None else None) or run_dir.name
    resolved = resolve_uri(uri if uri is not None else (setting.uri if setting is not None else None), run_dir)
    try:
        run_id, created, cut = _upload(run_dir, summary, config, resolved, experiment)
    except Exception as exc:
        if isinstance(exc, MLPError) or not _from_store(exc):
            raise
        lines = str(exc).strip().splitlines()
        raise TrackingUnavailable(f"cannot upload {shown} to {resolved}: {(lines[0] if lines else type(exc).__name__)[:300]}") from None
    if cut:
        warnings.warn(f"MLflow keeps at most {limits()[2]} characters of a parameter; cut {', '.join(cut)}", MLPWarning, stacklevel=2)
    try:
        write_record(run_dir, resolved, experiment, run_id)
    except OSError:
        pass  # a read-only folder (an archive, a cluster share): the summary tag still finds the run next time
    return resolved, run_id, created


def _from_store(exc: Exception) -> bool:
    """An error of the store or the way to it (not a bug of ours): one line for the user."""
    module = type(exc).__module__.split(".")[0]
    return isinstance(exc, OSError) or module in ("mlflow", "sqlalchemy", "alembic", "requests", "urllib3", "sqlite3")


def _upload(run_dir: Path, summary: dict, config: Config, resolved: str, experiment: str) -> tuple[str, bool, list[str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = mlflow_client(resolved)
        found = _find_run(client, run_dir, resolved, experiment)
        created = found is None
        existing: dict = {}
        if created:
            exp = experiment_id(client, experiment, resolved)
            run_id: str = client.create_run(exp, run_name=run_dir.name, tags={"mlp.run_dir": str(run_dir.absolute())}).info.run_id
        else:
            run_id = str(found)
            existing = client.get_run(run_id).data.params
        params, cut = config_params(config.to_dict())
        log_params(client, run_id, params, existing)
        seen = set() if created else {m.step for m in client.get_metric_history(run_id, "train_loss")}
        log_epochs(client, run_id, read_metrics_csv(run_dir / "metrics.csv"), seen)
        finish_run(client, run_id, run_dir, summary)
    return run_id, created, cut


def _find_run(client, run_dir: Path, uri: str, experiment: str) -> str | None:
    record = read_record(run_dir)
    run_id = (record.get("runs") or {}).get(uri) if isinstance(record.get("runs"), dict) else None
    if run_id:
        # A record from a store that was since wiped or a run since deleted: upload afresh.
        with contextlib.suppress(Exception):
            if client.get_run(run_id).info.lifecycle_stage != "deleted":
                return run_id
    found = client.get_experiment_by_name(experiment)
    key = summary_key(run_dir)
    if found is None or key is None:
        return None
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`mlp.summary_sha256` = '{key}'", max_results=1)
    return runs[0].info.run_id if runs else None


# ---------------------------------------------------------------------------------------------- TensorBoard


class TensorBoardTracker(Tracker):
    """Scalars per epoch in <run_dir>/tensorboard/; per-layer gradient norms with diagnostics; hparams at the end."""

    name = "TensorBoard tracking"

    def __init__(self, histograms: bool = False):
        super().__init__()
        self.histograms = histograms
        self.writer: Any = None  # a SummaryWriter once started
        self.config: Any = None
        self.run_dir: Any = None

    def on_start(self, info: RunInfo) -> None:
        self.guarded(self._start, info)

    def _start(self, info: RunInfo) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TrackingUnavailable(f"tensorboard is not installed ({INSTALL_HINT})") from None
        self.config, self.run_dir = info.config, Path(info.run_dir)
        # On resume, events past the resumed epoch (from the interrupted process) are discarded by TensorBoard;
        # a fresh run (--overwrite) starts from no events at all, like the rest of its folder.
        purge = info.start_epoch + 1 if resuming(self.run_dir) else None
        if purge is None:
            for old in (self.run_dir / "tensorboard").glob("events.out.tfevents.*"):
                old.unlink()
        self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=purge)

    def on_epoch(self, report: EpochReport) -> None:
        if self.writer is not None:
            self.guarded(self._epoch, report)

    def _epoch(self, report: EpochReport) -> None:
        w, step = self.writer, report.epoch
        w.add_scalar("loss/train", report.train_loss, step)
        if report.val is not None:
            w.add_scalar("loss/val", report.val["loss"], step)
            w.add_scalar(f"val/{report.main_metric}", report.val[report.main_metric], step)
        w.add_scalar("lr", report.lr, step)
        if report.diagnostics:
            self._gradients(report.diagnostics)
        if self.histograms:
            self._histograms(step)
        w.flush()

    def on_diagnostics(self, rows: list[dict], title: str) -> None:
        if self.writer is not None and rows:
            self.guarded(self._gradients, rows)

    def _gradients(self, rows: list[dict]) -> None:
        for row in rows:
            layer = row["layer"].replace(" ", "_")
            self.writer.add_scalar(f"grad_norm/{layer}", row["grad_norm"], row["epoch"])
            self.writer.add_scalar(f"backprop_norm/{layer}", row["backprop_norm"], row["epoch"])

    def _histograms(self, step: int) -> None:
        # The callback never holds the model; last.pt was just written for this epoch, so read the weights from it.
        from mlp_cli.checkpoint import load

        state = load(self.run_dir / "last.pt")["model_state"]
        for name, tensor in state.items():
            if tensor.is_floating_point():
                self.writer.add_histogram(f"weights/{name}", tensor, step)

    def on_end(self, summary: dict) -> None:
        if self.writer is not None:
            self.guarded(self._end, summary)

    def _end(self, summary: dict) -> None:
        hparams = {}
        for key, value in flatten(self.config.to_dict()).items():
            hparams[key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
        metrics = {f"hparam/{k}": v for k, v in final_metrics(summary).items() if math.isfinite(v)}
        self.writer.add_hparams(hparams, metrics, run_name=".")
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            with contextlib.suppress(Exception):
                writer.close()
