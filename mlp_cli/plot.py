"""PNG pictures of a run (curves, confusion matrix, decision regions or fitted curve, layer health) and of a sweep.

matplotlib is an optional extra (`pip install 'mlp-cli[plot]'`); nothing else in mlp needs it.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np

from mlp_cli.errors import MLPError, MLPWarning

INSTALL_HINT = "plots need matplotlib: pip install 'mlp-cli[plot]' (or pip install matplotlib)"


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MLPError(INSTALL_HINT) from None
    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> None:
    """PNG written atomically like every other file mlp writes; a failure is a clear error."""
    from mlp_cli.files import write_atomic

    try:
        write_atomic(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    finally:
        plt.close(fig)


def _literal(text) -> str:
    """User text for matplotlib: a `$` would start mathtext (and `$x^$` fails to draw), so it is escaped."""
    return str(text).replace("$", r"\$")


def _read_csv(path: Path, numbers: tuple[str, ...] = (), texts: tuple[str, ...] = ()) -> list[dict]:
    """The complete rows of a run's CSV; a run killed mid-write leaves a short last line, which is skipped (and said)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MLPError(f"{path}: cannot be read ({exc}); it is damaged: run mlp train again") from None
    missing = [c for c in (*numbers, *texts) if not rows or c not in rows[0]]
    if not rows or missing:
        raise MLPError(f"{path}: {'no rows' if not rows else 'no column ' + ', '.join(map(repr, missing))}; "
                       "the file is empty or damaged: run mlp train again")
    complete = [r for r in rows if None not in r and None not in r.values() and all(_is_number(r[c]) for c in numbers)]
    if len(complete) < len(rows):
        warnings.warn(f"{path}: skipped {len(rows) - len(complete)} incomplete or damaged line(s)", MLPWarning, stacklevel=2)
    if not complete:
        raise MLPError(f"{path}: no complete rows; the file is damaged: run mlp train again")
    return complete


def _is_number(text) -> bool:
    try:
        _number(text)
        return True
    except (TypeError, ValueError):
        return False


def _number(text: str) -> float:
    return float(text) if text not in ("", None) else float("nan")


