"""`mlp tune`: an Optuna study over a config's `search:` space; every trial an ordinary run, pruned epoch by epoch.

The contract with Optuna is the one of optuna-examples' pytorch_simple.py: after every epoch the trial reports
its validation metric with `trial.report(value, epoch)` and stops when `trial.should_prune()` says so. The study
lives in a database (SQLite by default, a journal file on a shared file system, or any RDB URL), so running the
command again continues it and several processes or machines can share it. Optuna is an optional extra, imported
only here.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlp_cli import files
from mlp_cli.config import MAXIMIZED_METRICS, Config, SearchConfig, config_from_dict, dump_yaml, load_config
from mlp_cli.errors import ConfigError, MLPError, RunError, TrainingInterrupted
from mlp_cli.files import write_text
from mlp_cli.signals import SignalHandlers, StopFlag
from mlp_cli.sweep import DATA_KEYS

INSTALL_HINT = "mlp tune needs optuna: pip install 'mlp-cli[tune]' (or pip install optuna)"
STORAGE_RETRIES = 20  # processes opening one fresh SQLite file race to create its tables; each retry waits a little


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise MLPError(INSTALL_HINT) from None
    return optuna


# ---------------------------------------------------------------------------------------------- results


@dataclass
class TrialRow:
    number: int
    state: str  # COMPLETE, PRUNED, FAIL or RUNNING
    params: dict
    value: float | None
    epochs: int | None
    error: str | None
    run_dir: str | None


@dataclass
class TuneResult:
    study: str
    storage: str
    metric: str
    direction: str
    folder: Path
    rows: list[TrialRow] = field(default_factory=list)  # every trial of the study, earlier commands' too
    new: int = 0  # trials this command ran
    best: TrialRow | None = None
    best_config: Path | None = None
    interrupted: TrainingInterrupted | None = None
    exhausted: bool = False  # a grid with nothing left to try

    def counts(self) -> dict[str, int]:
        states = [row.state for row in self.rows]
        return {state.lower(): states.count(state) for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}


# ---------------------------------------------------------------------------------------------- the space


class Space:
    """The search section's keys as Optuna distributions; non-scalar choices (lists) travel as JSON text."""

    def __init__(self, search: SearchConfig):
        self.search = search

    @staticmethod
    def encode(choice) -> Any:
        # Optuna's storages hold None, bool, int, float and str choices; `model.hidden: [64, 64]` goes in as text.
        return choice if choice is None or isinstance(choice, (bool, int, float, str)) else json.dumps(choice)

    def decode(self, key: str, stored) -> Any:
        spec = self.search.space[key]
        if spec.type == "categorical":
            for choice in spec.choices:
                if self.encode(choice) == stored:
                    return choice
        return stored

    def suggest(self, trial) -> dict:
        params = {}
        for key, spec in self.search.space.items():
            if spec.type == "float":
                params[key] = trial.suggest_float(key, spec.low, spec.high, log=spec.log, step=spec.step)
            elif spec.type == "int":
                params[key] = trial.suggest_int(key, spec.low, spec.high, log=spec.log, step=spec.step)
            else:
                params[key] = self.decode(key, trial.suggest_categorical(key, [self.encode(c) for c in spec.choices]))
        return params

    def grid(self) -> dict[str, list]:
        grid = {}
        for key, spec in self.search.space.items():
            if spec.type == "categorical":
                grid[key] = [self.encode(c) for c in spec.choices]
            elif spec.type == "int":
                grid[key] = list(range(spec.low, spec.high + 1, spec.step))
            else:  # validation guarantees a step for grid floats
                assert spec.step is not None
                count = math.floor((spec.high - spec.low) / spec.step + 1e-9) + 1
                grid[key] = [spec.low + i * spec.step for i in range(count)]
        return grid

    def touches_data(self) -> bool:
        return any(key.startswith(DATA_KEYS) for key in self.search.space)


