"""The `mlp` command line: thin Typer commands that call the library and do all of the printing.

Nothing heavy is imported at module level, so `mlp --help` and `mlp params 6,3,5,4,3` answer at once; torch
is imported inside the commands that train or load models.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from mlp_cli import __version__
from mlp_cli.errors import MLPError, MLPWarning, TrainingInterrupted

app = typer.Typer(
    name="mlp",
    help="Declarative multilayer-perceptron experiments on tabular data: one YAML file, `mlp train`, done.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

out = Console(soft_wrap=True)  # results: tables, JSON, CSV
err = Console(stderr=True, soft_wrap=True)  # progress, warnings, errors

ConfigArg = Annotated[Path, typer.Argument(help="YAML config file.", show_default=False)]
OverridesArg = Annotated[
    Optional[list[str]],
    typer.Argument(help="Dotted overrides parsed as YAML, e.g. train.epochs=5 model.hidden=[128,64].", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]


def _version(value: bool) -> None:
    if value:
        print(f"mlp {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """Declarative multilayer-perceptron experiments on tabular data."""


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, MLPWarning):
        err.print(f"[yellow]warning:[/yellow] {message}", markup=True, highlight=False)
    else:  # a library's own warning: still worth seeing, without the source line
        err.print(f"[yellow]warning:[/yellow] {category.__name__}: {message}", highlight=False)


def handles_errors(quiet_param: str | None = None):
    """MLPError becomes `error: <message>` on stderr and its exit code; warnings print as `warning: ...`."""

    def decorate(command):
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            # Under torchrun every rank runs this command; only rank 0 speaks, so each message appears once.
            quiet = (bool(kwargs.get(quiet_param)) if quiet_param else False) or rank_from_env() != 0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore" if quiet else "default")
                warnings.simplefilter("ignore" if quiet else "always", MLPWarning)
                warnings.showwarning = _show_warning
                try:
                    return command(*args, **kwargs)
                except MLPError as exc:
                    if rank_from_env() != 0:
                        raise typer.Exit(exc.exit_code) from None
                    err.print(Text("error: ", style="red") + Text(str(exc)), highlight=False)
                    raise typer.Exit(exc.exit_code) from None

        return wrapper

    return decorate


def rank_from_env() -> int:
    """This process's rank under torchrun (0 when alone), read without importing torch."""
    return int(os.environ.get("RANK", "0") or 0)


# ---------------------------------------------------------------------------------------------- params / config / schema


@app.command()
@handles_errors()
def params(
    spec: Annotated[str, typer.Argument(help="Layer widths like 6,3,5,4,3 (input, hidden..., output), or a config file.", show_default=False)],
    overrides: OverridesArg = None,
    json_out: JsonOpt = False,
    batch_norm: Annotated[bool, typer.Option("--batch-norm", help="Count BatchNorm1d on hidden layers (specs only).")] = False,
) -> None:
    """Count trainable parameters layer by layer: K(l)·(K(l-1)+1) per Linear layer."""
    from mlp_cli import params as counting

    if _looks_like_config(spec):
        widths, batch_norm, title = _config_widths(Path(spec), overrides or [])
    else:
        if overrides:
            raise MLPError(f"overrides apply to a config file, not to a width spec like {spec!r}")
        widths, title = counting.parse_spec(spec), None
    layers = counting.count_layers(widths, batch_norm)
    if json_out:
        out.print_json(json.dumps(counting.as_json(layers)))
        return
    from mlp_cli.render import params_table

    out.print(params_table(layers, title))


def _looks_like_config(arg: str) -> bool:
    path = Path(arg)
    return path.suffix.lower() in (".yaml", ".yml") or path.is_file()


