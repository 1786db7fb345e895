"""The `mlp` command line: thin Typer commands that call the library and do all of the printing.

Nothing heavy is imported at module level, so `mlp --help` and `mlp params 6,3,5,4,3` answer at once; torch
is imported inside the commands that train or load models.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import json
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.text import Text

from mlp_cli import __version__
from mlp_cli.errors import MLPError, MLPWarning, TrainingInterrupted

if TYPE_CHECKING:
    from mlp_cli.callback import Callback

app = typer.Typer(
    name="mlp",
    help="Declarative multilayer-perceptron experiments on tabular data: one YAML file, `mlp train`, done.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# markup=False: labels, column names and paths are printed as written (`forest [dense]`, `[/]`); styling is
# done with Text objects, never by interpolating user text into markup.
out = Console(soft_wrap=True, markup=False)  # results: tables, JSON, CSV
err = Console(stderr=True, soft_wrap=True, markup=False)  # progress, warnings, errors

ConfigArg = Annotated[Path, typer.Argument(help="YAML config file.", show_default=False)]
OverridesArg = Annotated[
    list[str] | None,
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
        err.print(Text("warning: ", style="yellow") + Text(str(message)), highlight=False)  # text, never markup
    else:  # a library's own warning: still worth seeing, without the source line
        err.print(Text("warning: ", style="yellow") + Text(f"{category.__name__}: {message}"), highlight=False)


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
                except OSError as exc:
                    # Files are written through files.write_atomic, which raises RunError; what is left is the
                    # standard output itself (`mlp predict ... > out.csv` on a full disk).
                    if exc.errno not in OUTPUT_ERRNOS:
                        raise
                    err.print(Text("error: ", style="red") + Text(output_problem(exc)), highlight=False)
                    raise typer.Exit(1) from None

        return wrapper

    return decorate


@contextlib.contextmanager
def loading_torch():
    """Import torch's modules with Python's cyclic garbage collector paused, then freeze what the import made.

    Loading torch allocates so many objects that the collector runs again and again during the import (0.17 s of a
    1.5 s import), and every later full collection walks them all (0.22 s over a 2-epoch 200k-row run); none of
    it is ever garbage. gc.freeze moves them out of the collector's sight. Nothing happens when torch is loaded
    already (a second command in one process), so nothing made by anyone else is frozen.
    """
    if "torch" in sys.modules:
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    with _ctrl_c_after():
        try:
            yield
        finally:
            gc.freeze()
            if enabled:
                gc.enable()


@contextlib.contextmanager
def _ctrl_c_after():
    """Ctrl-C during the block takes effect when it ends: a KeyboardInterrupt raised inside torch's import can cross
    a C++ frame that cannot pass it on (`terminate called after throwing an instance of
    'pybind11::error_already_set'`, exit 134), so the import finishes first (a second or two) and the command then
    stops as Ctrl-C stops it anywhere else."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield  # someone else handles Ctrl-C (or it is ignored): leave it to them
        return
    asked: list[int] = []
    signal.signal(signal.SIGINT, lambda number, frame: asked.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if asked:
        raise KeyboardInterrupt


OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


def output_problem(exc: Exception) -> str:
    """What `error:` says when standard output cannot be written, during a command or at its final flush."""
    return f"could not write the output: {getattr(exc, 'strerror', None) or exc}"


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
    if "\0" in arg:  # no file name holds a NUL byte; let the spec parser name it
        return False
    path = Path(arg)
    try:
        return path.suffix.lower() in (".yaml", ".yml") or path.is_file()
    except OSError:  # a name too long for the file system is a spec, not a file
        return False


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
    nproc: Annotated[int | None, typer.Option("--nproc", min=1, help="Data-parallel processes, launched through torchrun.")] = None,
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

        # Check what every rank would check before starting them, so a bad run dir or data file is one clear
        # message here rather than one per process plus torchrun's failure report.
        from mlp_cli.files import HELD_ENV, FolderLock
        from mlp_cli.train import Trainer

        # The launcher holds the run directory's lock for the whole job; its ranks inherit it through the environment.
        assert resolved.output_dir is not None  # load_config fills output_dir
        with FolderLock(Path(resolved.output_dir)) as lock:
            Trainer(resolved, overwrite=overwrite, resume=resume).check_run_dir()
            load_dataset(resolved)
            os.environ[HELD_ENV] = os.path.realpath(lock.path)
            try:
                code = launch(sys.argv[1:], nproc)
            finally:
                del os.environ[HELD_ENV]
        raise typer.Exit(code)
    from mlp_cli.data.load import ReadAhead

    ahead = ReadAhead.start(resolved)  # the data is parsed while the imports below load torch
    with loading_torch():
        from mlp_cli.distributed import world_from_env
        from mlp_cli.train import train as run_training

    world = world_from_env(resolved)

    reporter: Callback | None = None
    if not quiet and not json_out and world.is_main:
        from mlp_cli.reporter import RichReporter

        reporter = RichReporter(err)
    elif not quiet and json_out and world.is_main:
        from mlp_cli.reporter import RichReporter

        reporter = RichReporter(err, final_tables=False)
    from mlp_cli.tracking import attach

    reporter = attach(resolved, reporter, world.is_main)  # MLflow and TensorBoard trackers, when the config asks
    try:
        summary = run_training(resolved, callback=reporter, overwrite=overwrite, resume=resume, world=world, read_ahead=ahead)
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
    data: Annotated[Path | None, typer.Option("--data", help="CSV or Parquet with the target column; default: the run's test split.")] = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Evaluate a checkpoint: accuracy, balanced accuracy, macro F1, kappa and the confusion matrix (or R², RMSE, MAE)."""
    with loading_torch():
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
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write CSV here instead of stdout (a raster needs -o MAP.tif).")] = None,
    device: DeviceOpt = "cpu",
    confidence: Annotated[bool, typer.Option("--confidence", help="Raster: add the top probability x 100 as band 2.")] = False,
    proba: Annotated[bool, typer.Option("--proba", help="Raster: add one float32 probability band per class.")] = False,
) -> None:
    """Predict every row of a file: `prediction` in your labels (or target units) and `prob_<label>` per class.

    Given a raster (GeoTIFF, VRT, JPEG2000), write a map on its grid instead: band 1 the class or value.

    A `.onnx` file written by `mlp export` is run through onnxruntime, without torch."""
    from mlp_cli.raster import is_raster

    if is_raster(data):  # a scene in, a map out
        if checkpoint.suffix.lower() == ".onnx":
            raise MLPError(f"{data} is a raster: maps are predicted from the checkpoint (best.pt), not from an ONNX model")
        _predict_map(checkpoint, data, output, device, confidence, proba)
        return
    if confidence or proba:
        raise MLPError("--confidence and --proba apply to raster maps; a table gets prob_<label> columns already")
    if output is not None:
        from mlp_cli.files import check_output

        check_output(output, inputs=[checkpoint, data])
    if checkpoint.suffix.lower() == ".onnx":
        from mlp_cli.onnx_model import predictions_csv as onnx_predictions_csv

        if device != "cpu":
            raise MLPError(f"--device {device}: an ONNX model runs through onnxruntime on the CPU here")
        data_bytes = onnx_predictions_csv(checkpoint, data)
    else:
        with loading_torch():
            from mlp_cli.evaluate import predictions_csv
        data_bytes = predictions_csv(checkpoint, data, device)
    if output is None:
        sys.stdout.buffer.write(data_bytes) if hasattr(sys.stdout, "buffer") else sys.stdout.write(data_bytes.decode())
        return
    from mlp_cli.files import write_atomic

    write_atomic(output, lambda handle: handle.write(data_bytes))
    lines = data_bytes.count(b"\n") - 1
    err.print(f"wrote {lines:,} predictions to {output}", highlight=False)


def _predict_map(checkpoint: Path, raster: Path, output: Path | None, device: str, confidence: bool, proba: bool) -> None:
    if output is None:
        raise MLPError(f"{raster} is a raster: give -o MAP.tif for the prediction map")
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from mlp_cli.raster_predict import check_output, predict_map

    check_output(output, raster, checkpoint)  # before the progress bar, whose line would precede the refusal
    with Progress(TextColumn("predicting"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("map", total=None)
        try:
            report = predict_map(checkpoint, raster, output, confidence=confidence, proba=proba, device=device,
                                 progress=lambda done, total: bar.update(task, completed=done, total=total))
        except KeyboardInterrupt:
            raise TrainingInterrupted(f"interrupted; no map written to {output}", 2) from None
    err.print(
        f"wrote {report.path}: {report.width} x {report.height} pixels, bands {', '.join(report.bands)}; "
        f"{report.valid:,} predicted, {report.invalid:,} nodata",
        highlight=False, markup=False,
    )


@app.command("sample")
@handles_errors()
def sample_command(
    raster: Annotated[Path, typer.Argument(help="Multi-band raster GDAL reads (GeoTIFF, VRT, JPEG2000).", show_default=False)],
    labels: Annotated[Path, typer.Argument(help="Vector labels (GeoPackage, Shapefile, GeoJSON) or a one-band label raster on the same grid.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The table to write (.parquet or .csv).", show_default=False)],
    field: Annotated[str | None, typer.Option("--field", help="Attribute holding the class or value (vector labels); the target column's name.")] = None,
) -> None:
    """Build a training table from a scene: one row per labelled pixel with valid data in every band.

    Columns: the bands (by description, else b1..bN), the target, the pixel centre x, y and, for vector labels,
    `polygon` (the feature id: use it as data.group). Vector labels are reprojected to the raster's CRS.
    """
    from mlp_cli.sample import sample

    report = sample(raster, labels, output, field)
    classes = ", ".join(f"{label} {count:,}" for label, count in list(report.classes.items())[:20])
    err.print(
        f"wrote {report.rows:,} rows to {output} from "
        + (f"{report.features_used} of {report.features_total} features " if report.features_total is not None else "a label raster ")
        + f"({report.invalid:,} labelled pixels skipped: nodata or NaN in a band); columns {', '.join(report.columns)}; classes: {classes}",
        highlight=False, markup=False,
    )
# ---------------------------------------------------------------------------------------------- explain


@app.command("explain")
@handles_errors()
def explain_command(
    checkpoint: Annotated[Path, typer.Argument(help="A best.pt or last.pt written by mlp train.", show_default=False)],
    data: Annotated[Path | None, typer.Option("--data", help="CSV or Parquet with the target column; default: the run's test split.")] = None,
    method: Annotated[str, typer.Option("--method", help="permutation or integrated_gradients.")] = "permutation",
    rows: Annotated[int | None, typer.Option("--rows", min=1, help="Explain at most this many rows, sampled with --seed [default: 2000].")] = None,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Shuffles per column (permutation).")] = 5,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the row sample and the shuffles.")] = 0,
    group: Annotated[list[str] | None, typer.Option("--group", help="Columns to treat as one, e.g. --group p5_b3,p5_b4 (repeatable).")] = None,
    json_out: JsonOpt = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write feature,importance,std as CSV here (mlp plot draws importance_*.csv in a run folder).")] = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Which input columns drive the model: permutation importance or integrated gradients, per original column."""
    if output is not None:
        _check_output(output, [checkpoint] + ([data] if data is not None else []))
    from mlp_cli.explain import DEFAULT_ROWS, explain, importance_csv, parse_groups

    result = explain(checkpoint, data, method, rows or DEFAULT_ROWS, repeats, seed, parse_groups(group), device)
    if output is not None:
        from mlp_cli.files import write_atomic

        body = importance_csv(result)
        write_atomic(output, lambda handle: handle.write(body))
    if json_out:
        sys.stdout.write(json.dumps(result.as_json(), indent=2) + "\n")
    else:
        from mlp_cli.render import importance_tables

        if result.n_rows < result.n_available:
            source = f"{data or 'test split'} (sampled)"
        else:
            source = str(data or "test split")
        for table in importance_tables(result, source, width=20):
            out.print(table)
            out.print()
    if rows is not None and result.n_available < rows:
        err.print(Text(f"note: --rows {rows} is more than the {result.n_available:,} rows available; all were used"), highlight=False)
    if result.completeness_p99 is not None and not result.completeness_p99 < 0.01:  # NaN too
        err.print(Text(f"warning: completeness error p99 {100 * result.completeness_p99:.3g} % is above 1 % even at {result.steps} steps"), highlight=False)
    if output is not None:
        err.print(Text(f"wrote {output}"), highlight=False)


def _check_output(output: Path, inputs: list[Path]) -> None:
    """files.check_output (not an input, not a folder), then explain's own rule: only an importance table is replaced."""
    from mlp_cli.files import check_output

    check_output(output, inputs=inputs)
    # Any other existing file is replaced only if it is an earlier importance table (the run's own data files,
    # read through the checkpoint's config, are thus safe too).
    if output.is_file():
        try:
            with output.open("rb") as handle:
                head = handle.read(len(b"feature,importance,std"))
        except OSError as exc:
            raise MLPError(f"-o {output}: cannot read it ({exc.strerror or exc})") from None
        if head != b"feature,importance,std":
            raise MLPError(f"-o {output} exists and is not an importance table from mlp explain; refusing to overwrite it")
@app.command("export")
@handles_errors()
def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="A best.pt written by mlp train.", show_default=False)],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="The .onnx file to write (default: model.onnx beside the checkpoint).")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="CSV or Parquet rows for the parity check; default: the run's test split.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Export to one self-contained ONNX file (raw columns in, probabilities or predictions out), kept only if
    onnxruntime matches torch on real rows at batch sizes 1, 7 and all; figures go to <name>.export.json."""
    from mlp_cli.onnx_model import require

    try:
        for module in ("onnx", "onnxscript", "onnxruntime"):
            require(module)  # before torch loads: a missing extra is one line, at once
        from mlp_cli.export import check_output, export_model, report_path

        check_output(checkpoint, output, data)  # before the "exporting" line, so a refusal is the only line
        if not json_out:
            err.print("exporting (torch.export, then onnxruntime against torch) ...", highlight=False)
        report = export_model(checkpoint, output, data)
    except KeyboardInterrupt:
        raise TrainingInterrupted("export interrupted; nothing was written", 2) from None
    if json_out:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    from mlp_cli.render import export_table

    out.print(export_table(report))
    err.print(Text(f"wrote {report['model']} ({report['bytes']:,} bytes) and {report_path(Path(report['model']))}"), highlight=False)


# ---------------------------------------------------------------------------------------------- course tools


@app.command("sweep")
@handles_errors(quiet_param="quiet")
def sweep_command(
    config: ConfigArg,
    key: Annotated[str, typer.Argument(help="Dotted key to vary, e.g. model.hidden.", show_default=False)],
    values: Annotated[list[str], typer.Argument(help="Values parsed as YAML, e.g. [1] [4] [16] [64].", show_default=False)],
    override: Annotated[list[str] | None, typer.Option("--set", help="Extra override for every run, e.g. --set train.epochs=50.")] = None,
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
            err.print(Text(f"{key}={value}", style="bold"), highlight=False)
        return None

    def on_row(row) -> None:
        if not quiet and not json_out:
            err.print(f"  {row.params:,} params  train loss {row.train_loss:.4g}  test loss {row.test_loss:.4g}", highlight=False)

    result = sweep(config, key, values, list(override or []), overwrite=overwrite, callback_factory=announce, on_row=on_row)
    assert result.folder is not None  # sweep() always names its folder
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


@app.command("tune")
@handles_errors(quiet_param="quiet")
def tune_command(
    config: ConfigArg,
    trials: Annotated[int | None, typer.Option("--trials", min=1, help="Trials to add to the study (default search.trials).")] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="sqlite:///path.db, any database URL, or journal:PATH for a shared file system (default sqlite:///<output_dir>/study.db).")] = None,
    study: Annotated[str | None, typer.Option("--study", help="Study name (default: the config file's name).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Processes on this machine sharing the study.")] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Search the config's `search:` space with Optuna: trials as runs in <output_dir>/trials/, pruned epoch by epoch, best_config.yaml at the end. Run it again to continue the study."""
    from mlp_cli.tune import tune

    def on_trial(row) -> None:
        if quiet or json_out:
            return
        from mlp_cli.render import trial_line

        err.print(trial_line(row), highlight=False)

    result = tune(config, trials=trials, storage=storage, study_name=study, workers=workers, quiet=quiet, on_trial=on_trial)
    if json_out:
        from dataclasses import asdict

        from mlp_cli.train import json_safe

        best = asdict(result.best) if result.best else None
        document = {"study": result.study, "storage": result.storage, "metric": result.metric, "direction": result.direction,
                    "best_value": best["value"] if best else None, "best_params": best["params"] if best else None,
                    "best_trial": best, "best_config": str(result.best_config) if result.best_config else None,
                    "new_trials": result.new, "counts": result.counts(), "trials": [asdict(r) for r in result.rows]}
        sys.stdout.write(json.dumps(json_safe(document), indent=2) + "\n")
    elif not quiet:
        from mlp_cli.render import tune_table

        out.print(tune_table(result))
        if result.best_config is not None:
            err.print(Text(f"wrote {result.best_config}; train it with: mlp train {result.best_config}"), highlight=False)
        if result.exhausted:
            err.print("the grid is exhausted: every combination has been tried", highlight=False)
        from mlp_cli.tune import dashboard_command

        err.print(Text(f"study {result.study!r} in {result.storage}; browse it with: {dashboard_command(result.storage)}"), highlight=False)
    if result.interrupted is not None:
        raise TrainingInterrupted(
            f"tune interrupted after {result.new} trial(s) of this command (the running one is recorded as failed); "
            f"finished trials are kept in {result.storage}; run the same command to continue",
            result.interrupted.exit_code - 128,
        )
    if result.best is None and result.rows:
        raise MLPError(f"no trial completed ({', '.join(f'{v} {k}' for k, v in result.counts().items() if v)}); "
                       "see the errors in the table above")


