"""Teaching data made in memory: a 1-D sine to approximate and 2-D moons, circles, spirals and xor to separate."""

from __future__ import annotations

import numpy as np

from mlp_cli.data.readers import Frame
from mlp_cli.errors import ConfigError
from mlp_cli.tasks import TASKS

REGRESSION = {"sine"}
CLASSIFICATION = {"moons", "circles", "spirals", "xor"}


def generate(config, task: str) -> Frame:
    """`config` is a SyntheticConfig; rows are split later exactly like a file's rows."""
    name, n, noise = config.name, config.n, config.noise
    if name in REGRESSION and TASKS[task].classes:
        raise ConfigError(f"data.synthetic.name {name} is a regression problem; set task: regression")
    if name in CLASSIFICATION and not TASKS[task].classes:
        raise ConfigError(f"data.synthetic.name {name} is a classification problem; set task: binary or multiclass")
    rng = np.random.default_rng(config.seed)
    if name == "sine":
        x = rng.uniform(-np.pi, np.pi, size=(n, 1))
        y = np.sin(2 * x[:, 0]) + noise * rng.normal(size=n)
        return _frame(name, x, y, ["x"])
    classes = 3 if (name == "spirals" and TASKS[task].n_classes is None) else 2
    x, y = {"moons": _moons, "circles": _circles, "spirals": _spirals, "xor": _xor}[name](rng, n, classes)
    x = x + noise * rng.normal(size=x.shape)
    return _frame(name, x, y.astype(np.float64), ["x1", "x2"])


def _frame(name: str, x: np.ndarray, y: np.ndarray, names: list[str]) -> Frame:
    return Frame(f"synthetic:{name}", "synthetic", x.astype(np.float32), names, {}, y)


def _moons(rng, n, classes):
    half = n // 2
    angle = rng.uniform(0, np.pi, size=n)
    upper = np.arange(n) < half
    x = np.where(upper[:, None], np.c_[np.cos(angle), np.sin(angle)], np.c_[1 - np.cos(angle), 0.5 - np.sin(angle)])
    return x, (~upper).astype(int)


def _circles(rng, n, classes):
    angle = rng.uniform(0, 2 * np.pi, size=n)
    inner = np.arange(n) % 2 == 1
    radius = np.where(inner, 0.5, 1.0)
    return np.c_[radius * np.cos(angle), radius * np.sin(angle)], inner.astype(int)


def _spirals(rng, n, classes):
    label = np.arange(n) % classes
    t = rng.uniform(0.25, 1.0, size=n)  # position along the arm, from the centre outwards
    angle = 3.5 * np.pi * t + 2 * np.pi * label / classes
    return np.c_[t * np.cos(angle), t * np.sin(angle)], label


def _xor(rng, n, classes):
    x = rng.uniform(-1, 1, size=(n, 2))
    return x, ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(int)
