"""The one table from names in a config to torch activations, losses, optimizers and schedulers.

Names live here as plain data so the config schema can list them without importing torch; the torch
objects are looked up only when a model or optimizer is built.
"""

from __future__ import annotations

from dataclasses import dataclass

# name -> torch.nn class; `saturates` marks units whose gradient vanishes at both ends (diagnostics).
ACTIVATIONS: dict[str, str] = {
    "relu": "ReLU",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "identity": "Identity",
    "leaky_relu": "LeakyReLU",
    "elu": "ELU",
    "gelu": "GELU",
    "silu": "SiLU",
    "softplus": "Softplus",
}
SATURATING = frozenset({"tanh", "sigmoid"})
RECTIFYING = frozenset({"relu"})

TASKS = ("regression", "binary", "multiclass")


@dataclass(frozen=True)
class LossSpec:
    torch_name: str  # class in torch.nn, always built with reduction="sum"
    tasks: frozenset[str]
    why_not: str  # shown when the loss is paired with a task it does not suit


LOSSES: dict[str, LossSpec] = {
    "mse": LossSpec(
        "MSELoss",
        frozenset({"regression"}),
        "MSE treats class numbers as distances (class 7 is not 'further' from 1 than 2 is); "
        "classification needs cross-entropy on probabilities",
    ),
    "mae": LossSpec(
        "L1Loss",
        frozenset({"regression"}),
        "MAE treats class numbers as distances; classification needs cross-entropy on probabilities",
    ),
    "huber": LossSpec(
        "HuberLoss",
        frozenset({"regression"}),
        "Huber treats class numbers as distances; classification needs cross-entropy on probabilities",
    ),
    "bce": LossSpec(
        "BCEWithLogitsLoss",
        frozenset({"binary"}),
        "binary cross-entropy scores one logistic output; use it with task: binary",
    ),
    "cross_entropy": LossSpec(
        "CrossEntropyLoss",
        frozenset({"multiclass"}),
        "cross-entropy scores a softmax over classes; use it with task: multiclass "
        "(binary uses bce, a continuous target uses mse, mae or huber)",
    ),
}
DEFAULT_LOSS = {"regression": "mse", "binary": "bce", "multiclass": "cross_entropy"}

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "cosine", "step", "plateau")


def activation(name: str):
    """A fresh torch module for the activation `name`."""
    import torch.nn as nn

    return getattr(nn, ACTIVATIONS[name])()


def loss_function(name: str):
    """A torch loss for `name` that sums over the batch (the trainer divides by the global batch size)."""
    import torch.nn as nn

    return getattr(nn, LOSSES[name].torch_name)(reduction="sum")


def optimizer(name: str, params, *, lr: float, weight_decay: float, momentum: float, fused: bool | None):
    """A torch optimizer; `fused` picks torch's single-kernel implementation where the build has one."""
    import torch

    options = {"lr": lr, "weight_decay": weight_decay}
    if fused:
        options["fused"] = True
    if name == "sgd":
        return torch.optim.SGD(params, momentum=momentum, **options)
    if name == "adam":
        return torch.optim.Adam(params, **options)
    if name == "adamw":
        return torch.optim.AdamW(params, **options)
    raise KeyError(name)


def scheduler(name: str, optimizer, *, epochs: int, step_size: int, gamma: float, patience: int):
    """A torch LR scheduler stepped once per epoch, or None for `none`."""
    import torch.optim.lr_scheduler as sched

    if name == "none":
        return None
    if name == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "step":
        return sched.StepLR(optimizer, step_size=step_size, gamma=gamma)
    if name == "plateau":
        return sched.ReduceLROnPlateau(optimizer, factor=gamma, patience=patience)
    raise KeyError(name)
