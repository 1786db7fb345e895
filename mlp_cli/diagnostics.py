"""Layer health, the course's "going deeper" made visible: gradient and activation statistics per layer.

For each Linear layer l, on a fixed batch of training rows, with the model in eval mode and the RNG forked
so that measuring never changes training:
- grad_norm ‖∂L/∂W(l)‖ and its ratio to ‖W(l)‖ (how fast the layer's weights move, relative to their size);
- backprop_norm ‖∂L/∂z(l)‖, the error signal reaching the layer's pre-activation z(l) = W(l)x(l-1) + b(l);
  its fall from the output layer to the first is what "vanishing gradients" means;
- act_mean and act_std of the layer's output after its activation (the logits for the output layer);
- inactive_fraction: for ReLU, the share of units that output 0 for every row of the batch (dead units);
  for tanh and sigmoid, the share of activations within 0.01 of the flat ends (saturated).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from mlp_cli.components import RECTIFYING, SATURATING
from mlp_cli.files import write_csv
from mlp_cli.model import linear_layers
from mlp_cli.tasks import TASKS

COLUMNS = ("epoch", "layer", "units", "grad_norm", "weight_norm", "grad_weight_ratio", "backprop_norm", "act_mean", "act_std", "inactive_fraction")
VANISHING = 1e-2  # first layer's error signal below 1 % of the output layer's
EXPLODING = 1e2
DEAD_OR_SATURATED = 0.5


class Diagnostics:
    def __init__(self, model: nn.Sequential, activation: str, task: str, run_dir: Path | None):
        self.model = model
        self.activation = activation
        self.task = task
        self.run_dir = run_dir
        self.linears = linear_layers(model)
        activation_type = type(_activation_module(model)) if len(self.linears) > 1 else None
        self.activations = [m for m in model if activation_type is not None and type(m) is activation_type]
        self.rows: list[dict] = []

    def measure(self, batch, loss_fn, epoch: int) -> list[dict]:
        x, y = batch
        model = self.model
        was_training = model.training
        pre: list[torch.Tensor] = []
        post: list[torch.Tensor] = []
        hooks = [m.register_forward_hook(lambda _m, _i, out: pre.append(out)) for m in self.linears]
        hooks += [m.register_forward_hook(lambda _m, _i, out: post.append(out)) for m in self.activations]
        devices = [x.device] if x.device.type == "cuda" else []
        try:
            model.eval()
            with torch.random.fork_rng(devices=devices), torch.enable_grad():
                out = model(x)
                out = TASKS[self.task].squeeze(out)
                loss = loss_fn(out.float(), y) / len(x)
                weights = [layer.weight for layer in self.linears]
                grads = torch.autograd.grad(loss, weights + pre)
        finally:
            for hook in hooks:
                hook.remove()
            model.train(was_training)
        weight_grads, signal = grads[: len(weights)], grads[len(weights) :]
        stats = []
        for i, layer in enumerate(self.linears):
            hidden = i < len(self.linears) - 1
            act = (post[i] if hidden else pre[i]).detach().float()
            values = [weight_grads[i].norm(), layer.weight.detach().norm(), signal[i].norm(), act.mean(), act.std(correction=0)]
            values.append(self._inactive(act) if hidden else torch.tensor(float("nan"), device=act.device))
            stats.append(torch.stack([v.float() for v in values]))
        table = torch.stack(stats).cpu().tolist()  # one sync for all layers
        rows = []
        for i, (grad, weight, backprop, mean, std, inactive) in enumerate(table):
            name = f"hidden {i + 1}" if i < len(table) - 1 else "output"
            rows.append({
                "epoch": epoch, "layer": name, "units": self.linears[i].out_features, "grad_norm": grad,
                "weight_norm": weight, "grad_weight_ratio": grad / weight if weight else float("nan"),
                "backprop_norm": backprop, "act_mean": mean, "act_std": std,
                "inactive_fraction": None if inactive != inactive else inactive,
            })
        self.rows.extend(rows)
        if self.run_dir is not None:
            self._write()
        return rows

    def _inactive(self, act: torch.Tensor) -> torch.Tensor:
        if self.activation in RECTIFYING:
            return (act <= 0).all(dim=0).float().mean()
        if self.activation == "tanh":
            return (act.abs() > 0.99).float().mean()
        if self.activation == "sigmoid":
            return ((act < 0.01) | (act > 0.99)).float().mean()
        return torch.tensor(float("nan"), device=act.device)

    def _write(self) -> None:
        assert self.run_dir is not None  # called only when there is a run folder to write to
        write_csv(self.run_dir / "diagnostics.csv", COLUMNS, ([row[c] for c in COLUMNS] for row in self.rows), digits=6)


def _activation_module(model: nn.Sequential) -> nn.Module:
    # The module right after the first Linear (or its BatchNorm) is the hidden activation.
    modules = list(model)
    index = 1 + isinstance(modules[1], nn.BatchNorm1d)
    return modules[index]


def warnings_for(rows: list[dict], activation: str) -> list[str]:
    """Plain-words warnings about one measurement (one row per layer)."""
    messages = []
    if len(rows) > 1:
        first, last = rows[0]["backprop_norm"], rows[-1]["backprop_norm"]
        if last > 0 and first / last < VANISHING:
            messages.append(
                f"gradients vanish: the error signal reaching the first layer is {first / last:.1e} of the output layer's, "
                "so the early layers barely learn (try relu with model.init: kaiming, batch_norm, or fewer layers)"
            )
        elif last > 0 and first / last > EXPLODING:
            messages.append(
                f"gradients explode: the error signal reaching the first layer is {first / last:.1e} times the output "
                "layer's (lower train.lr, set train.grad_clip, use model.init: xavier or kaiming)"
            )
    for row in rows[:-1]:
        share = row["inactive_fraction"]
        if share is None or share < DEAD_OR_SATURATED:
            continue
        if activation in RECTIFYING:
            messages.append(
                f"{share:.0%} of {row['layer']}'s ReLUs are dead (output 0 for every input in the batch) and pass no "
                "gradient (lower train.lr, try leaky_relu, or model.init: kaiming)"
            )
        elif activation in SATURATING:
            messages.append(
                f"{share:.0%} of {row['layer']}'s {activation} activations are saturated (stuck near their flat ends) "
                "and pass almost no gradient (standardize the data, lower train.lr, or model.init: xavier)"
            )
    return messages