def direction_of(search: SearchConfig) -> str:
    if search.direction:
        return search.direction
    return "maximize" if search.metric.removeprefix("val_") in MAXIMIZED_METRICS else "minimize"


def trial_config(base: Config, params: dict, output_dir: Path, threads: int | None = None) -> Config:
    """The base config with a trial's values set at their dotted keys, as a plain training config."""
    raw = base.to_dict()
    raw.pop("search", None)
    for key, value in params.items():
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {}) if not isinstance(node.get(part), dict) else node[part]
        node[parts[-1]] = value
    raw["output_dir"] = str(output_dir)
    if threads is not None and raw["train"].get("threads") is None:
        raw["train"]["threads"] = threads
    return config_from_dict(raw, origin=f"trial in {output_dir}", warn=False)


# ---------------------------------------------------------------------------------------------- storage and study


def storage_url(config: Config, storage: str | None) -> str:
    if storage:
        return storage
    assert config.output_dir is not None  # load_config fills output_dir
    return f"sqlite:///{Path(config.output_dir).resolve() / 'study.db'}"


def dashboard_command(url: str) -> str:
    """How to browse the study in optuna-dashboard, which takes a database URL or a journal file's path."""
    import shlex

    return f"optuna-dashboard {shlex.quote(url.removeprefix('journal:'))}"


def open_storage(url: str):
    """An Optuna storage for `sqlite:///...` (or any database URL) or `journal:PATH`, with one-line failures."""
    optuna = import_optuna()
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:")).expanduser()
        if not url.removeprefix("journal:"):
            raise RunError("--storage journal: needs a file path, e.g. journal:/shared/study.log")
        if path.is_dir():
            raise RunError(f"--storage {url}: {path} is a folder; a journal is a file")
        try:
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise RunError(f"cannot open journal {path}: {exc.strerror or exc}") from None
    if "://" not in url:
        raise RunError(f"--storage {url!r} is neither a database URL (sqlite:///study.db) nor journal:PATH")
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if path.is_dir():
            raise RunError(f"--storage {url}: {path} is a folder, not a database file")
        if not path.parent.is_dir():
            raise RunError(f"--storage {url}: {path.parent} is not an existing folder")
    import sqlalchemy.exc

    # SQLite lets one writer in at a time; a generous busy timeout makes the other workers wait instead of fail.
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(STORAGE_RETRIES):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            text = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            # Several processes creating one fresh file: "table studies already exists", a duplicate version row,
            # or "database is locked". The tables exist once any of them got through; open it again.
            racing = "already exists" in text or "UNIQUE" in text or "locked" in text or isinstance(exc, sqlalchemy.exc.IntegrityError)
            if not racing or attempt == STORAGE_RETRIES - 1:
                raise RunError(f"cannot open storage {url}: {text}") from None
            time.sleep(random.uniform(0.05, 0.3))
        except (ImportError, ModuleNotFoundError) as exc:
            raise RunError(f"cannot open storage {url}: {exc}") from None
        except ValueError as exc:  # an unknown dialect or malformed URL
            raise RunError(f"cannot open storage {url}: {exc}") from None
    raise AssertionError("unreachable")


def create_study(storage, study_name: str, metric: str, direction: str):
    """Create the study, or load it if it exists, refusing one that optimizes something else."""
    optuna = import_optuna()
    study = optuna.create_study(storage=storage, study_name=study_name, direction=direction, load_if_exists=True)
    stored = study.direction.name.lower()
    if stored != direction:
        raise RunError(
            f"study {study_name!r} in this storage was created to {stored}, but search asks to {direction} {metric}; "
            "use --study <new name>, or set search.direction to match"
        )
    existing = study.user_attrs.get("metric")
    if existing is None:
        study.set_user_attr("metric", metric)
    elif existing != metric:
        raise RunError(
            f"study {study_name!r} in this storage optimizes {existing}, but search.metric is {metric}; "
            "use --study <new name>, or set search.metric to match"
        )
    return study


