"""Counting trainable parameters in pure Python, layer by layer, with the course's formula K(l)·(K(l-1)+1)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlp_cli.errors import SpecError


@dataclass(frozen=True)
class LayerCount:
    n_in: int
    n_out: int
    weights: int
    biases: int
    norm: int  # BatchNorm1d's scale and shift, 2·K(l), on hidden layers when batch_norm is on

    @property
    def params(self) -> int:
        return self.weights + self.biases + self.norm

    @property
    def formula(self) -> str:
        text = f"{self.n_out}·({self.n_in}+1) = {self.weights + self.biases}"
        if self.norm:
            text += f"  + BN 2·{self.n_out} = {self.params}"
        return text

    def as_dict(self) -> dict:
        row = {"in": self.n_in, "out": self.n_out, "weights": self.weights, "biases": self.biases}
        if self.norm:
            row["batch_norm"] = self.norm
        row["params"] = self.params
        return row


def count_layers(widths: list[int], batch_norm: bool = False) -> list[LayerCount]:
    """One LayerCount per Linear layer of a net with these widths, input first and output last."""
    layers = []
    last = len(widths) - 2
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:], strict=False)):  # consecutive pairs: one fewer than widths
        norm = 2 * n_out if batch_norm and i < last else 0
        layers.append(LayerCount(n_in, n_out, n_in * n_out, n_out, norm))
    return layers


def total(layers: list[LayerCount]) -> int:
    return sum(layer.params for layer in layers)


def as_json(layers: list[LayerCount]) -> dict:
    return {"layers": [layer.as_dict() for layer in layers], "total": total(layers)}


_WHOLE = re.compile(r"^[-+]?[0-9]+$")


def parse_spec(spec: str) -> list[int]:
    """Widths from `6,3,5,4,3`: input width, hidden widths, output width; at least two, all positive."""
    parts = [part.strip() for part in spec.split(",")]
    if len(parts) < 2:
        raise SpecError(
            f"layer spec {spec!r} needs at least two widths (input and output), e.g. 6,3,5,4,3"
        )
    widths = []
    for position, part in enumerate(parts, start=1):
        if part == "":
            raise SpecError(f"layer spec {spec!r}: width {position} is empty")
        # ASCII digits only: Python's int() also takes "1_0" and "３", which no user means as a width.
        if not _WHOLE.match(part):
            raise SpecError(f"layer spec {spec!r}: width {position} is {part!r}, not a whole number")
        if len(part.lstrip("+-")) > 12:
            raise SpecError(f"layer spec {spec!r}: width {position} is {part}, too large for a layer (at most 12 digits)")
        width = int(part)
        if width < 1:
            raise SpecError(f"layer spec {spec!r}: width {position} is {width}; every layer needs at least 1 unit")
        widths.append(width)
    return widths


def memory_bytes(widths: list[int], batch_size: int, optimizer: str) -> int:
    """A lower bound on training memory: weights, gradients and optimizer state, plus activations kept for backward."""
    params = total(count_layers(widths))
    state = {"sgd": 1, "adam": 2, "adamw": 2}.get(optimizer, 2)
    activations = batch_size * sum(widths) * 3  # pre-activation, activation, gradient
    return 4 * (params * (2 + state) + activations)


