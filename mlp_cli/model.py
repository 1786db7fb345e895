"""The network: an nn.Sequential of Linear → [BatchNorm1d] → activation → [Dropout] blocks and a Linear output."""

from __future__ import annotations

from typing import Any, cast

import torch.nn as nn

from mlp_cli.components import activation
from mlp_cli.config import ModelConfig


def build_model(n_inputs: int, n_outputs: int, config: ModelConfig) -> nn.Sequential:
    """Softmax and sigmoid are not layers here: they live in the loss (stable) and in prediction."""
    layers: list[nn.Module] = []
    width = n_inputs
    for hidden in config.hidden:
        layers.append(nn.Linear(width, hidden))
        if config.batch_norm:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(activation(config.activation))
        if config.dropout > 0:
            layers.append(nn.Dropout(config.dropout))
        width = hidden
    layers.append(nn.Linear(width, n_outputs))
    model = nn.Sequential(*layers)
    initialize(model, config.init, config.activation)
    return model


def initialize(model: nn.Sequential, scheme: str, activation: str) -> None:
    """Xavier keeps the variance of tanh/sigmoid layers constant with depth, Kaiming that of ReLU layers;
    torch's default (uniform ±1/√fan_in) shrinks it layer after layer, which is what deep nets suffer from."""
    if scheme == "default":
        return
    for layer in linear_layers(model):
        if scheme == "xavier":
            # cast: the `in` test below admits only names calculate_gain knows, which mypy cannot narrow to its Literal
            gain = nn.init.calculate_gain(cast(Any, activation)) if activation in ("tanh", "sigmoid", "relu", "leaky_relu") else 1.0
            nn.init.xavier_uniform_(layer.weight, gain=gain)
        else:
            nn.init.kaiming_normal_(layer.weight, nonlinearity="leaky_relu" if activation == "leaky_relu" else "relu")
        nn.init.zeros_(layer.bias)


def widths(n_inputs: int, n_outputs: int, config: ModelConfig) -> list[int]:
    return [n_inputs, *config.hidden, n_outputs]


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def forward_chain(model: nn.Sequential):
    """`model(x)` without nn.Module.__call__'s hook dispatch, for the training loop's hot path.

    On a small tabular net the dispatch costs as much as a layer's arithmetic. It is only skipped when no hook
    is registered anywhere, so nothing that relies on hooks can tell the difference.
    """
    from torch.nn.modules import module as torch_module

    hooked = any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())
    global_hooks = any(
        getattr(torch_module, name, None)
        for name in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks")
    )
    if hooked or global_hooks:
        return model
    steps = [layer.forward for layer in model]

    def run(x):
        for step in steps:
            x = step(x)
        return x

    return run