@app.command("plot")
@handles_errors()
def plot_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by mlp train.", show_default=False)],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for the PNGs (default: the run directory).")] = None,
) -> None:
    """Write PNGs: loss and metric curves, confusion matrix, decision regions (2 inputs) or fitted curve (1 input), gradient flow."""
    from mlp_cli.plot import plot_run

    for path in plot_run(run_dir, out_dir):
        out.print(str(path), highlight=False)


@app.command("track")
@handles_errors()
def track_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Finished run folders written by mlp train.", show_default=False)],
    mlflow_uri: Annotated[str | None, typer.Option("--mlflow", help="Tracking URI; default the run's tracking.mlflow.uri, else sqlite:///<folder beside the run>/mlflow.db.")] = None,
    experiment: Annotated[str | None, typer.Option("--experiment", help="Experiment name; default the run's tracking.mlflow.experiment, else the folder's name.")] = None,
) -> None:
    """Upload finished runs to MLflow from their folders alone; uploading a run again updates it, never duplicates it."""
    from mlp_cli.tracking import upload

    for run_dir in run_dirs:
        uri, run_id, created = upload(run_dir, mlflow_uri, experiment)
        err.print(Text(f"{run_dir} → {uri} run {run_id} ({'created' if created else 'updated, already there'})"), highlight=False)


