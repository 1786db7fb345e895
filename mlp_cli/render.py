"""Rich renderings of what the library returns: parameter tables, epoch lines, metric tables. No torch here.

Every piece of user text (labels, column names, paths, swept values) goes into a table as a Text, never as a
string a console would read as markup.
"""

from __future__ import annotations

import math

from rich.console import JustifyMethod
from rich.table import Table
from rich.text import Text

from mlp_cli.data import label_text
from mlp_cli.params import LayerCount, total
from mlp_cli.tasks import TASKS, Task


def params_table(layers: list[LayerCount], title: str | None = None) -> Table:
    table = Table(title=_literal(title), title_justify="left", show_footer=True, box=None, pad_edge=False)
    table.add_column("layer", footer="total")
    table.add_column("in", justify="right")
    table.add_column("out", justify="right")
    table.add_column("weights", justify="right")
    table.add_column("biases", justify="right")
    table.add_column("K(l)·(K(l-1)+1)", footer="")
    table.add_column("params", justify="right", footer=f"{total(layers):,}")
    last = len(layers)
    for i, layer in enumerate(layers, start=1):
        name = "output" if i == last else f"hidden {i}"
        table.add_row(name, str(layer.n_in), str(layer.n_out), f"{layer.weights:,}", f"{layer.biases:,}", layer.formula, f"{layer.params:,}")
    return table


def _literal(text: str | None) -> Text | None:
    """User text (a path, a label) as a Text, so no console reads it as markup."""
    return None if text is None else Text(text)


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.{digits}g}"
        return f"{value:.{digits}f}"
    return str(value)


def describe_task(task: Task, labels: list, target: str | None) -> str:
    """The task in a few words for the training header, in the user's labels."""
    names = [label_text(label) for label in labels]
    return task.summary.format(n=len(labels), comma=", ".join(names), slash=" / ".join(names), target=target or "y")


SUMMARY_KEYS = {
    "classification": ("accuracy", "balanced_accuracy", "macro_f1", "kappa", "loss", "n"),
    "regression": ("r2", "rmse", "mae", "mse", "loss", "n"),
}


def metrics_tables(metrics: dict, task: str, title: str, baselines: dict | None = None) -> list[Table]:
    """The headline metrics (with baselines beside them), per-class scores and the confusion matrix."""
    kind = TASKS[task].metrics_kind
    keys = SUMMARY_KEYS[kind]
    head = Table(title=_literal(title), title_justify="left", box=None, pad_edge=False)
    head.add_column("metric")
    head.add_column("model", justify="right")
    for name in baselines or {}:
        head.add_column(name.replace("_", " "), justify="right", style="dim")
    for key in keys:
        row = [key, fmt(metrics.get(key))]
        for base in (baselines or {}).values():
            row.append(fmt(base.get(key)))
        head.add_row(*row)
    tables = [head]
    if kind == "classification":
        per = Table(title="per class", title_justify="left", box=None, pad_edge=False)
        for column in ("label", "precision", "recall", "f1", "support"):
            per.add_column(column, justify="left" if column == "label" else "right")
        for label, scores in metrics["per_class"].items():
            per.add_row(Text(str(label)), fmt(scores["precision"], 3), fmt(scores["recall"], 3), fmt(scores["f1"], 3), str(scores["support"]))
        tables.append(per)
        tables.append(confusion_table(metrics["confusion_matrix"], metrics["labels"]))
    return tables


def confusion_table(confusion: list[list[int]], labels: list) -> Table:
    table = Table(title="confusion matrix (rows: true label, columns: predicted)", title_justify="left", box=None, pad_edge=False)
    table.add_column("true \\ pred")
    for label in labels:
        table.add_column(Text(label_text(label)), justify="right")
    for i, (label, row) in enumerate(zip(labels, confusion, strict=True)):
        cells = [Text(str(v), style="bold green" if j == i else ("red" if v else "dim")) for j, v in enumerate(row)]
        table.add_row(Text(label_text(label)), *cells)
    return table


def epoch_line(report) -> Text:
    main = report.main_metric
    val = report.val
    parts = [f"epoch {report.epoch:>{len(str(report.epochs))}}/{report.epochs}", f"train {fmt(report.train_loss)}"]
    if val is not None:
        parts.append(f"val {fmt(val['loss'])}")
        parts.append(f"{'acc' if main == 'accuracy' else main} {fmt(val[main])}")
    parts.append(f"lr {report.lr:.3g}")
    parts.append(f"{report.seconds:.2f}s")
    line = Text("  ".join(parts))
    if report.improved and val is not None:
        line.append("  *", style="green")
    return line