def plot_run(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Every picture the run's files allow; returns the paths written."""
    plt = _pyplot()
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.csv").exists():
        raise MLPError(f"{run_dir} is not a run directory (no metrics.csv); pass the output_dir of mlp train")
    out_dir = Path(out_dir or run_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MLPError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    # Before drawing: no picture may land on one of the run's own files (a PNG name linked to metrics.csv, ...).
    from mlp_cli.files import check_output

    inputs = [path for path in run_dir.iterdir() if path.suffix != ".png"]
    for existing in out_dir.glob("*.png"):
        check_output(existing, inputs=inputs)
    written = [_curves(plt, run_dir, out_dir)]
    summary = _summary(run_dir / "summary.json")
    metrics = (summary or {}).get("test") or (summary or {}).get("val")
    if metrics and "confusion_matrix" in metrics:
        written.append(_confusion(plt, metrics, out_dir))
    if (run_dir / "best.pt").exists():
        picture = _inputs_picture(plt, run_dir / "best.pt", out_dir)
        if picture is not None:
            written.append(picture)
    if (run_dir / "diagnostics.csv").exists():
        written.append(_health(plt, run_dir, out_dir))
    written.extend(_importance(plt, path, out_dir) for path in sorted(run_dir.glob("importance*.csv")))  # mlp explain -o
    return written


def _summary(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        warnings.warn(f"{path} is damaged ({exc}); the confusion matrix is left out", MLPWarning, stacklevel=2)
        return None
    return summary if isinstance(summary, dict) else None


def _curves(plt, run_dir: Path, out_dir: Path) -> Path:
    rows = _read_csv(run_dir / "metrics.csv", ("epoch", "train_loss"))
    epochs = [int(r["epoch"]) for r in rows]
    metric_column = next((c for c in rows[0] if c.startswith("val_") and c != "val_loss"), None)
    fig, axes = plt.subplots(1, 2 if metric_column else 1, figsize=(10 if metric_column else 5, 3.6), squeeze=False)
    ax = axes[0][0]
    ax.plot(epochs, [_number(r["train_loss"]) for r in rows], label="train")
    if any(r["val_loss"] for r in rows):
        ax.plot(epochs, [_number(r["val_loss"]) for r in rows], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("loss")
    if metric_column:
        ax = axes[0][1]
        ax.plot(epochs, [_number(r[metric_column]) for r in rows], color="tab:green")
        ax.set_xlabel("epoch")
        ax.set_title(metric_column.replace("val_", "validation "))
    fig.tight_layout()
    path = out_dir / "curves.png"
    _save(plt, fig, path)
    return path


def _confusion(plt, metrics: dict, out_dir: Path) -> Path:
    from mlp_cli.data import label_text

    matrix = np.array(metrics["confusion_matrix"])
    labels = [_literal(label_text(v)) for v in metrics["labels"]]
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(labels), 1 + 0.55 * len(labels)))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color="white" if shares[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix (accuracy {metrics['accuracy']:.3f})")
    fig.tight_layout()
    path = out_dir / "confusion.png"
    _save(plt, fig, path)
    return path


def _inputs_picture(plt, checkpoint_path: Path, out_dir: Path) -> Path | None:
    """Decision regions for 2 numeric inputs; the fitted curve over the data for 1 numeric input."""
    import torch

    from mlp_cli.data import Frame
    from mlp_cli.evaluate import load_checkpoint_model, test_split
    from mlp_cli.tasks import TASKS

    _, config, model, prep = load_checkpoint_model(checkpoint_path)
    if prep.categorical or len(prep.features) not in (1, 2):
        return None
    try:
        split = test_split(config, prep)
    except MLPError:
        return None  # the data files moved; curves and matrix are still drawn
    raw = split.x.numpy().astype(np.float64)
    if prep.mean is not None:
        raw = raw * np.array(prep.scale) + np.array(prep.mean)
    y = split.y.numpy()

    def predict(points: np.ndarray) -> torch.Tensor:
        frame = Frame("grid", "synthetic", points.astype(np.float32), list(prep.features))
        with torch.inference_mode():
            return model(torch.from_numpy(prep.inputs(frame)))

    fig, ax = plt.subplots(figsize=(5, 4.2))
    if len(prep.features) == 1:
        grid = np.linspace(raw[:, 0].min(), raw[:, 0].max(), 400)[:, None]
        curve = prep.unscale_target(predict(grid).squeeze(-1).double().numpy())
        ax.scatter(raw[:, 0], prep.unscale_target(y.astype(np.float64)), s=6, alpha=0.4, label="test rows")
        ax.plot(grid[:, 0], curve, color="tab:red", label="network")
        ax.set_xlabel(_literal(prep.features[0]))
        ax.set_ylabel(_literal(prep.target or "y"))
        ax.legend()
        title = f"fit with hidden {_widths(config.model.hidden)}"
        name = "fit.png"
    else:
        pad = 0.1 * (raw.max(axis=0) - raw.min(axis=0))
        lo, hi = raw.min(axis=0) - pad, raw.max(axis=0) + pad
        xs, ys = np.meshgrid(np.linspace(lo[0], hi[0], 250), np.linspace(lo[1], hi[1], 250))
        out = predict(np.c_[xs.ravel(), ys.ravel()])
        task = TASKS[config.task]
        assert task.predict is not None  # a decision map is drawn for classification tasks only
        classes = task.predict(task.squeeze(out))
        k = len(prep.labels)
        ax.contourf(xs, ys, classes.numpy().reshape(xs.shape), alpha=0.25, cmap="coolwarm", levels=np.arange(k + 1) - 0.5, vmin=0, vmax=k - 1)
        ax.scatter(raw[:, 0], raw[:, 1], c=y, s=6, cmap="coolwarm", vmin=0, vmax=k - 1, edgecolors="none")
        ax.set_xlabel(_literal(prep.features[0]))
        ax.set_ylabel(_literal(prep.features[1]))
        title = f"decision regions, {config.model.activation}, hidden {_widths(config.model.hidden)}"
        name = "regions.png"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = out_dir / name
    _save(plt, fig, path)
    return path


def _widths(hidden: list[int]) -> str:
    if len(hidden) > 3 and len(set(hidden)) == 1:
        return f"{len(hidden)}×{hidden[0]}"
    return str(hidden)


def _health(plt, run_dir: Path, out_dir: Path) -> Path:
    rows = _read_csv(run_dir / "diagnostics.csv", ("epoch", "backprop_norm"), ("layer",))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    epochs = sorted({int(r["epoch"]) for r in rows})
    shown = [e for e in epochs if e in (epochs[0], epochs[len(epochs) // 2], epochs[-1])]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for epoch in shown:
        values = [_number(next(r["backprop_norm"] for r in rows if r["layer"] == layer and int(r["epoch"]) == epoch)) for layer in layers]
        ax.plot(range(1, len(layers) + 1), values, marker="o", label=f"epoch {epoch}")
    ax.set_yscale("log")
    ax.set_xlabel("layer (1 = first hidden, last = output)")
    ax.set_ylabel("‖∂L/∂z‖, error signal reaching the layer")
    ax.set_title("gradient flow")
    ax.legend()
    fig.tight_layout()
    path = out_dir / "gradients.png"
    _save(plt, fig, path)
    return path


def sweep_plot(result) -> Path:
    plt = _pyplot()
    rows = result.rows
    params = [r.params for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(params, [r.train_loss for r in rows], marker="o", label="train loss")
    ax.plot(params, [r.test_loss for r in rows], marker="o", label="test loss")
    for r in rows:
        ax.annotate(r.value, (r.params, r.test_loss), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("loss")
    ax.set_title(_literal(f"sweep of {result.key}"))
    ax.legend()
    fig.tight_layout()
    path = result.folder / "sweep.png"
    _save(plt, fig, path)
    return path


def _importance(plt, csv_path: Path, out_dir: Path) -> Path:
    """Horizontal bars of an `mlp explain -o` CSV (feature, importance, std), most important on top."""
    rows = _read_csv(csv_path)
    if not rows or not {"feature", "importance", "std"} <= set(rows[0]):
        raise MLPError(f"{csv_path} is not an importance table (columns feature, importance, std expected)")
    names = [r["feature"] for r in rows][::-1]
    values = [_number(r["importance"]) for r in rows][::-1]
    errors = [_number(r["std"]) for r in rows][::-1]
    fig, ax = plt.subplots(figsize=(6, 1 + 0.22 * len(rows)))
    ax.barh(range(len(rows)), values, xerr=errors, color="tab:blue", ecolor="gray")
    ax.set_yticks(range(len(rows)), names, fontsize=7)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("importance (± std)")
    ax.set_title(csv_path.stem.replace("_", " "), fontsize=9)
    fig.tight_layout()
    path = out_dir / f"{csv_path.stem}.png"
    _save(plt, fig, path)
    return path
