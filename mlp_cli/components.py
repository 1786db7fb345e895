"""The one table from names in a config to torch activations, losses, optimizers and schedulers.

Names live here as plain data so the config schema can list them without importing torch; the torch
objects are looked up only when a model or optimizer is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlp_cli.tasks import TASKS as TASK_TABLE

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

TASKS = tuple(TASK_TABLE)


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
DEFAULT_LOSS = {name: task.default_loss for name, task in TASK_TABLE.items()}

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


def optimizer(name: str, params, *, lr: float, weight_decay: float, momentum: float, fused: bool | None,
              own: bool = False):
    """A torch optimizer; `fused` picks torch's single-kernel implementation where the build has one.

    With `own` (and `fused`), mlp's optim.FusedOptimizer calls the same kernels without importing torch._dynamo.
    """
    import torch

    if own and fused:
        from mlp_cli.optim import FusedOptimizer

        return FusedOptimizer(name, params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    options: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay}
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
    """A torch LR scheduler stepped once per epoch, or None for `none` (optim.EpochSchedule for mlp's own optimizer)."""
    import torch.optim.lr_scheduler as sched

    if name == "none":
        return None
    if name in ("cosine", "step") and type(optimizer).__name__ == "FusedOptimizer":
        from mlp_cli.optim import EpochSchedule

        return EpochSchedule(name, optimizer, T_max=epochs, step_size=step_size, gamma=gamma)
    if name == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "step":
        return sched.StepLR(optimizer, step_size=step_size, gamma=gamma)
    if name == "plateau":
        return sched.ReduceLROnPlateau(optimizer, factor=gamma, patience=patience)
    raise KeyError(name)


_FAST_STEP_OK: bool | None = None  # checked once per process against torch.optim's own step


def fast_step(optimizer):
    """A drop-in for `optimizer.step` that calls torch's fused Adam/AdamW kernel directly.

    On small tabular nets the Python wrapper around `torch.optim.Adam.step` (hooks, grouping, bookkeeping) costs
    several times the kernel itself; calling the kernel with the optimizer's own state tensors does the same
    update (bit for bit, checked once per process) at about two thirds of the epoch time. Anything unusual
    (another optimizer, several groups, amsgrad, state not yet created, a torch without the kernel) gets the
    optimizer's own `step`.
    """
    import torch

    global _FAST_STEP_OK
    if not isinstance(optimizer, torch.optim.Adam) or len(optimizer.param_groups) != 1:
        return optimizer.step
    group = optimizer.param_groups[0]
    if not group.get("fused") or group.get("amsgrad") or group.get("maximize") or group.get("capturable") \
            or group.get("differentiable") or isinstance(group["lr"], torch.Tensor):
        return optimizer.step
    params = list(group["params"])
    states = [optimizer.state.get(p) for p in params]
    if not all(state and "exp_avg" in state for state in states):
        return optimizer.step
    if _FAST_STEP_OK is None:
        _FAST_STEP_OK = _fast_step_matches_torch()
    if not _FAST_STEP_OK:
        return optimizer.step
    decoupled = isinstance(optimizer, torch.optim.AdamW) or bool(group.get("decoupled_weight_decay"))
    return _kernel_step(params, states, group, torch._fused_adamw_ if decoupled else torch._fused_adam_)


def _kernel_step(params, states, group, kernel):
    import torch

    exp_avgs = [s["exp_avg"] for s in states]
    exp_avg_sqs = [s["exp_avg_sq"] for s in states]
    steps = [s["step"] for s in states]
    beta1, beta2 = group["betas"]

    @torch.no_grad()
    def step():
        torch._foreach_add_(steps, 1)
        kernel(params, [p.grad for p in params], exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
               beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
               grad_scale=None, found_inf=None)

    return step


def _fast_step_matches_torch() -> bool:
    """Three steps of Adam and AdamW both ways on a tiny net must give identical weights and state."""
    import torch

    try:
        for cls in (torch.optim.Adam, torch.optim.AdamW):
            # A private generator: the check must not move the global RNG that dropout draws from.
            generator = torch.Generator().manual_seed(0)
            start = [torch.randn(4, 3, generator=generator), torch.randn(4, generator=generator)]
            grads = [[torch.randn(t.shape, generator=generator) for t in start] for _ in range(3)]
            results = []
            for fast in (False, True):
                params = [t.clone().requires_grad_() for t in start]
                opt = cls(params, lr=0.01, weight_decay=0.01, fused=True)
                for i, step_grads in enumerate(grads):
                    for p, g in zip(params, step_grads, strict=True):
                        p.grad = g.clone()
                    if fast and i > 0:
                        fast_step_fn = _kernel_step(params, [opt.state[p] for p in params], opt.param_groups[0],
                                                    torch._fused_adamw_ if cls is torch.optim.AdamW else torch._fused_adam_)
                        fast_step_fn()
                    else:
                        opt.step()
                results.append([p.detach() for p in params] + [opt.state[p]["exp_avg_sq"] for p in params])
            if not all(torch.equal(a, b) for a, b in zip(*results, strict=True)):
                return False
        return True
    except (AttributeError, RuntimeError, TypeError):
        return False