def main() -> None:
    """The `mlp` command. Once torch is loaded, a finished command leaves without finalizing the interpreter:
    tearing down torch's modules and freeing a run's arrays one object at a time takes 0.5 s after a 200k-row run,
    a tenth of the whole process, and everything a command writes is closed and atomic when it returns.

    The same when a daemon thread is still running, e.g. the data read ahead when Ctrl-C comes while torch imports:
    finalizing the interpreter under a thread inside pyarrow's C++ ends in a segfault or `terminate called`."""
    try:
        app()
    except SystemExit as exc:
        if _skip_finalization():
            quick_exit(exc.code)
        raise


def _skip_finalization() -> bool:
    import threading

    if sys.getprofile() is not None or sys.gettrace() is not None:
        return False  # cProfile writes its file and a debugger stops after the command returns
    return "torch" in sys.modules or any(t.daemon and t.is_alive() for t in threading.enumerate())


def quick_exit(code) -> None:
    """sys.exit(code) without the interpreter's finalization: non-daemon threads still running (nothing of ours
    starts one; a library might) and atexit handlers (MLflow ends its run there) are waited for as Python would."""
    import atexit
    import threading

    if any(t.is_alive() and not t.daemon and t is not threading.main_thread() for t in threading.enumerate()):
        return  # Python's own exit joins them; let it
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    run_exit_functions = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_functions is None:
        return
    run_exit_functions()
    code = code or 0
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            pass  # the reader went away (`| head`): what it wanted it has
        except (OSError, ValueError) as exc:  # a full disk under `> out.csv`: as Python's own exit, never success
            try:
                os.write(2, f"error: {output_problem(exc)}\n".encode())
            except OSError:
                pass
            code = code or 120
    os._exit(code)


if __name__ == "__main__":
    main()
