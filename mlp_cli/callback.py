"""What training reports: run info, progress, epoch reports, and the Callback that receives them (and may stop the run)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlp_cli.config import Config


@dataclass
class RunInfo:
    config: Config
    run_dir: Path
    device: str
    threads: int
    layers: list
    total_params: int
    n_train: int
    n_val: int
    n_test: int
    steps_per_epoch: int
    start_epoch: int
    labels: list | None
    world_size: int = 1


@dataclass
class Progress:
    epoch: int
    epochs: int
    step: int
    steps: int
    rows: int  # rows trained on so far in this epoch (all ranks)
    seconds: float  # since the epoch started
    running_loss: float


@dataclass
class EpochReport:
    epoch: int
    epochs: int
    train_loss: float
    val: dict | None
    lr: float
    seconds: float
    improved: bool
    best_epoch: int
    main_metric: str
    diagnostics: list | None = None


class Callback:
    """Receives what training has to say; the library never prints. Override what you need.

    `on_epoch` may return True to request a stop (a tuner pruning the trial, say): training ends after that epoch
    as after early stopping, with best.pt, last.pt, metrics.csv and summary.json written as usual.
    """

    def on_start(self, info: RunInfo) -> None: ...

    def on_progress(self, progress: Progress) -> None: ...

    def on_epoch(self, report: EpochReport) -> bool | None: ...

    def on_message(self, text: str) -> None: ...

    def on_diagnostics(self, rows: list[dict], title: str) -> None: ...

    def on_end(self, summary: dict) -> None: ...

    def close(self) -> None:
        """Release what the callback holds (a live display, a tracking run); the CLI calls it once training is over."""


class Callbacks(Callback):
    """Several callbacks as one: each hook goes to each, in order; a stop asked by any of them stops the run."""

    def __init__(self, callbacks: list[Callback]):
        self.callbacks = callbacks

    def on_start(self, info: RunInfo) -> None:
        for c in self.callbacks:
            c.on_start(info)

    def on_progress(self, progress: Progress) -> None:
        for c in self.callbacks:
            c.on_progress(progress)

    def on_epoch(self, report: EpochReport) -> bool:
        # Every callback hears the epoch (a tracker logs it) even when an earlier one already asked to stop.
        return any([bool(c.on_epoch(report)) for c in self.callbacks])

    def on_message(self, text: str) -> None:
        for c in self.callbacks:
            c.on_message(text)

    def on_diagnostics(self, rows: list[dict], title: str) -> None:
        for c in self.callbacks:
            c.on_diagnostics(rows, title)

    def on_end(self, summary: dict) -> None:
        for c in self.callbacks:
            c.on_end(summary)

    def close(self) -> None:
        for c in self.callbacks:
            c.close()
