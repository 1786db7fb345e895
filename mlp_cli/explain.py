"""Which input columns drive a trained model (`mlp explain`): permutation importance and integrated gradients.

Importance is reported per ORIGINAL column: the one-hot columns of a categorical feature are shuffled together
(permutation) or have their attributions summed (integrated gradients), and `groups` merge named columns into one.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mlp_cli.components import loss_function
from mlp_cli.data import Preprocessor, Split, label_text, load_for_model, to_split
from mlp_cli.errors import MLPError
from mlp_cli.evaluate import load_checkpoint_model, model_outputs, test_split
from mlp_cli.metrics import MAIN_METRIC, predicted_classes
from mlp_cli.tasks import TASKS

METHODS = ("permutation", "integrated_gradients")
DEFAULT_ROWS = 2000  # enough for a stable ranking, quick on a laptop CPU
# Rows per forward pass when the repeats of one column are stacked; bounds memory for any --rows.
STACK_ROWS = 1 << 18
IG_POINTS = 1 << 16  # path points per backward pass: autograd keeps every layer's activations of the chunk
COMPLETENESS_TARGET = 0.01  # the 99th percentile of the completeness error must fall below 1 %
MAX_STEPS = 1024


class ExplainInterrupted(MLPError):
    """Ctrl-C stopped the computation; nothing was written."""

    exit_code = 130


@dataclass
class FeatureImportance:
    feature: str
    importance: float
    std: float
    loss: float | None = None  # permutation: increase of the loss; IG: mean signed attribution
    loss_std: float | None = None


@dataclass
class Importance:
    """The result of one explanation, sorted by importance (largest first)."""

    method: str
    metric: str
    features: list[FeatureImportance]
    n_rows: int
    n_available: int
    baseline_score: float | None = None  # permutation: score and loss on the unshuffled rows
    baseline_loss: float | None = None
    repeats: int | None = None
    steps: int | None = None  # integrated gradients: quadrature nodes used
    completeness_p99: float | None = None
    completeness_max: float | None = None
    target: str | None = None  # integrated gradients: which output is attributed
    per_class: dict = field(default_factory=dict)  # class label -> {feature: mean |attribution|}, multiclass IG

    def as_json(self) -> dict:
        return {
            "method": self.method,
            "metric": self.metric,
            "features": [{"feature": f.feature, "importance": f.importance, "std": f.std} for f in self.features],
        }


# ---------------------------------------------------------------------------------------------- columns


def column_blocks(prep: Preprocessor, groups: list[list[str]] | None = None) -> list[tuple[str, list[int]]]:
    """(name, encoded input positions) per original column, in input order; each group becomes one entry named
    `a+b`, placed where its first member was."""
    positions, start = {}, 0
    for column in prep.features:
        width = len(prep.categorical[column]) if column in prep.categorical else 1
        positions[column] = list(range(start, start + width))
        start += width
    blocks = {column: (column, cols) for column, cols in positions.items()}
    seen: dict[str, str] = {}
    for group in groups or []:
        members = list(dict.fromkeys(name.strip() for name in group if name.strip()))
        for name in members:
            if name not in positions:
                near = difflib.get_close_matches(name, list(positions), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else f"; the model's columns are {', '.join(prep.features)}"
                raise MLPError(f"--group names {name!r}, which is not an input column of this model{hint}")
            if name in seen:
                raise MLPError(f"--group: column {name!r} is in two groups ({seen[name]} and {'+'.join(members)})")
            seen[name] = "+".join(members)
        if len(members) < 2:
            raise MLPError(f"--group {','.join(group)}: a group needs at least two different columns")
        name = "+".join(members)
        cols = [c for member in members for c in positions[member]]
        blocks[members[0]] = (name, cols)
        for member in members[1:]:
            blocks.pop(member)
    return list(blocks.values())


def parse_groups(texts: list[str] | None) -> list[list[str]]:
    return [text.split(",") for text in texts or []]


# ---------------------------------------------------------------------------------------------- data


def explain_split(
    config, prep: Preprocessor, data_path: Path | None, rows: int | None, seed: int
) -> tuple[Split, int]:
    """The rows to explain (the run's test split by default), sampled without replacement to at most `rows`."""
    if data_path is None:
        split = test_split(config, prep)
    else:
        split = to_split(prep, load_for_model(prep, Path(data_path), target_required=True))
    available = len(split)
    if available == 0:
        raise MLPError(f"{data_path or 'the test split'} has no rows to explain")
    if rows is not None and rows < available:
        keep = np.sort(np.random.default_rng(seed).choice(available, size=rows, replace=False))
        index = torch.from_numpy(keep)
        split = Split(split.x[index], split.y[index], split.rows[keep])
    return split, available


# ---------------------------------------------------------------------------------------------- permutation


def shuffle_orders(n: int, repeats: int, seed: int) -> np.ndarray:
    """(repeats, n) row orders, drawn exactly as scikit-learn's permutation_importance draws them for one column
    with random_state=seed: one derived seed, one index array shuffled in place per repeat and applied to the
    already-shuffled column. Every column gets the same orders there too."""
    derived = np.random.RandomState(seed).randint(np.iinfo(np.int32).max + 1)
    state = np.random.RandomState(derived)
    index, order, orders = np.arange(n), np.arange(n), []
    for _ in range(repeats):
        state.shuffle(index)
        order = order[index]
        orders.append(order)
    return np.stack(orders)


def _scores(task: str, out: torch.Tensor, y: torch.Tensor, loss_fn, repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """Main score and mean loss per repeat, for outputs of `repeats` stacked copies of the rows."""
    n = len(y)
    # One loss call for all repeats: the same torch loss without the batch sum, then a mean per repeat.
    per_row = type(loss_fn)(reduction="none")(out, y.repeat(repeats)).reshape(repeats, -1)
    losses = per_row.double().sum(dim=1).div(n).cpu().numpy()
    out = out.reshape(repeats, n, -1) if not TASKS[task].one_output else out.reshape(repeats, n)
    if not TASKS[task].classes:
        # R² is unchanged by the target's affine scaling, so model space gives the score in the user's units.
        residual = ((out.double() - y.double()) ** 2).sum(dim=1)
        total = ((y.double() - y.double().mean()) ** 2).sum()
        scores = (1.0 - residual / total).cpu().numpy() if total > 0 else np.full(repeats, np.nan)
    else:
        predicted = predicted_classes(task, out.reshape(repeats * n, -1))
        scores = (predicted.reshape(repeats, n) == y.long()).double().mean(dim=1).cpu().numpy()
    return scores, losses


@torch.inference_mode()
def _forward(model, x: torch.Tensor, task: str) -> torch.Tensor:
    return torch.cat([model_outputs(model, x[s : s + STACK_ROWS], task).float() for s in range(0, len(x), STACK_ROWS)])


def permutation_importance(
    model, task: str, loss_name: str, split: Split, blocks, repeats: int = 5, seed: int = 0
) -> tuple[list[FeatureImportance], float, float]:
    """Drop in the main score (accuracy or R²) and rise in the loss when one column (block) is shuffled.

    All repeats of one column are stacked and sent through the model together; rows are never looped over.
    """
    device = next(model.parameters()).device
    x, y = split.x.to(device), split.y.to(device)
    n = len(y)
    loss_fn = loss_function(loss_name)
    base_score, base_loss = (float(v[0]) for v in _scores(task, _forward(model, x, task), y, loss_fn, 1))
    orders = torch.from_numpy(shuffle_orders(n, repeats, seed)).to(device)
    per_chunk = max(1, STACK_ROWS // max(n, 1))  # repeats per forward pass
    results = []
    for name, cols in blocks:
        cols_t = torch.tensor(cols, device=device)
        scores, losses = [], []
        for lo in range(0, repeats, per_chunk):
            chunk = orders[lo : lo + per_chunk]
            stacked = x.unsqueeze(0).repeat(len(chunk), 1, 1)
            # One gather per chunk: every copy takes the shuffled rows of this block's columns together.
            stacked[:, :, cols_t] = x[:, cols_t][chunk]
            s, l_ = _scores(task, _forward(model, stacked.reshape(-1, x.shape[1]), task), y, loss_fn, len(chunk))
            scores.append(s)
            losses.append(l_)
        drop = base_score - np.concatenate(scores)
        rise = np.concatenate(losses) - base_loss
        results.append(FeatureImportance(name, float(drop.mean()), float(drop.std()), float(rise.mean()), float(rise.std())))
    return results, base_score, base_loss


# ---------------------------------------------------------------------------------------------- integrated gradients


def quadrature(steps: int, rule: str = "gauss_legendre") -> tuple[np.ndarray, np.ndarray]:
    """Nodes in (0, 1) and weights summing to 1 for the path integral."""
    if rule == "riemann":  # midpoint rule
        return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1) / 2, weights / 2


def attributed_output(model, x: torch.Tensor, task: str, classes: torch.Tensor | None) -> torch.Tensor:
    """The scalar per row being explained: the logit of the class predicted at the input (multiclass), the single
    logit (binary) or the standardized prediction (regression)."""
    out = model(x)
    if not TASKS[task].one_output:  # one logit per class: the predicted one
        assert classes is not None
        return out.gather(1, classes.unsqueeze(1)).squeeze(1)
    return out.squeeze(-1)


def integrated_gradients(
    model, x: torch.Tensor, baseline: torch.Tensor, task: str, classes: torch.Tensor | None, steps: int, rule: str = "gauss_legendre"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attributions (rows, inputs) and the output difference f(x) - f(baseline) per row, in float64.

    The path points of many rows and steps go through the model as one batch, chunked to bound memory.
    """
    alphas, weights = (torch.from_numpy(a).to(x) for a in quadrature(steps, rule))
    delta = x - baseline
    grads = torch.zeros_like(x)
    rows_per_chunk = max(1, IG_POINTS // steps)
    for lo in range(0, len(x), rows_per_chunk):
        d = delta[lo : lo + rows_per_chunk]
        points = (baseline + alphas.view(-1, 1, 1) * d.unsqueeze(0)).reshape(-1, x.shape[1]).requires_grad_(True)
        picked = None if classes is None else classes[lo : lo + rows_per_chunk].repeat(steps)
        out = attributed_output(model, points, task, picked)
        (g,) = torch.autograd.grad(out.sum(), points)
        grads[lo : lo + rows_per_chunk] = (g.reshape(steps, len(d), -1) * weights.view(-1, 1, 1)).sum(dim=0)
    with torch.no_grad():
        diff = attributed_output(model, x, task, classes) - attributed_output(model, baseline.expand_as(x), task, classes)
    return delta * grads, diff


def completeness_errors(attributions: torch.Tensor, diff: torch.Tensor) -> np.ndarray:
    """|sum of attributions - (f(x) - f(baseline))| per row, relative to that row's output change; a row whose
    output hardly moves is measured against 5 % of the typical change instead, as a ratio of two tiny numbers
    says nothing."""
    gap = (attributions.sum(dim=1) - diff).abs()
    floor = 0.05 * diff.abs().mean().clamp_min(1e-12)
    return (gap / torch.maximum(diff.abs(), floor)).numpy()


def ig_importance(model, task: str, prep: Preprocessor, split: Split, blocks, start_steps: int = 16, rule: str = "gauss_legendre"):
    """Mean |attribution| per block, steps doubled until the completeness error's 99th percentile is below 1 %."""
    import copy

    # float64 so the completeness error measures the quadrature, not float32 rounding.
    model = copy.deepcopy(model).double().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = split.x.double().to(next(model.parameters()).device)
    baseline = torch.zeros(1, x.shape[1], dtype=x.dtype, device=x.device)
    if prep.mean is None:
        # Unstandardized inputs: the training mean is not stored, the explained rows' mean stands in for it.
        baseline = x.mean(dim=0, keepdim=True)
    for name, cols in column_blocks(prep):
        if name in prep.categorical:
            # All zeros is a category the model never saw; the shares of the categories are the one-hot block's mean
            # (taken over the explained rows, as the checkpoint keeps no training shares).
            baseline[:, cols] = x[:, cols].mean(dim=0)
    classes = None
    if not TASKS[task].one_output:
        with torch.no_grad():
            classes = model(x).argmax(dim=1)
    steps = start_steps
    while True:
        attributions, diff = integrated_gradients(model, x, baseline, task, classes, steps, rule)
        errors = completeness_errors(attributions.cpu(), diff.cpu())
        p99 = float(np.percentile(errors, 99))
        if p99 < COMPLETENESS_TARGET or steps >= MAX_STEPS:
            break
        steps *= 2
    attributions = attributions.cpu()
    summed = torch.stack([attributions[:, cols].sum(dim=1) for _, cols in blocks], dim=1)  # (rows, blocks), signed
    magnitude = summed.abs()
    features = [
        FeatureImportance(name, float(magnitude[:, j].mean()), float(magnitude[:, j].std(unbiased=False)), float(summed[:, j].mean()))
        for j, (name, _) in enumerate(blocks)
    ]
    per_class = {}
    if not TASKS[task].one_output:
        assert prep.labels is not None and classes is not None
        for c, label in enumerate(prep.labels):
            rows = (classes.cpu() == c)
            if rows.any():
                per_class[label_text(label)] = {name: float(magnitude[rows, j].mean()) for j, (name, _) in enumerate(blocks)}
    target = {
        "multiclass": "logit of the class predicted for each row",
        "binary": "logit of the positive class",
        "regression": "prediction in standardized target units" if prep.target_mean is not None else "prediction",
    }[task]
    return features, steps, p99, float(errors.max()), target, per_class


# ---------------------------------------------------------------------------------------------- entry point


def explain(
    checkpoint_path: str | Path,
    data_path: str | Path | None = None,
    method: str = "permutation",
    rows: int | None = DEFAULT_ROWS,
    repeats: int = 5,
    seed: int = 0,
    groups: list[list[str]] | None = None,
    device: str = "cpu",
) -> Importance:
    """Importance of each original input column of a checkpoint's model, sorted largest first."""
    if method not in METHODS:
        raise MLPError(f"unknown method {method!r}; choose {' or '.join(METHODS)}")
    if repeats < 1:
        raise MLPError("--repeats must be at least 1")
    if rows is not None and rows < 1:
        raise MLPError("--rows must be at least 1")
    try:
        _, config, model, prep = load_checkpoint_model(checkpoint_path, device)
        blocks = column_blocks(prep, groups)
        split, available = explain_split(config, prep, Path(data_path) if data_path is not None else None, rows, seed)
        task = config.task
        if method == "permutation":
            features, score, loss = permutation_importance(model, task, config.loss_name, split, blocks, repeats, seed)
            result = Importance(method, MAIN_METRIC[task], features, len(split), available, score, loss, repeats=repeats)
        else:
            features, steps, p99, worst, target, per_class = ig_importance(model, task, prep, split, blocks)
            result = Importance(
                method, "mean_abs_attribution", features, len(split), available, steps=steps,
                completeness_p99=p99, completeness_max=worst, target=target, per_class=per_class,
            )
    except KeyboardInterrupt:
        raise ExplainInterrupted("explain interrupted; nothing was written") from None
    result.features.sort(key=lambda f: (-f.importance if np.isfinite(f.importance) else np.inf, f.feature))
    return result


def importance_csv(result: Importance) -> bytes:
    """The JSON's rows as CSV: feature, importance, std (the csv module quotes names with commas or quotes)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["feature", "importance", "std"])
    for f in result.features:
        writer.writerow([f.feature, repr(f.importance), repr(f.std)])
    return buffer.getvalue().encode("utf-8")