def make_sampler(search: SearchConfig, space: Space, seed: int):
    optuna = import_optuna()
    if search.sampler == "grid":
        return _Grid(space.grid(), seed=seed)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, search.startup_trials))


def make_pruner(search: SearchConfig):
    optuna = import_optuna()
    if search.pruner == "none":
        return optuna.pruners.NopPruner()
    # Steps are epoch numbers from 1, and Optuna may prune from step n_warmup_steps on: so W epochs are safe at W + 1.
    return optuna.pruners.MedianPruner(n_startup_trials=search.startup_trials, n_warmup_steps=search.warmup_epochs + 1)


@functools.cache
def _grid_class():
    optuna = import_optuna()

    class Grid(optuna.samplers.GridSampler):
        """GridSampler whose after_trial does not call study.stop(), which only works inside study.optimize;
        the trial loop asks `is_exhausted` before each trial instead."""

        def after_trial(self, study, trial, state, values) -> None:
            return None

    return Grid


def _Grid(search_space, seed):
    return _grid_class()(search_space, seed=seed)


def sampler_seed(base: int, number: int) -> int:
    """A seed per trial number: a continued study does not replay earlier draws, two processes sharing a study
    (workers, a second command, another machine) never draw alike, and one process alone is reproducible."""
    import numpy as np

    return int(np.random.SeedSequence([base, number]).generate_state(1)[0])


# ---------------------------------------------------------------------------------------------- one trial


def _pruning_callback(trial, metric: str):
    from mlp_cli.train import Callback

    class Pruning(Callback):
        """Reports the epoch's validation metric to the trial; asks training to stop when the pruner says so."""

        def __init__(self):
            self.pruned_at: int | None = None
            self.epochs = 0

        def on_epoch(self, report) -> bool:
            self.epochs = report.epoch
            if report.val is None:
                return False
            value = report.val[metric.removeprefix("val_")]
            trial.report(float(value), report.epoch)
            if trial.should_prune():
                self.pruned_at = report.epoch
                return True
            return False

    return Pruning()


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text and isinstance(exc, MLPError) else f"{type(exc).__name__}: {text[0] if text else ''}"