def diagnostics_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for column in ("layer", "units", "‖∂L/∂W‖", "‖∂L/∂W‖/‖W‖", "‖∂L/∂z‖", "act mean", "act std", "dead/saturated"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for row in rows:
        dead = row.get("inactive_fraction")
        table.add_row(
            row["layer"], str(row["units"]), fmt(row["grad_norm"], 3), fmt(row["grad_weight_ratio"], 3),
            fmt(row["backprop_norm"], 3), fmt(row["act_mean"], 3), fmt(row["act_std"], 3), "-" if dead is None else f"{dead:.0%}",
        )
    return table


def sweep_row_table(result) -> Table:
    metric = result.metric
    table = Table(title=Text(f"sweep of {result.key}"), title_justify="left", box=None, pad_edge=False)
    for column in (result.key, "params", "epochs", "train loss", "test loss", f"train {metric}", f"test {metric}"):
        table.add_column(Text(column), justify="left" if column == result.key else "right")
    for row in result.rows:
        table.add_row(Text(row.value), f"{row.params:,}", str(row.epochs), fmt(row.train_loss), fmt(row.test_loss), fmt(row.train_metric), fmt(row.test_metric))
    return table


# ---------------------------------------------------------------------------------------------- mlp tune


def _params_text(params: dict) -> str:
    return " ".join(f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in params.items())


def trial_line(row) -> Text:
    """One line per finished trial, as `mlp tune` goes."""
    line = Text(f"trial {row.number:>3}  ", style="bold")
    style = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red"}.get(row.state, "")
    line.append(f"{row.state.lower():<8}", style=style)
    line.append(f" {_params_text(row.params)}")
    if row.value is not None:
        line.append(f"  value {fmt(row.value)}")
    if row.epochs is not None:
        line.append(f"  {row.epochs} epochs")
    if row.error:
        line.append(f"  {row.error}", style="red")
    return line


def tune_table(result) -> Table:
    """Every trial of the study: state, params, value, epochs (and the error of a failed one); the best marked."""
    counts = ", ".join(f"{n} {state}" for state, n in result.counts().items() if n)
    title = f"study {result.study}: {result.direction} {result.metric} ({counts})"
    table = Table(title=Text(title), title_justify="left", box=None, pad_edge=False)
    justify: JustifyMethod
    for name, justify in (("#", "right"), ("state", "left"), ("params", "left"), (result.metric, "right"), ("epochs", "right"), ("error", "left")):
        table.add_column(name, justify=justify)
    best = result.best.number if result.best is not None else None
    for row in result.rows:
        mark = "*" if row.number == best else ""
        table.add_row(f"{mark}{row.number}", row.state.lower(), Text(_params_text(row.params)), fmt(row.value),
                      "-" if row.epochs is None else str(row.epochs), Text(row.error or ""),
                      style="bold" if row.number == best else None)
    return table


# ---------------------------------------------------------------------------------------------- explain


def importance_tables(result, source: str, width: int = 30) -> list[Table]:
    """Columns sorted by importance with a bar each; for multiclass integrated gradients, one column per class."""
    permutation = result.method == "permutation"
    if permutation:
        title = (
            f"permutation importance on {source} ({result.n_rows:,} rows, {result.repeats} repeats): drop in {result.metric} "
            f"(unshuffled {fmt(result.baseline_score)}) and rise in the loss (unshuffled {fmt(result.baseline_loss)})"
        )
    else:
        title = (
            f"integrated gradients on {source} ({result.n_rows:,} rows): mean |attribution| of the {result.target}, "
            f"baseline = training mean; {result.steps} Gauss-Legendre steps, completeness error p99 "
            f"{100 * result.completeness_p99:.3g} %, max {100 * result.completeness_max:.3g} %"
        )
    table = Table(title=Text(title), title_justify="left", box=None, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("feature")
    table.add_column(f"{result.metric} drop" if permutation else "mean |attr|", justify="right")
    table.add_column("± std", justify="right")
    table.add_column("loss rise" if permutation else "mean signed", justify="right")
    if permutation:
        table.add_column("± std", justify="right")
    table.add_column("")
    finite = [f.importance for f in result.features if math.isfinite(f.importance)]
    top = max([v for v in finite if v > 0], default=0.0)
    for rank, f in enumerate(result.features, start=1):
        share = f.importance / top if top > 0 and math.isfinite(f.importance) and f.importance > 0 else 0.0
        bar = Text("█" * round(share * width), style="cyan")
        cells: list[str | Text] = [str(rank), Text(f.feature), fmt(f.importance), fmt(f.std), fmt(f.loss)]
        if permutation:
            cells.append(fmt(f.loss_std))
        table.add_row(*cells, bar)
    tables = [table]
    if result.per_class:
        names = [f.feature for f in result.features]
        per_class = Table(title=Text("mean |attribution| per predicted class (rows predicted as that class, its own logit)"), title_justify="left", box=None, pad_edge=False)
        per_class.add_column("feature")
        for label in result.per_class:
            per_class.add_column(Text(label), justify="right")
        for name in names:
            per_class.add_row(Text(name), *(fmt(values[name]) for values in result.per_class.values()))
        tables.append(per_class)
    return tables
def export_table(report: dict) -> Table:
    """The parity gate's figures: one row per batch size, against the derived tolerance."""
    title = Text(
        f"{report['model']}: {report['bytes']:,} bytes, opset {report['opset']}, {report['rows']:,} rows from "
        f"{report['rows_from']}; tolerance up to {report['tolerance']['max']:.3g} (median {report['tolerance']['median']:.3g})"
    )
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    table.add_column("batch")
    table.add_column("rows", justify="right")
    table.add_column("max |diff|", justify="right")
    table.add_column("/ tolerance", justify="right")
    classified = report["task"] != "regression"
    if classified:
        table.add_column("argmax differs", justify="right")
    for name, entry in report["batches"].items():
        row = [name, f"{entry['rows']:,}", f"{entry['max_abs_diff']:.3g}", f"{entry['max_diff_over_tolerance']:.3g}"]
        if classified:
            row.append(str(entry["argmax_mismatches"]))
        table.add_row(*row)
    return table
