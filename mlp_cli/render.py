"""Rich renderings of what the library returns: parameter tables, epoch lines, metric tables. No torch here.

Every piece of user text (labels, column names, paths, swept values) goes into a table as a Text, never as a
string a console would read as markup.
"""

from __future__ import annotations

import math

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
    for i, (label, row) in enumerate(zip(labels, confusion)):
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
