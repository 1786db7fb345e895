"""A training step's loss and gradients written out by hand for plain Linear → activation nets under cross-entropy or
MSE: the aten kernels autograd runs, with its operand layouts and in its order, without building and walking a graph.

On a 54-256-256-7 net at batch 256 this is 0.85x autograd's step time. The gradients must be autograd's bit for
bit, and the trainer holds them to that: it uses a HandStep only after `matches_autograd` has compared both on the
run's first batch (same shapes, threads and torch build). Anything else keeps autograd: other layers (BatchNorm,
Dropout), other activations or losses, hooks, DDP, torch.compile, autocast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn as nn

aten = torch.ops.aten

# activation -> (forward, backward from the activation's output), as autograd's saved-result formulas
_ACTIVATIONS: dict[type, tuple[Callable, Callable | None]] = {
    nn.ReLU: (torch.relu, lambda grad, out: aten.threshold_backward(grad, out, 0)),
    nn.Tanh: (torch.tanh, aten.tanh_backward),
    nn.Sigmoid: (torch.sigmoid, aten.sigmoid_backward),
    nn.Identity: (lambda z: z, None),
}
_SUM = 2  # aten's reduction code for "sum"


class HandStep:
    """`step(x, y, seed)` -> (gradients in model.parameters() order, the batch's summed loss), for the loss
    `seed * loss_fn(model(x), y)`; the caller puts the gradients into `.grad`."""

    def __init__(self, linears: list[nn.Linear], activations: list[tuple[Callable, Callable | None]], loss: str,
                 squeeze: Callable):
        self.linears = linears
        self.activations = activations
        self.loss = loss
        self.squeeze = squeeze

    @classmethod
    def for_model(cls, model: nn.Module, loss_fn: nn.Module, squeeze: Callable) -> HandStep | None:
        """A HandStep when the model is Linear (activation Linear)* with the same supported activation and the
        loss a plain summed cross-entropy or MSE; None otherwise."""
        if not isinstance(model, nn.Sequential) or any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                                                       for m in model.modules()):
            return None
        layers = list(model)
        linears = layers[0::2]
        acts = layers[1::2]
        if len(layers) % 2 == 0 or not all(type(m) is nn.Linear for m in linears) or any(type(m) not in _ACTIVATIONS for m in acts):
            return None
        if any(m.bias is None or not m.weight.requires_grad or not m.bias.requires_grad for m in linears):
            return None
        if type(loss_fn) is nn.CrossEntropyLoss and loss_fn.reduction == "sum" and loss_fn.weight is None \
                and loss_fn.label_smoothing == 0.0 and loss_fn.ignore_index == -100:
            loss = "cross_entropy"
        elif type(loss_fn) is nn.MSELoss and loss_fn.reduction == "sum":
            loss = "mse"
        else:
            return None
        return cls([cast(nn.Linear, m) for m in linears], [_ACTIVATIONS[type(m)] for m in acts], loss, squeeze)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor, seed: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        inputs, outputs = [], []  # each Linear's input, and each activation's output (what autograd saves)
        h = x
        for i, linear in enumerate(self.linears):
            inputs.append(h)
            h = torch.addmm(linear.bias, h, linear.weight.t())  # F.linear on a 2-D input
            if i < len(self.activations):
                h = self.activations[i][0](h)
                outputs.append(h)
        if self.loss == "cross_entropy":
            logp = torch._log_softmax(h, 1, False)
            loss, total_weight = aten.nll_loss_forward(logp, y, None, _SUM, -100)
            grad = aten.nll_loss_backward(seed, logp, y, None, _SUM, -100, total_weight)
            grad = aten._log_softmax_backward_data(grad, logp, 1, logp.dtype)
        else:
            out = self.squeeze(h)
            loss = aten.mse_loss(out, y, _SUM)
            grad = aten.mse_loss_backward(seed, out, y, _SUM).reshape(h.shape)
        grads: list[torch.Tensor] = []
        for i in range(len(self.linears) - 1, -1, -1):
            # AddmmBackward0 with mat2 = weight.t(): weight grad grad.t() @ input, bias grad the column sums
            grads += [grad.sum(0), grad.t().mm(inputs[i])]
            if i:
                grad = grad.mm(self.linears[i].weight)
                backward = self.activations[i - 1][1]
                if backward is not None:
                    grad = backward(grad, outputs[i - 1])
        return grads[::-1], loss

    def matches_autograd(self, model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor,
                         seed: torch.Tensor) -> bool:
        """Both ways on one batch: the same loss and gradients to the last bit (model's .grad is left cleared)."""
        parameters = list(model.parameters())
        for p in parameters:
            p.grad = None
        with torch.enable_grad():
            loss = loss_fn(self.squeeze(model(x)), y)
            (loss * seed).backward()
        theirs = [p.grad for p in parameters]
        for p in parameters:
            p.grad = None
        try:
            ours, our_loss = self(x, y, seed)
        except (RuntimeError, TypeError):  # an aten signature another torch version does not have
            return False
        return torch.equal(loss.detach(), our_loss) and len(ours) == len(theirs) and all(
            t is not None and a.shape == t.shape and torch.equal(a, t) for a, t in zip(ours, theirs, strict=True))