class TrialLoop:
    """Draws, trains and records trials until `tickets` runs out, the grid is exhausted, or a stop signal."""

    def __init__(self, config: Config, study, space: Space, folder: Path, stop, *, seed: int, threads: int | None = None,
                 on_trial: Callable[[TrialRow], None] | None = None):
        self.config, self.study, self.space, self.folder = config, study, space, folder
        self.seed = seed
        assert config.search is not None  # mlp tune refused a config without search before any trial
        self.metric = config.search.metric
        self.threads = threads
        self.on_trial = on_trial or (lambda row: None)
        self.stop = stop  # signals.StopFlag, shared with every trial's Trainer
        self.shared = None
        self.interrupted: TrainingInterrupted | None = None
        self.exhausted = False
        self.ran = 0

    def run(self, take_ticket: Callable[[], bool]) -> None:
        """Call inside `SignalHandlers(stop)`, so that a signal only sets the flag."""
        if not self.space.touches_data() and not self.stop:
            from mlp_cli.data import load_dataset

            self.shared = load_dataset(self.config)  # once per process, shared by its trials
        while not self.stop:
            if isinstance(self.study.sampler, _grid_class()) and self.study.sampler.is_exhausted(self.study):
                self.exhausted = True
                return
            if not take_ticket():
                return
            self.run_trial()
        if self.stop and self.interrupted is None:
            name = signal.Signals(self.stop.signum).name
            self.interrupted = TrainingInterrupted(f"{name} received between trials; no trial was running", self.stop.signum)

    def run_trial(self) -> None:
        from optuna.trial import TrialState

        from mlp_cli.train import Trainer

        trial = self.study.ask()
        self.ran += 1
        assert self.config.search is not None  # mlp tune refused a config without search before any trial
        if self.config.search.sampler != "grid":  # draws happen at suggest time, with this trial's own seed
            self.study.sampler = make_sampler(self.config.search, self.space, sampler_seed(self.seed, trial.number))
        run_dir = self.folder / "trials" / str(trial.number)
        trial.set_user_attr("run_dir", str(run_dir))
        params: dict = {}
        callback = None
        try:
            params = self.space.suggest(trial)
            if run_dir.exists() and any(run_dir.iterdir()):
                raise _Fatal(f"{run_dir} already holds a run that is not trial {trial.number} of study "
                             f"{self.study.study_name!r}; move it away or use another output_dir")
            config = trial_config(self.config, params, run_dir, self._threads(params))
            callback = _pruning_callback(trial, self.metric)
            summary = Trainer(config, run_dir, data=self.shared, callback=callback, stop=self.stop).run()
        except TrainingInterrupted as exc:
            self._fail(trial, params, f"interrupted: {one_line(exc)}", callback)
            self.interrupted = exc
            return
        except _Fatal as exc:
            self._fail(trial, params, str(exc), callback)
            raise RunError(str(exc)) from None
        except MLPError as exc:
            self._fail(trial, params, one_line(exc), callback)
            return
        except BaseException as exc:  # a bug: recorded as failed, then shown with its traceback
            self._fail(trial, params, one_line(exc), callback)
            raise
        trial.set_user_attr("epochs", summary["epochs_run"])
        if callback.pruned_at is not None:
            self.study.tell(trial, state=TrialState.PRUNED)
            self.on_trial(TrialRow(trial.number, "PRUNED", params, None, summary["epochs_run"], None, str(run_dir)))
            return
        value = (summary["val"] or {}).get(self.metric.removeprefix("val_"))
        if value is None or not math.isfinite(value):
            self._fail(trial, params, f"{self.metric} is {value} for the kept weights", callback)
            return
        self.study.tell(trial, float(value))
        self.on_trial(TrialRow(trial.number, "COMPLETE", params, float(value), summary["epochs_run"], None, str(run_dir)))

    def _threads(self, params: dict) -> int | None:
        """With several workers on one machine, each trains with at most its share of the cores."""
        if self.threads is None or self.shared is None or self.config.train.threads is not None:
            return None
        from mlp_cli import params as counting
        from mlp_cli.device import default_threads
        from mlp_cli.model import widths

        model = trial_config(self.config, params, self.folder).model
        layers = counting.count_layers(widths(self.shared.n_inputs, self.shared.n_outputs, model), model.batch_norm)
        return min(default_threads(counting.total(layers)), self.threads)

    def _fail(self, trial, params: dict, error: str, callback) -> None:
        from optuna.trial import TrialState

        epochs = callback.epochs if callback is not None else 0
        trial.set_user_attr("error", error)
        trial.set_user_attr("epochs", epochs)
        self.study.tell(trial, state=TrialState.FAIL)
        self.on_trial(TrialRow(trial.number, "FAIL", params, None, epochs, error, trial.user_attrs.get("run_dir")))


class _Fatal(Exception):
    """A trial problem that would repeat for every later trial: stop the whole command."""


# ---------------------------------------------------------------------------------------------- the command


def tune(config_path: Path, *, trials: int | None = None, storage: str | None = None, study_name: str | None = None,
         workers: int = 1, quiet: bool = False, on_trial: Callable[[TrialRow], None] | None = None) -> TuneResult:
    """Run `trials` more trials of the study (created if new) and write best_config.yaml; Ctrl-C keeps finished trials."""
    stop = StopFlag()  # training checks it after every step; with workers, this process only waits for them
    with SignalHandlers(stop):  # from here on a Ctrl-C only sets the flag, which every step below checks
        return _tune(config_path, trials, storage, study_name, workers, quiet, on_trial, stop)


