"""mlp's own Adam, AdamW and SGD over torch's fused kernels, and its LR schedules as pure functions of the epoch.

Why: the first `torch.optim.Optimizer(...)` imports torch._dynamo (through `torch._disable_dynamo` on
`Optimizer.__init__`, `step`, `zero_grad`, `state_dict` ...), which costs 1.0-1.3 s of a 3 s `mlp train`. These
classes call the same fused kernels torch.optim's `fused=True` path calls, with the same arguments in the same
order, and keep their state in torch.optim's `state_dict` format, so results are the same bit for bit and a last.pt
written by either loads into the other. tests/test_optim.py holds them to torch.optim as the oracle. Anything
unusual (several parameter groups, a device without fused kernels, ReduceLROnPlateau, torch.compile) is left to
torch.optim by `components.optimizer`/`components.scheduler`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

# torch.optim's param_group keys and defaults (2.x), in its order, so state_dict() content matches.
ADAM_GROUP = {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-08, "weight_decay": 0, "amsgrad": False, "maximize": False,
              "foreach": None, "capturable": False, "differentiable": False, "fused": True,
              "decoupled_weight_decay": False}
SGD_GROUP = {"lr": 0.001, "momentum": 0, "dampening": 0, "weight_decay": 0, "nesterov": False, "maximize": False,
             "foreach": None, "differentiable": False, "fused": True}


def fused_kernels_available(device: torch.device) -> bool:
    """The fused Adam/AdamW/SGD kernels exist for CUDA and, since torch 2.4, for the CPU."""
    return device.type in ("cpu", "cuda") and all(
        hasattr(torch, name) for name in ("_fused_adam_", "_fused_adamw_", "_fused_sgd_"))


class FusedOptimizer:
    """One parameter group, one fused kernel call per step; the duck type of torch.optim.Optimizer that mlp uses:
    `param_groups`, `state`, `step()`, `zero_grad()`, `state_dict()`, `load_state_dict()`."""

    def __init__(self, kind: str, params, *, lr: float, weight_decay: float, momentum: float = 0.0):
        if kind not in ("adam", "adamw", "sgd"):
            raise KeyError(kind)
        self.kind = kind
        self.params = [p for p in params]
        group = dict(SGD_GROUP if kind == "sgd" else ADAM_GROUP)
        group.update(lr=lr, weight_decay=weight_decay)
        if kind == "sgd":
            group["momentum"] = momentum
        if kind == "adamw":
            group["decoupled_weight_decay"] = True
        group["params"] = self.params
        self.param_groups = [group]
        self.state: dict[torch.Tensor, dict] = {}
        self._lists: Any = None  # state tensors in parameter order, built at the first step

    # -- the step

    @torch.no_grad()
    def step(self) -> None:
        params = self.params
        if any(p.grad is None for p in params):  # torch.optim skips parameters without gradients
            return self._step_subset([p for p in params if p.grad is not None])
        if self._lists is None:
            self._lists = self._init_state(params)
        self._kernel(params, [p.grad for p in params], *self._lists)

    def _step_subset(self, params) -> None:
        if params:
            self._kernel(params, [p.grad for p in params], *self._init_state(params))

    def _init_state(self, params):
        """Creates missing state as torch.optim does (zeros; float32 `step` on the parameter's device when fused)."""
        if self.kind == "sgd":
            if self.param_groups[0]["momentum"] == 0:
                return ([],)
            return ([self.state.get(p, {}).get("momentum_buffer") for p in params],)
        for p in params:
            if not self.state.get(p):
                self.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                 "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                 "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        states = [self.state[p] for p in params]
        return [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [s["step"] for s in states]

    def _kernel(self, params, grads, *lists) -> None:
        group: dict[str, Any] = self.param_groups[0]
        if self.kind == "sgd":
            self._sgd(params, grads, lists[0], group)
            return
        exp_avgs, exp_avg_sqs, steps = lists
        beta1, beta2 = group["betas"]
        torch._foreach_add_(steps, 1)
        kernel = torch._fused_adamw_ if group["decoupled_weight_decay"] else torch._fused_adam_
        kernel(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"], beta1=beta1,
               beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], maximize=False, grad_scale=None,
               found_inf=None)

    def _sgd(self, params, grads, buffers, group) -> None:
        momentum = group["momentum"]
        first = momentum != 0 and all(b is None for b in buffers)
        if first:  # the kernel fills fresh buffers with the gradient on its first step
            buffers[:] = [torch.empty_like(g) for g in grads]
        torch._fused_sgd_(params, grads, buffers if momentum != 0 else [], weight_decay=group["weight_decay"],
                          momentum=momentum, lr=group["lr"], dampening=group["dampening"], nesterov=group["nesterov"],
                          maximize=False, is_first_step=first, grad_scale=None, found_inf=None)
        if momentum != 0:
            for p, buffer in zip(params, buffers, strict=True):
                self.state.setdefault(p, {})["momentum_buffer"] = buffer
            if len(params) == len(self.params):
                self._lists = (buffers,)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    # -- torch.optim's state_dict format

    def state_dict(self) -> dict:
        index = {id(p): i for i, p in enumerate(self.params)}
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        group["params"] = list(range(len(self.params)))
        state = {index[id(p)]: s for p, s in self.state.items() if s}
        return {"state": dict(sorted(state.items())), "param_groups": [group]}

    def load_state_dict(self, stored: dict) -> None:
        """Loads a state dict of this class or of torch.optim's Adam/AdamW/SGD (last.pt written before mlp had its
        own optimizer): hyperparameters from the stored group, state cast to each parameter's device and dtype."""
        groups = stored["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError("the stored optimizer state has a different number of parameters or groups")
        group = self.param_groups[0]
        for key, value in groups[0].items():
            if key != "params" and key in group:
                group[key] = value
        self.state = {}
        for position, stored_id in enumerate(groups[0]["params"]):
            saved = stored["state"].get(stored_id)
            if not saved:
                continue
            p = self.params[position]
            self.state[p] = {
                key: value.to(dtype=torch.float32 if key == "step" else p.dtype, device=p.device).clone()
                for key, value in saved.items()
            }
        self._lists = None


class EpochSchedule:
    """An LR schedule stepped once per epoch: the optimizer's lr is `lr_at(epoch)`, a pure function of the epoch.

    `lr_at` follows torch.optim.lr_scheduler's own recurrences (CosineAnnealingLR, StepLR) step by step rather
    than their closed forms, so the lr sequence is torch's bit for bit; state_dict() has torch's keys.
    """

    def __init__(self, kind: str, optimizer, **options):
        if kind not in ("cosine", "step"):
            raise KeyError(kind)
        self.kind, self.optimizer, self.options = kind, optimizer, options
        self.base_lrs = [optimizer.param_groups[0]["lr"]]
        self.last_epoch = 0

    def lr_at(self, epoch: int) -> float:
        base = self.base_lrs[0]
        return cosine_lr(base, epoch, self.options["T_max"]) if self.kind == "cosine" else \
            step_lr(base, epoch, self.options["step_size"], self.options["gamma"])

    def step(self) -> None:
        self.last_epoch += 1
        self.optimizer.param_groups[0]["lr"] = self.lr_at(self.last_epoch)

    def get_last_lr(self) -> list[float]:
        return [self.optimizer.param_groups[0]["lr"]]

    def state_dict(self) -> dict:
        own = {"T_max": self.options["T_max"], "eta_min": 0.0} if self.kind == "cosine" else \
            {"step_size": self.options["step_size"], "gamma": self.options["gamma"]}
        return {**own, "base_lrs": list(self.base_lrs), "last_epoch": self.last_epoch,
                "_step_count": self.last_epoch + 1, "_is_initial": False, "_get_lr_called_within_step": False,
                "_last_lr": [self.lr_at(self.last_epoch)]}

    def load_state_dict(self, stored: dict) -> None:
        """As torch's schedulers do: the stored schedule (T_max, step_size, gamma) wins over the one built."""
        self.base_lrs = list(stored["base_lrs"])
        self.last_epoch = stored["last_epoch"]
        self.options.update({k: stored[k] for k in ("T_max", "step_size", "gamma") if k in stored})


def cosine_lr(base: float, epoch: int, t_max: int, eta_min: float = 0.0) -> float:
    """CosineAnnealingLR's lr after `epoch` steps, by its own recurrence."""
    lr = base
    for e in range(1, epoch + 1):
        if (e - 1 - t_max) % (2 * t_max) == 0:
            lr = lr + (base - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
        else:
            lr = (1 + math.cos(math.pi * e / t_max)) / (1 + math.cos(math.pi * (e - 1) / t_max)) * (lr - eta_min) + eta_min
    return lr


def step_lr(base: float, epoch: int, step_size: int, gamma: float) -> float:
    """StepLR's lr after `epoch` steps: multiplied by gamma at every multiple of step_size, as torch does it."""
    lr = base
    for e in range(1, epoch + 1):
        if e % step_size == 0:
            lr = lr * gamma
    return lr
