"""Tabular data from a file (or a generator) to training-ready tensors; callers import the public names from here.

Layers, each importing only those above it: `readers` (one reader class per file format, each yielding a `Frame`)
→ `rules` (labels, missing values, scaling statistics: the rules both paths share) → `prepare` (the fitted
`Preprocessor`, in-memory splits and `Dataset`) → `stream` (Parquet larger than memory) → `load` (picks a path).
`synthetic` makes teaching data as a `Frame`. Names resolve lazily, so `from mlp_cli.data import label_text`
costs only the reader module (`mlp params` stays fast).
"""

from __future__ import annotations

import importlib

# public name -> the module that owns it
_EXPORTS = {
    "Frame": "readers",
    "READERS": "readers",
    "Reader": "readers",
    "check_columns": "readers",
    "file_kind": "readers",
    "header": "readers",
    "label_text": "readers",
    "load_frame": "readers",
    "load_frames": "readers",
    "to_frame": "readers",
    "read_table": "readers",
    "reader_for": "readers",
    "TextFormat": "readers",
    "rounded_integers": "readers",
    "stored_index": "readers",
    "Preprocessor": "prepare",
    "Split": "prepare",
    "Dataset": "prepare",
    "class_labels": "rules",
    "column_stats": "rules",
    "handle_missing": "rules",
    "label_values": "rules",
    "standardizes_target": "rules",
    "fit": "prepare",
    "split_frames": "prepare",
    "split_indices": "prepare",
    "to_split": "prepare",
    "ROLES": "stream",
    "fit_streaming": "stream",
    "uniform": "stream",
    "streaming_split": "stream",
    "load_dataset": "load",
    "load_for_model": "load",
    "read_frames": "load",
    "ReadAhead": "load",
    "generate": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mlp_cli.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mlp_cli.data.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