def _tune(config_path, trials, storage, study_name, workers, quiet, on_trial, stop) -> TuneResult:
    config = load_config(config_path)
    if config.search is None:
        raise ConfigError(f"{config_path}: mlp tune needs a search: section (see docs/config.md or `mlp schema --markdown`)")
    optuna = import_optuna()
    # Optuna logs to stderr; its per-trial INFO lines repeat what the CLI prints, so only its warnings pass.
    optuna.logging.set_verbosity(optuna.logging.ERROR if quiet else optuna.logging.WARNING)
    search = config.search
    if workers < 1:
        raise RunError("--workers must be at least 1")
    n_trials = trials if trials is not None else search.trials
    assert config.output_dir is not None  # load_config fills output_dir
    folder = Path(config.output_dir)
    try:
        (folder / "trials").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create {folder / 'trials'}: {exc.strerror or exc}") from None
    if not os.access(folder / "trials", os.W_OK):
        raise RunError(f"cannot write into {folder / 'trials'}: permission denied")
    # best_config.yaml is written at the end: refuse now, before any trial, when it is the config being tuned.
    files.check_output(folder / "best_config.yaml", inputs=[config_path])
    url = storage_url(config, storage)
    name = study_name or Path(config_path).stem
    direction = direction_of(search)
    space = Space(search)
    storage_object = open_storage(url)
    # The study is created here, once, before any worker starts: workers only ever load it.
    study = create_study(storage_object, name, search.metric, direction)
    seed = search.seed if search.seed is not None else config.train.seed
    result = TuneResult(name, url, search.metric, direction, folder)
    if workers == 1:
        study = optuna.load_study(study_name=name, storage=storage_object, pruner=make_pruner(search),
                                  sampler=make_sampler(search, space, seed))
        loop = TrialLoop(config, study, space, folder, stop, seed=seed, on_trial=on_trial)
        left = [n_trials]

        def take() -> bool:
            left[0] -= 1
            return left[0] >= 0

        loop.run(take)
        result.interrupted, result.exhausted, result.new = loop.interrupted, loop.exhausted, loop.ran
    else:
        result.interrupted, result.exhausted, result.new, processes = _run_workers(
            config_path, url, name, workers, n_trials, seed, quiet, on_trial, stop)
        try:
            return finish(result, config, storage_object, space)
        finally:
            for process in processes:  # their interpreters shut down while the table was being made
                process.join()
    return finish(result, config, storage_object, space)


def finish(result: TuneResult, config: Config, storage, space: Space) -> TuneResult:
    """Every trial of the study as rows, and best_config.yaml from the best one."""
    optuna = import_optuna()
    study = optuna.load_study(study_name=result.study, storage=storage)
    assert config.search is not None  # mlp tune refused a config without search before any trial
    for trial in study.get_trials(deepcopy=False):
        params = {k: space.decode(k, v) if k in config.search.space else v for k, v in trial.params.items()}
        value = trial.value if trial.state.name == "COMPLETE" else None
        result.rows.append(TrialRow(trial.number, trial.state.name, params, value, trial.user_attrs.get("epochs"),
                                    trial.user_attrs.get("error"), trial.user_attrs.get("run_dir")))
    complete = [row for row in result.rows if row.state == "COMPLETE"]
    if complete:
        best = study.best_trial
        result.best = next(row for row in result.rows if row.number == best.number)
        best_config = trial_config(config, result.best.params, result.folder / "best")
        result.best_config = result.folder / "best_config.yaml"
        header = (f"# Best trial {best.number} of study {result.study!r} ({result.metric} {best.value:.6g}); "
                  f"train it with: mlp train {result.best_config}\n")
        write_text(result.best_config, header + dump_yaml(best_config))
    return result


# ---------------------------------------------------------------------------------------------- workers


