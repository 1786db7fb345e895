"""Live training output with rich: parameter table, progress bar, one line per epoch, final metric tables."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from mlp_cli.render import describe_task, diagnostics_table, epoch_line, metrics_tables, params_table
from mlp_cli.tasks import TASKS
from mlp_cli.train import Callback, EpochReport, RunInfo


class RichReporter(Callback):
    """Everything goes to `console` (stderr), so stdout stays free for --json."""

    def __init__(self, console: Console, final_tables: bool = True):
        self.console = console
        self.final_tables = final_tables
        self.progress: Progress | None = None
        self.task_id: TaskID | None = None
        self.info: RunInfo | None = None

    def on_start(self, info: RunInfo) -> None:
        self.info = info
        cfg = info.config
        c = self.console
        labels = info.labels or []
        what = describe_task(TASKS[cfg.task], labels, cfg.data.target)
        ranks = f", {info.world_size} processes" if info.world_size > 1 else ""
        # User text (the run folder, labels, the target's name) goes in as Text or with markup=False: never markup.
        threads = f"{info.threads} thread{'s' if info.threads != 1 else ''}"
        c.print(Text("mlp train", style="bold") + Text(f" → {info.run_dir}  (device {info.device}, {threads}{ranks})"), highlight=False)
        c.print(
            f"data: {info.n_train:,} train / {info.n_val:,} val / {info.n_test:,} test rows, {what}; "
            f"loss {cfg.loss_name}, {cfg.train.optimizer} lr {cfg.train.lr:g}, batch {cfg.train.batch_size}",
            highlight=False, markup=False,
        )
        c.print(params_table(info.layers))
        if info.start_epoch:
            c.print(f"resuming after epoch {info.start_epoch}", highlight=False, markup=False)
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps  {task.fields[rate]} rows/s  loss {task.fields[loss]}", markup=False),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=c,
            transient=True,
        )
        self.progress.start()
        self.task_id = self.progress.add_task("train", total=info.steps_per_epoch, epoch="-", rate="-", loss="-")

    def on_progress(self, p) -> None:
        if self.progress is None:
            return
        rate = f"{p.rows / p.seconds:,.0f}" if p.seconds > 0 else "-"
        assert self.task_id is not None  # added together with the progress bar
        self.progress.update(self.task_id, completed=p.step, total=p.steps, epoch=f"{p.epoch}/{p.epochs}", rate=rate, loss=f"{p.running_loss:.4f}")

    def on_epoch(self, report: EpochReport) -> None:
        if self.progress is not None:
            assert self.task_id is not None  # added together with the progress bar
            self.progress.update(self.task_id, completed=0, epoch=f"{report.epoch + 1}/{report.epochs}")
        self.console.print(epoch_line(report), highlight=False)
        if report.diagnostics:
            self.on_diagnostics(report.diagnostics, f"layer health after epoch {report.epoch}")

    def on_message(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def on_diagnostics(self, rows: list[dict], title: str) -> None:
        from mlp_cli.diagnostics import warnings_for

        self.console.print(diagnostics_table(rows, title))
        assert self.info is not None  # on_start comes first
        for text in warnings_for(rows, self.info.config.model.activation):
            self.console.print(Text("warning: ", style="yellow") + Text(text), highlight=False)

    def on_end(self, summary: dict) -> None:
        self.close()
        c = self.console
        best = f"best epoch {summary['best_epoch']} of {summary['epochs_run']}"
        c.print(f"done in {summary['wall_seconds']:.1f}s, {best}; wrote {summary['run_dir']}/best.pt", highlight=False, markup=False)
        if not self.final_tables:
            return
        assert self.info is not None  # on_start comes first
        task = self.info.config.task
        metrics = summary["test"] or summary["val"]
        if metrics is None:
            return
        title = f"{'test' if summary['test'] else 'validation'} ({metrics['n']:,} rows)"
        for table in metrics_tables(metrics, task, title, summary.get("baselines")):
            c.print()
            c.print(table)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
