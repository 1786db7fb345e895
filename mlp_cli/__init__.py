"""mlp: declarative multilayer-perceptron experiments on tabular data (no heavy imports here)."""

__version__ = "0.1.0"