def _config_widths(path: Path, overrides: list[str]) -> tuple[list[int], bool, str]:
    """Input width from the data's columns, output width from its classes; reads the data, never imports torch."""
    from mlp_cli.config import load_config
    from mlp_cli.data import fit, read_frames, split_frames
    from mlp_cli.tasks import TASKS

    config = load_config(path, overrides)
    if config.data.streaming:
        from mlp_cli.data import fit_streaming

        prep = fit_streaming(config)[0]
    else:
        train_frame, test_frame, features = read_frames(config)
        parts = split_frames(config, train_frame, test_frame)
        prep, _ = fit(config, parts["train"], features)
    widths = [prep.n_inputs, *config.model.hidden, prep.n_outputs]
    what = f"{prep.n_outputs} {TASKS[config.task].output_noun}"
    return widths, config.model.batch_norm, f"{path}: {prep.n_inputs} inputs → {what}"


@app.command("config")
@handles_errors()
def show_config(config: ConfigArg, overrides: OverridesArg = None, json_out: JsonOpt = False) -> None:
    """Validate a config and print it resolved, with every default filled in."""
    from mlp_cli.config import dump_yaml, load_config

    resolved = load_config(config, overrides or [])
    if json_out:
        out.print_json(json.dumps(resolved.to_dict()))
    else:
        sys.stdout.write(dump_yaml(resolved))


@app.command()
@handles_errors()
def schema(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a table of every key, its default and meaning instead.")] = False,
) -> None:
    """Print the config's JSON Schema (point your editor's YAML plugin at it for completion and checks)."""
    from mlp_cli.config import reference_markdown, schema as config_schema

    sys.stdout.write(reference_markdown() if markdown else json.dumps(config_schema(), indent=2) + "\n")


# ---------------------------------------------------------------------------------------------- train


@app.command()
@handles_errors(quiet_param="quiet")
def train(
    config: ConfigArg,
    overrides: OverridesArg = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run in output_dir.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in output_dir from its last.pt.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    json_out: JsonOpt = False,
    diagnose: Annotated[bool, typer.Option("--diagnose", help="Per-layer gradient and activation health (train.diagnostics).")] = False,
    nproc: Annotated[Optional[int], typer.Option("--nproc", min=1, help="Data-parallel processes, launched through torchrun.")] = None,
) -> None:
    """Train the model a config describes; writes config.yaml, metrics.csv, best.pt, last.pt and summary.json."""
    from mlp_cli.config import load_config

    overrides = list(overrides or [])
    if diagnose:
        overrides.append("train.diagnostics=true")
    if overwrite and resume:
        raise MLPError("--overwrite and --resume contradict each other; pick one")
    resolved = load_config(config, overrides)
    if nproc and nproc > 1:
        from mlp_cli.data import load_dataset
        from mlp_cli.distributed import launch
        from mlp_cli.train import Trainer

        # Check what every rank would check before starting them, so a bad run dir or data file is one clear
        # message here rather than one per process plus torchrun's failure report.
        Trainer(resolved, overwrite=overwrite, resume=resume).check_run_dir()
        load_dataset(resolved)
        raise typer.Exit(launch(sys.argv[1:], nproc))
    from mlp_cli.distributed import world_from_env

    world = world_from_env(resolved)
    from mlp_cli.train import train as run_training

    reporter = None
    if not quiet and not json_out and world.is_main:
        from mlp_cli.reporter import RichReporter

        reporter = RichReporter(err)
    elif not quiet and json_out and world.is_main:
        from mlp_cli.reporter import RichReporter

        reporter = RichReporter(err, final_tables=False)
    try:
        summary = run_training(resolved, callback=reporter, overwrite=overwrite, resume=resume, world=world)
    except TrainingInterrupted as exc:
        command = shlex.join(["mlp", "train", str(config), *overrides, "--resume"])
        raise TrainingInterrupted(f"{exc}\nresume with: {command}", exc.exit_code - 128) from None
    finally:
        if reporter is not None:
            reporter.close()
        world.close()
    if json_out and world.is_main:
        from mlp_cli.files import json_safe

        sys.stdout.write(json.dumps(json_safe(summary), indent=2) + "\n")


# ---------------------------------------------------------------------------------------------- eval / predict


DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")]


