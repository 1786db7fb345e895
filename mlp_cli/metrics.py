"""Metrics as sums and counts accumulated on the device (a confusion matrix, or error sums), finished on the host.

Sums and counts can be all-reduced across data-parallel ranks, so a sharded evaluation gives the same
numbers as a single process. Regression errors are in the target's own units.
"""

from __future__ import annotations

import math

import torch

from mlp_cli.data import label_text
from mlp_cli.tasks import TASKS

MAIN_METRIC = {name: task.main_metric for name, task in TASKS.items()}


class Accumulator:
    """Running sums for one split; `update` never syncs with the host, `result` reads everything once."""

    def __init__(self, task: str, n_classes: int, device, unscale=None):
        self.task = task
        self.classes = TASKS[task].classes
        self.n_classes = n_classes
        self.unscale = unscale  # maps model-space regression outputs/targets back to user units
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        if not self.classes:
            # n, sum err², sum |err|, sum y, sum y²: enough for mse, rmse, mae and r2.
            self.sums = torch.zeros(5, dtype=torch.float64, device=device)
        else:
            self.confusion = torch.zeros(n_classes * n_classes, dtype=torch.int64, device=device)

    @classmethod
    def for_task(cls, task: str, prep, device) -> Accumulator:
        """Sized for the task's classes, reporting regression errors in the target's units."""
        unscale = prep.unscale_target if prep.target_mean is not None else None
        return cls(task, len(prep.labels) if TASKS[task].classes else 2, device, unscale)

    def update(self, outputs: torch.Tensor, targets: torch.Tensor, loss_sum: torch.Tensor) -> None:
        self.loss += loss_sum.detach().double()
        if not self.classes:
            pred, true = outputs.detach().reshape(-1).double(), targets.reshape(-1).double()
            if self.unscale is not None:
                pred, true = self.unscale(pred), self.unscale(true)
            err = pred - true
            self.sums += torch.stack(
                [torch.tensor(float(len(true)), dtype=torch.float64, device=true.device), (err * err).sum(), err.abs().sum(), true.sum(), (true * true).sum()]
            )
        else:
            pred = predicted_classes(self.task, outputs)
            self.confusion += torch.bincount(targets.long() * self.n_classes + pred, minlength=self.n_classes**2)

    def state(self) -> torch.Tensor:
        """Every sum in one float64 vector, for a single all-reduce."""
        body = self.sums if not self.classes else self.confusion.double()
        return torch.cat([self.loss.reshape(1), body])

    def load_state(self, vector: torch.Tensor) -> None:
        self.loss = vector[0].clone()
        if not self.classes:
            self.sums = vector[1:].clone()
        else:
            self.confusion = vector[1:].round().long()

    def result(self, labels: list | None = None) -> dict:
        if not self.classes:
            n, sse, sae, sy, syy = self.sums.tolist()
            return regression_metrics(self.loss.item(), n, sse, sae, sy, syy)
        confusion = self.confusion.reshape(self.n_classes, self.n_classes).cpu().tolist()
        return classification_metrics(self.loss.item(), confusion, labels)


def predicted_classes(task: str, outputs: torch.Tensor) -> torch.Tensor:
    predict = TASKS[task].predict
    assert predict is not None, f"{task} has no classes to predict"
    return predict(outputs)


def regression_metrics(loss_sum: float, n: float, sse: float, sae: float, sy: float, syy: float) -> dict:
    n_int = int(round(n))
    if n_int == 0:
        return {"loss": math.nan, "mse": math.nan, "rmse": math.nan, "mae": math.nan, "r2": math.nan, "n": 0}
    mse = sse / n
    total = syy - sy * sy / n  # n·variance of the target
    return {
        "loss": loss_sum / n,
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": sae / n,
        "r2": 1.0 - sse / total if total > 0 else math.nan,
        "n": n_int,
    }


def classification_metrics(loss_sum: float, confusion: list[list[int]], labels: list | None = None) -> dict:
    """All classification metrics from a confusion matrix whose rows are true classes and columns predictions."""
    k = len(confusion)
    labels = list(labels) if labels is not None else list(range(k))
    n = sum(map(sum, confusion))
    true_counts = [sum(row) for row in confusion]
    pred_counts = [sum(confusion[i][j] for i in range(k)) for j in range(k)]
    per_class = {}
    f1s, recalls = [], []
    for i in range(k):
        tp = confusion[i][i]
        precision = tp / pred_counts[i] if pred_counts[i] else 0.0
        recall = tp / true_counts[i] if true_counts[i] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label_text(labels[i])] = {"precision": precision, "recall": recall, "f1": f1, "support": true_counts[i]}
        if true_counts[i] or pred_counts[i]:
            f1s.append(f1)  # as scikit-learn: classes absent from both truth and predictions do not count
        if true_counts[i]:
            recalls.append(recall)
    agree = sum(confusion[i][i] for i in range(k))
    accuracy = agree / n if n else math.nan
    chance = sum(t * p for t, p in zip(true_counts, pred_counts, strict=True)) / (n * n) if n else math.nan
    kappa = (accuracy - chance) / (1 - chance) if n and chance != 1 else math.nan
    return {
        "loss": loss_sum / n if n else math.nan,
        "accuracy": accuracy,
        "balanced_accuracy": sum(recalls) / len(recalls) if recalls else math.nan,
        "macro_f1": sum(f1s) / len(f1s) if f1s else math.nan,
        "kappa": kappa,
        "per_class": per_class,
        "confusion_matrix": confusion,
        "labels": labels,
        "n": n,
    }
