"""An exported ONNX model as mlp reads it: metadata, graph inputs from a data file, and predictions through
onnxruntime, all without importing torch.

The graph takes the RAW encoded columns (`mlp.features`): numeric columns as read, missing values as NaN where
the run imputes, and one 0/1 input per category of a categorical column (named `column=category`). Scaling,
imputation, softmax/sigmoid and the target's unscaling are inside the graph.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from mlp_cli.data import Frame, Preprocessor, load_for_model
from mlp_cli.errors import MLPError, ModelFileError
from mlp_cli.files import file_problem
from mlp_cli.tasks import TASKS

INPUT = "features"
PROBABILITIES = "probabilities"
PREDICTION = "prediction"
RUN_BATCH = 65536  # rows per session.run when predicting a file
INSTALL_HINT = "pip install 'mlp-cli[onnx]'"


def require(module: str):
    """Import an optional ONNX package or say in one line how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MLPError(f"{module} is not installed; ONNX export and prediction need it: {INSTALL_HINT}") from None


def output_name(task: str) -> str:
    return PROBABILITIES if TASKS[task].classes else PREDICTION


def raw_inputs(prep: Preprocessor, frame: Frame) -> np.ndarray:
    """The graph's input for a frame: one-hot encoded but neither imputed nor scaled (the graph does both)."""
    raw = dataclasses.replace(prep, impute={}, mean=None, scale=None)
    return np.ascontiguousarray(raw.inputs(frame, scaled=False), dtype=np.float32)


class OnnxModel:
    """An onnxruntime session on an exported file plus the preprocessor its metadata carries."""

    def __init__(self, path: str | Path):
        path = Path(path)
        problem = file_problem(path, "pass the .onnx file mlp export wrote")
        if problem:
            raise ModelFileError(path, problem)
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime's own warnings would print on stderr; errors still raise
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 -- onnxruntime raises its own Fail, InvalidProtobuf, InvalidGraph ... types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(path, f"onnxruntime cannot load it ({first[:300]})") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if "mlp.preprocessor" not in self.metadata:
            raise ModelFileError(path, "an ONNX model, but not one written by mlp export (no mlp.* metadata)")
        try:
            self.prep = Preprocessor.from_dict(json.loads(self.metadata["mlp.preprocessor"]))
        except (ValueError, TypeError) as exc:
            raise ModelFileError(path, f"its mlp.preprocessor metadata is damaged ({exc})") from None
        self.task = self.prep.task
        names = [o.name for o in self.session.get_outputs()]
        if output_name(self.task) not in names or [i.name for i in self.session.get_inputs()] != [INPUT]:
            raise ModelFileError(path, f"its graph lacks the input {INPUT!r} or the output {output_name(self.task)!r}")

    def run(self, x: np.ndarray, batch: int = RUN_BATCH) -> np.ndarray:
        """Probabilities [rows, classes] or predictions [rows] for raw encoded inputs, in batches."""
        name = output_name(self.task)
        parts = [self.session.run([name], {INPUT: x[start : start + batch]})[0] for start in range(0, len(x), batch)]
        if parts:
            return np.concatenate(parts)
        width = (len(self.prep.labels),) if TASKS[self.task].classes else ()
        return np.zeros((0, *width), dtype=np.float32)

    def predict(self, data_path: str | Path):
        """A prediction table like `mlp predict` on the checkpoint: same columns, same rows, same order."""
        from mlp_cli.predictions import prediction_table

        frame = load_for_model(self.prep, Path(data_path), target_required=False)
        values = self.run(raw_inputs(self.prep, frame))
        return prediction_table(self.task, self.prep.labels, values, frame.rows, frame.n_source)


def predictions_csv(model_path: str | Path, data_path: str | Path) -> bytes:
    from mlp_cli.predictions import csv_bytes

    return csv_bytes(OnnxModel(model_path).predict(data_path))
