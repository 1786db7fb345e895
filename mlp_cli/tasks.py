"""The one table of task types: default loss, output width, how outputs become probabilities and predictions,
main metric and constant baseline.

Plain data like `components.py`, so the config schema and `mlp params` can read it without importing torch;
the torch functions import torch when they run. A new task is one entry here (plus its loss in components.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _squeezed(out):
    return out.squeeze(-1)


def _as_is(out):
    return out


def _logit_probabilities(out):
    import torch

    p1 = torch.sigmoid(out.double())
    return torch.stack([1 - p1, p1], dim=1)


def _softmax_probabilities(out):
    import torch

    return torch.softmax(out.double(), dim=1)


def _positive_logit(out):
    return (out.reshape(-1) > 0).long()


def _argmax(out):
    return out.argmax(dim=1)


def _mean_prior(y, n: int, n_outputs: int):
    import torch

    return torch.full((n,), float(y.double().mean()), device=y.device)


def _logit_prior(y, n: int, n_outputs: int):
    import torch

    p = y.double().mean().clamp(1e-12, 1 - 1e-12)
    return torch.full((n,), float(torch.log(p / (1 - p))), device=y.device)


def _log_prior(y, n: int, n_outputs: int):
    import torch

    counts = torch.bincount(y, minlength=n_outputs).double()
    # Ties in the prior pick the first class, which is also what argmax does.
    return (counts / counts.sum()).clamp_min(1e-12).log().float().expand(n, -1)


@dataclass(frozen=True)
class Task:
    name: str
    default_loss: str  # a key of components.LOSSES
    classes: bool  # the target holds class labels (a label set is fitted); False: a continuous target
    n_classes: int | None  # exactly this many classes (binary: 2); None: any number from two up
    one_output: bool  # one output column, squeezed to (rows,); otherwise one column per class
    target_dtype: str  # numpy/torch dtype name of the training targets
    main_metric: str  # picks the best epoch and ranks a sweep
    baseline: str  # name of the constant predictor in reports
    output_noun: str  # "mlp params" describes the output layer as "<width> <noun>"
    summary: str  # the training header's words; fields n, comma, slash (the labels) and target
    squeeze: Callable  # raw model output -> the shape the loss and metrics take
    probabilities: Callable | None  # squeezed output -> float64 (rows, classes); None for a continuous target
    predict: Callable | None  # squeezed output -> int64 class indices
    prior: Callable  # (training targets, rows, output width) -> the constant baseline's outputs

    def width(self, labels: list | None) -> int:
        """Output width for a training set with these labels."""
        if self.one_output:
            return 1
        assert labels is not None, "a task with one output per class is trained with its labels"
        return len(labels)

    @property
    def metrics_kind(self) -> str:
        return "classification" if self.classes else "regression"


TASKS: dict[str, Task] = {
    "regression": Task(
        name="regression", default_loss="mse", classes=False, n_classes=None, one_output=True, target_dtype="float32",
        main_metric="r2", baseline="mean", output_noun="output", summary="regression of {target}",
        squeeze=_squeezed, probabilities=None, predict=None, prior=_mean_prior,
    ),
    "binary": Task(
        name="binary", default_loss="bce", classes=True, n_classes=2, one_output=True, target_dtype="float32",
        main_metric="accuracy", baseline="majority", output_noun="logit", summary="binary ({slash})",
        squeeze=_squeezed, probabilities=_logit_probabilities, predict=_positive_logit, prior=_logit_prior,
    ),
    "multiclass": Task(
        name="multiclass", default_loss="cross_entropy", classes=True, n_classes=None, one_output=False,
        target_dtype="int64", main_metric="accuracy", baseline="majority", output_noun="classes",
        summary="{n} classes ({comma})",
        squeeze=_as_is, probabilities=_softmax_probabilities, predict=_argmax, prior=_log_prior,
    ),
}