@app.command("eval")
@handles_errors()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A best.pt or last.pt written by mlp train.", show_default=False)],
    data: Annotated[Optional[Path], typer.Option("--data", help="CSV or Parquet with the target column; default: the run's test split.")] = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Evaluate a checkpoint: accuracy, balanced accuracy, macro F1, kappa and the confusion matrix (or R², RMSE, MAE)."""
    from mlp_cli.evaluate import evaluate_checkpoint
    from mlp_cli.files import json_safe

    metrics, task = evaluate_checkpoint(checkpoint, data, device)
    if json_out:
        sys.stdout.write(json.dumps(json_safe(metrics), indent=2) + "\n")
        return
    from mlp_cli.render import metrics_tables

    for table in metrics_tables(metrics, task, f"{data or 'test split'} ({metrics['n']} rows)"):
        out.print(table)
        out.print()


@app.command()
@handles_errors()
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="A best.pt written by mlp train.", show_default=False)],
    data: Annotated[Path, typer.Argument(help="CSV or Parquet with the feature columns (target optional).", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write CSV here instead of stdout.")] = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Predict every row of a file: `prediction` in your labels (or target units) and `prob_<label>` per class."""
    from mlp_cli.evaluate import predictions_csv

    data_bytes = predictions_csv(checkpoint, data, device)
    if output is None:
        sys.stdout.buffer.write(data_bytes) if hasattr(sys.stdout, "buffer") else sys.stdout.write(data_bytes.decode())
        return
    from mlp_cli.files import write_atomic

    write_atomic(output, lambda handle: handle.write(data_bytes))
    lines = data_bytes.count(b"\n") - 1
    err.print(f"wrote {lines:,} predictions to {output}", highlight=False)


# ---------------------------------------------------------------------------------------------- course tools


@app.command("sweep")
@handles_errors(quiet_param="quiet")
def sweep_command(
    config: ConfigArg,
    key: Annotated[str, typer.Argument(help="Dotted key to vary, e.g. model.hidden.", show_default=False)],
    values: Annotated[list[str], typer.Argument(help="Values parsed as YAML, e.g. [1] [4] [16] [64].", show_default=False)],
    override: Annotated[Optional[list[str]], typer.Option("--set", help="Extra override for every run, e.g. --set train.epochs=50.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier sweep of this key.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """One run per value of KEY on the same data and seed: a table, sweep.csv and sweep.png (error against parameters)."""
    from dataclasses import asdict

    from mlp_cli.render import sweep_row_table
    from mlp_cli.sweep import sweep

    def announce(value: str):
        if not quiet and not json_out:
            err.print(f"[bold]{key}={value}[/bold]", highlight=False)
        return None

    def on_row(row) -> None:
        if not quiet and not json_out:
            err.print(f"  {row.params:,} params  train loss {row.train_loss:.4g}  test loss {row.test_loss:.4g}", highlight=False)

    result = sweep(config, key, values, list(override or []), overwrite=overwrite, callback_factory=announce, on_row=on_row)
    if json_out:
        from mlp_cli.files import json_safe

        sys.stdout.write(json.dumps(json_safe([asdict(r) for r in result.rows]), indent=2) + "\n")
    elif not quiet:
        out.print(sweep_row_table(result))
        err.print(f"wrote {result.folder / 'sweep.csv'}" + (f" and {result.plot}" if result.plot else " (pip install 'mlp-cli[plot]' for sweep.png)"), highlight=False)
    if result.interrupted is not None:
        raise TrainingInterrupted(
            f"sweep interrupted after {len(result.rows)} of {len(values)} runs; finished rows kept in {result.folder / 'sweep.csv'}",
            result.interrupted.exit_code - 128,
        )


@app.command("plot")
@handles_errors()
def plot_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by mlp train.", show_default=False)],
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder for the PNGs (default: the run directory).")] = None,
) -> None:
    """Write PNGs: loss and metric curves, confusion matrix, decision regions (2 inputs) or fitted curve (1 input), gradient flow."""
    from mlp_cli.plot import plot_run

    for path in plot_run(run_dir, out_dir):
        out.print(str(path), highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