def _run_workers(config_path, url, name, workers, n_trials, seed, quiet, on_trial, stop):
    """K processes on this machine against one storage; trials are handed out one ticket at a time."""
    import multiprocessing
    import queue as queue_module

    context = multiprocessing.get_context("spawn")  # no forked torch or database connections
    tickets = context.Value("i", n_trials)
    events = context.Queue()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // workers)
    processes = [
        context.Process(target=_worker, args=(str(config_path), url, name, index, tickets, events, seed, quiet, threads),
                        daemon=False)
        for index in range(workers)
    ]
    errors: list[tuple[str, int]] = []
    done: set[int] = set()
    interrupted = None
    exhausted = False
    ran = 0

    def handle(event) -> None:
        nonlocal interrupted, exhausted, ran
        kind = event[0]
        if kind == "trial":
            ran += 1
            if on_trial is not None:
                on_trial(TrialRow(**event[1]))
        elif kind == "interrupted":
            interrupted = interrupted or TrainingInterrupted(event[1], event[2])
        elif kind == "exhausted":
            exhausted = True
        elif kind == "error":
            errors.append((event[1], event[2]))
        elif kind == "done":
            done.add(event[1])

    for process in processes:
        process.start()
    while any(p.is_alive() and i not in done for i, p in enumerate(processes)):
        # Workers run in their own process groups, so a terminal's Ctrl-C reaches them through here, once each.
        if stop.signum is not None:
            for process in processes:
                if process.is_alive():
                    os.kill(process.pid, stop.signum)
            stop.signum = None
        try:
            handle(events.get(timeout=0.2))
        except queue_module.Empty:
            pass
    while True:
        try:
            handle(events.get(timeout=0.05))
        except queue_module.Empty:
            break
    failed = [p for i, p in enumerate(processes) if i not in done and p.exitcode not in (0, None)]
    if errors:
        message, code = errors[0]
        error = MLPError(message)
        error.exit_code = code
        raise error
    if failed and interrupted is None:
        raise RunError(f"worker {processes.index(failed[0])} exited with code {failed[0].exitcode}")
    return interrupted, exhausted, ran, processes


def _worker(config_path, url, name, index, tickets, events, seed, quiet, threads) -> None:
    os.setpgrp()  # Ctrl-C goes to the parent, which forwards it exactly once
    pending: list[int] = []  # a signal that arrives while this process is still importing torch
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda s, f: pending.append(s))
    try:

        optuna = import_optuna()
        optuna.logging.set_verbosity(optuna.logging.ERROR if quiet else optuna.logging.WARNING)
        import warnings

        if quiet:
            warnings.simplefilter("ignore")
        config = load_config(config_path)
        assert config.search is not None and config.output_dir is not None  # the parent checked this config's search
        space = Space(config.search)
        study = optuna.load_study(study_name=name, storage=open_storage(url),
                                  sampler=make_sampler(config.search, space, seed),
                                  pruner=make_pruner(config.search))

        def take() -> bool:
            with tickets.get_lock():
                if tickets.value <= 0:
                    return False
                tickets.value -= 1
                return True

        stop = StopFlag()
        with SignalHandlers(stop):
            if pending:
                stop.set(pending[0])
            loop = TrialLoop(config, study, space, Path(config.output_dir), stop, seed=seed, threads=threads,
                             on_trial=lambda row: events.put(("trial", row.__dict__)))
            loop.run(take)
        if loop.interrupted is not None:
            events.put(("interrupted", str(loop.interrupted), loop.interrupted.exit_code - 128))  # the signal
        if loop.exhausted:
            events.put(("exhausted",))
        events.put(("done", index))
    except MLPError as exc:
        events.put(("error", f"worker {index}: {exc}", exc.exit_code))
        events.close()
        events.join_thread()
        raise SystemExit(exc.exit_code) from None
    events.close()
    events.join_thread()
