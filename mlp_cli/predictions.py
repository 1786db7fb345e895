"""Prediction tables and their CSV: one writer shared by `mlp predict` on a checkpoint and on an ONNX model (no torch here)."""

from __future__ import annotations

import numpy as np

from mlp_cli.data import label_text
from mlp_cli.files import csv_line
from mlp_cli.tasks import TASKS


def prediction_table(task: str, labels: list | None, values: np.ndarray, rows: np.ndarray, n_source: int):
    """Column `prediction` (user labels or target units) and, for classification, `prob_<label>` per class.

    `values` holds one row per kept input row: class probabilities `[rows, classes]` (binary: two columns) or
    predictions in target units `[rows]`; `rows` says where each sits among the file's `n_source` rows, and the
    rows that were dropped stay null.
    """
    import pyarrow as pa

    present = np.zeros(n_source, dtype=bool)
    present[rows] = True

    def column(column_values: np.ndarray):
        full = np.zeros(n_source, dtype=column_values.dtype) if column_values.dtype != object else np.full(n_source, "", dtype=object)
        full[rows] = column_values
        return pa.array(full, mask=~present)

    if not TASKS[task].classes:
        return pa.table({"prediction": column(np.asarray(values, dtype=np.float64))})
    assert labels is not None  # a classification checkpoint carries its labels
    probs = np.asarray(values, dtype=np.float64).reshape(len(rows), len(labels))
    names = np.array([label_text(label) for label in labels], dtype=object)
    table = {"prediction": column(names[probs.argmax(axis=1)] if len(rows) else np.array([], dtype=object))}
    # Six decimals is finer than any model here is sure of, and keeps the file readable.
    rounded = np.round(probs, 6)
    for j, name in enumerate(names):
        table[f"prob_{name}"] = column(rounded[:, j])
    return pa.table(table)


def csv_bytes(table) -> bytes:
    """A prediction table as CSV bytes, one line per input row in input order; null cells stay blank."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    sink = pa.BufferOutputStream()
    # pyarrow quotes every header name; write the header as a person would, and let pyarrow write the rows.
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return csv_line(table.column_names).encode() + sink.getvalue().to_pybytes()

