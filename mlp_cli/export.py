"""`mlp export`: one self-contained ONNX file (preprocessing, network and output head in the graph), written only
after onnxruntime has been shown to give what torch gives on real rows at batch sizes 1, 7 and all.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from mlp_cli import __version__, checkpoint, files
from mlp_cli.data import Preprocessor, load_for_model, read_frames, split_frames
from mlp_cli.errors import DataError, ExportError, MLPError
from mlp_cli.evaluate import EVAL_BATCH, model_outputs, output_values
from mlp_cli.files import write_text
from mlp_cli.onnx_model import INPUT, OnnxModel, output_name, raw_inputs, require
from mlp_cli.tasks import TASKS

U = 2.0**-24  # float32 unit roundoff
PARITY_BATCHES = (1, 7)  # besides "all rows in one call"
SMALL_BATCH_ROWS = 2048  # rows run one (and seven) at a time: enough to see a shape bug, cheap enough to always do
STREAM_ROWS = 200_000  # test rows read from a streaming run for the gate


class Exportable(nn.Module):
    """The graph that is exported: raw encoded columns in, probabilities or target-unit predictions out."""

    fill: torch.Tensor  # buffers registered in __init__, declared so type checkers see tensors
    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, model: nn.Sequential, prep: Preprocessor):
        super().__init__()
        self.net, self.task = model, prep.task
        numeric = set(prep.features) - set(prep.categorical)
        self.imputes = bool(prep.impute)
        # One-hot inputs have no mean to impute; a NaN there reads as "not this category", like a missing category.
        fill = [prep.impute.get(name, 0.0) if name in numeric else 0.0 for name in prep.feature_names]
        self.register_buffer("fill", torch.tensor(fill, dtype=torch.float32))
        self.standardizes = prep.mean is not None
        if self.standardizes:
            self.register_buffer("mean", torch.tensor(prep.mean, dtype=torch.float32))
            self.register_buffer("scale", torch.tensor(prep.scale, dtype=torch.float32))
        self.unscales = not TASKS[prep.task].classes and prep.target_mean is not None
        if self.unscales:  # float64: a target like 1e6 ± 0.05 cannot be unscaled in float32
            self.register_buffer("target_mean", torch.tensor(prep.target_mean, dtype=torch.float64))
            self.register_buffer("target_scale", torch.tensor(prep.target_scale, dtype=torch.float64))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features
        if self.imputes:
            x = torch.where(torch.isnan(x), self.fill, x)
        if self.standardizes:
            x = (x - self.mean) / self.scale  # the same two float32 operations as Preprocessor.inputs
        z = self.net(x)
        task = TASKS[self.task]
        if task.classes and not task.one_output:  # softmax over one logit per class
            return torch.softmax(z, dim=1)
        if task.classes:  # one logit: the second class's
            p1 = torch.sigmoid(z[:, 0])
            return torch.stack([1 - p1, p1], dim=1)
        y = z[:, 0].double()
        return y * self.target_scale + self.target_mean if self.unscales else y


# ---------------------------------------------------------------------------------------------- the error bound


def logit_bound(model: nn.Sequential, x: np.ndarray) -> np.ndarray:
    """Per row, a bound on how far two correct float32 implementations of the network can disagree on a logit.

    Forward error analysis (Higham, Accuracy and Stability of Numerical Algorithms, §3.1): a dot product of K
    terms plus a bias, summed in ANY order (blocked, pairwise, with FMA), is off by at most γ(K+1)·Σ|w||h| with
    γ(n) = n·u/(1 - n·u), u = 2⁻²⁴. An error already in h passes through |W|, and through an activation scaled
    by its Lipschitz constant (≤ 1.13 for every activation offered: GELU's steepest slope); vectorised
    transcendental kernels (tanh, exp in onnxruntime's MLAS) add a few ulp of their own, counted as 16·u·|σ|.
    Each implementation is within the bound of the exact result, so two are within twice of each other. The
    magnitudes Σ|w||h| are those of the actual rows, so the bound scales with the logits and the fan-ins and
    does not depend on the machine.
    """
    bounds = []
    for start in range(0, len(x), EVAL_BATCH):
        h = x[start : start + EVAL_BATCH].astype(np.float64)
        e = 3 * U * np.abs(h)  # (x - mean) / scale: two roundings, or three if a runtime divides by a reciprocal
        for layer in model:
            if isinstance(layer, nn.Linear):
                w, b = layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()
                # fan-in + bias, + 1 more rounding: the exporter folds a following BatchNorm into this Gemm's weights.
                k = layer.in_features + 2
                e = e @ np.abs(w).T + _gamma(k) * (np.abs(h) @ np.abs(w).T + np.abs(b))
                h = h @ w.T + b
            elif isinstance(layer, nn.BatchNorm1d):
                var, mu = layer.running_var, layer.running_mean
                assert var is not None and mu is not None  # the model's BatchNorm always tracks running statistics
                s = (layer.weight / torch.sqrt(var + layer.eps)).detach().double().numpy()
                shift = layer.bias.detach().double().numpy() - mu.detach().double().numpy() * s
                e = e * np.abs(s) + _gamma(3) * (np.abs(h * s) + np.abs(shift))
                h = h * s + shift
            elif isinstance(layer, nn.Dropout):
                continue
            else:
                with torch.no_grad():
                    h = layer(torch.from_numpy(h)).numpy()
                e = 1.13 * e + 16 * U * np.abs(h)
        bounds.append(2 * e.max(axis=1))
    return np.concatenate(bounds) if bounds else np.zeros(0)


def _gamma(n: int) -> float:
    return n * U / (1 - n * U)


def output_tolerance(task: str, prep: Preprocessor, logit: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The logit bound carried through the output head, per row, in the output's own units.

    Softmax: |∂p_i/∂z|₁ = 2·p_i·(1-p_i) ≤ 1/2; sigmoid's slope ≤ 1/4. The float32 head itself (exp, sum,
    divide, 1 - p) adds a few u per probability, counted as (classes + 8)·u since probabilities are ≤ 1.
    Regression: the logit bound times the target scale, plus float64 rounding of the unscaling.
    """
    if not TASKS[task].classes:
        scale = prep.target_scale if prep.target_mean is not None else 1.0
        return logit * scale + 4 * 2.0**-53 * np.abs(reference)
    slope = 0.25 if TASKS[task].one_output else 0.5  # sigmoid, softmax
    return slope * logit + (reference.shape[1] + 8) * U


# ---------------------------------------------------------------------------------------------- the rows the gate runs


def parity_rows(config, prep: Preprocessor, data: Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(raw graph inputs, inputs as `mlp predict` prepares them, where they came from)."""
    if data is not None:
        frame = load_for_model(prep, Path(data), target_required=False)
        raw = raw_inputs(prep, frame).copy()  # prep.inputs below works in place on the frame's memory
        return raw, prep.inputs(frame), str(data)
    if config.data.streaming:
        return _streamed_rows(config, prep)
    try:
        train_frame, test_frame, _ = read_frames(config)
        parts = split_frames(config, train_frame, test_frame)
    except DataError as exc:
        raise ExportError(f"cannot re-read the run's test rows for the parity check ({exc}); pass --data FILE") from None
    for role in ("test", "val", "train"):
        rows = parts.get(role)
        if rows is not None and len(rows):
            raw = raw_inputs(prep, rows).copy()
            return raw, prep.inputs(rows), f"the run's {role} split ({len(rows):,} rows)"
    raise ExportError("the run has no rows to check parity on; pass --data FILE")


def _streamed_rows(config, prep: Preprocessor) -> tuple[np.ndarray, np.ndarray, str]:
    """A streaming run's test rows come back scaled; undo the scaling to get inputs the graph can take."""
    from mlp_cli.evaluate import test_split

    try:
        split = test_split(config, prep)
        chunks, have = [], 0
        for x, _ in split.batches(EVAL_BATCH):
            chunks.append(x.numpy())
            have += len(x)
            if have >= STREAM_ROWS:
                break
    except DataError as exc:
        raise ExportError(f"cannot re-read the run's test rows for the parity check ({exc}); pass --data FILE") from None
    if not chunks:
        raise ExportError("the streaming run has no test rows to check parity on; pass --data FILE")
    x = np.concatenate(chunks)[:STREAM_ROWS]
    if prep.mean is None:
        return x.copy(), x, f"the run's streamed test split (first {len(x):,} rows)"
    mean, scale = np.asarray(prep.mean, dtype=np.float32), np.asarray(prep.scale, dtype=np.float32)
    raw = (x.astype(np.float64) * scale + mean).astype(np.float32)
    return raw, (raw - mean) / scale, f"the run's streamed test split (first {len(x):,} rows)"


# ---------------------------------------------------------------------------------------------- export


def onnx_proto(module: Exportable, n_inputs: int):
    """The ModelProto torch's recommended exporter (torch.export + onnxscript) makes, batch dimension dynamic."""
    example = torch.zeros(2, n_inputs)  # torch.export specialises a size of 1; two rows keep the batch symbolic
    batch = torch.export.Dim("batch", min=1)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping ..." is not the user's concern
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nor is the exporter's deprecation chatter
            program = torch.onnx.export(
                module, (example,), dynamo=True, dynamic_shapes={"features": {0: batch}},
                input_names=[INPUT], output_names=[output_name(module.task)], external_data=False, verbose=False,
            )
    finally:
        quiet.setLevel(level)
    assert program is not None  # returned whenever no file name is given
    return program.model_proto


def check_output(checkpoint_path: Path, output: Path | None, data: Path | None = None) -> Path:
    """files.check_output for the model and its report (not an input, not a folder), plus export's own rules: .onnx,
    an existing, writable folder. Returns the model's path."""
    output = Path(output) if output is not None else checkpoint_path.parent / "model.onnx"
    if output.is_dir():
        output = output / "model.onnx"
    if output.suffix.lower() != ".onnx":
        raise ExportError(f"{output}: the model's file name must end in .onnx (mlp predict tells models apart by it)")
    for path in (output, report_path(output)):
        files.check_output(path, inputs=[checkpoint_path, data])
    if not output.parent.is_dir():
        raise ExportError(f"{output}: folder {output.parent} does not exist")
    if not os.access(output.parent, os.W_OK | os.X_OK):
        raise ExportError(f"{output}: cannot write into folder {output.parent} (no permission)")
    return output


def export_model(checkpoint_path: str | Path, output: str | Path | None = None, data: str | Path | None = None) -> dict:
    """Export, prove parity, then move the file into place and write `<name>.export.json`; returns that report.

    Nothing is left at `output` (or beside it) when any step fails or is interrupted.
    """
    onnx = require("onnx")
    require("onnxscript")
    ort = require("onnxruntime")
    started = time.perf_counter()
    checkpoint_path = Path(checkpoint_path)
    output = check_output(checkpoint_path, Path(output) if output is not None else None, Path(data) if data is not None else None)
    stored = checkpoint.load(checkpoint_path)
    config, model, prep = checkpoint.restore(stored, checkpoint_path)
    raw, prepared, source = parity_rows(config, prep, Path(data) if data is not None else None)

    proto = onnx_proto(Exportable(model, prep).eval(), prep.n_inputs)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    metadata = {
        "mlp.features": json.dumps(prep.feature_names),
        "mlp.columns": json.dumps(prep.features),
        "mlp.categorical": json.dumps(prep.categorical),
        "mlp.labels": json.dumps(prep.labels),
        "mlp.task": prep.task,
        "mlp.target": prep.target or "",
        "mlp.missing": prep.missing,
        "mlp.version": __version__,
        "mlp.torch": str(torch.__version__),
        "mlp.opset": str(opset),
        "mlp.preprocessor": json.dumps(prep.to_dict()),
    }
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = (
        f"mlp {prep.task} model. Input {INPUT!r}: float32 [batch, {prep.n_inputs}], the columns of mlp.features in "
        f"order, raw (not standardized); categorical columns as one 0/1 input per category (name=category)"
        + ("; missing numeric values as NaN, imputed in the graph" if prep.impute else "")
        + f". Output {output_name(prep.task)!r}: "
        + ("float64 [batch] in target units." if not TASKS[prep.task].classes else "float32 [batch, classes], classes as in mlp.labels.")
    )
    blob = proto.SerializeToString()

    with files.written_beside(output, suffix=".onnx") as tmp:
        try:
            tmp.write_bytes(blob)
        except OSError as exc:
            raise ExportError(f"could not write {output}: {exc.strerror or exc}; nothing written") from None
        # Read the file back as a consumer would: its opset, and proof that every weight is inside it.
        written = onnx.load(str(tmp), load_external_data=False)
        external = [t.name for t in written.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        if external:
            raise ExportError(f"the exported graph keeps {len(external)} tensors outside the file; nothing written")
        file_opset = next(o.version for o in written.opset_import if o.domain in ("", "ai.onnx"))
        gate = parity(OnnxModel(str(tmp)), model, prep, raw, prepared)
        if not gate["passed"]:
            raise ExportError(f"onnxruntime disagrees with torch, so nothing was written: {gate['verdict']}")
    report = {
        "model": str(output),
        "bytes": len(blob),  # the written file; a FIFO or device has no size to stat
        "checkpoint": str(checkpoint_path),
        "task": prep.task,
        "inputs": prep.n_inputs,
        "input_names": prep.feature_names,
        "output": output_name(prep.task),
        "opset": file_opset,
        "torch": str(torch.__version__),
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "mlp": __version__,
        "rows": len(raw),
        "rows_from": source,
        **gate,
        "seconds": round(time.perf_counter() - started, 2),
    }
    try:
        write_text(report_path(output), json.dumps(report, indent=2) + "\n")
    except MLPError:
        output.unlink(missing_ok=True)  # a model without its parity figures is not what was promised
        raise
    return report


def report_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.stem + ".export.json")


# ---------------------------------------------------------------------------------------------- the gate


@torch.inference_mode()
def parity(session: OnnxModel, model: nn.Sequential, prep: Preprocessor, raw: np.ndarray, prepared: np.ndarray) -> dict:
    """onnxruntime on raw rows against torch on the rows `mlp predict` prepares, at batch sizes 1, 7 and all.

    Fails on any value beyond its derived tolerance and on any differing argmax (a different predicted class).
    """
    task = prep.task
    logits = torch.cat([model_outputs(model, torch.from_numpy(prepared[s : s + EVAL_BATCH]), task) for s in range(0, len(prepared), EVAL_BATCH)])
    reference = output_values(task, prep, logits.float())
    tolerance = output_tolerance(task, prep, logit_bound(model, prepared), reference)
    runs = {"all": session.run(raw, batch=max(len(raw), 1))}
    small = min(len(raw), SMALL_BATCH_ROWS)
    for size in PARITY_BATCHES:
        runs[str(size)] = session.run(raw[:small], batch=size)
    figures, problems = {}, []
    for name, got in runs.items():
        want, tol = reference[: len(got)], tolerance[: len(got)]
        diff = np.abs(got.astype(np.float64) - want)
        per_row = diff.max(axis=1) if diff.ndim == 2 else diff
        bad = ~(per_row <= tol)  # NaN counts as bad
        entry = {
            "rows": len(got),
            "max_abs_diff": float(np.nanmax(per_row)) if len(per_row) else 0.0,
            "max_diff_over_tolerance": float(np.nanmax(per_row / tol)) if len(per_row) else 0.0,
            "rows_beyond_tolerance": int(bad.sum()),
        }
        if TASKS[task].classes:
            flips = int((got.argmax(axis=1) != want.argmax(axis=1)).sum())
            entry["argmax_mismatches"] = flips
            if flips:
                problems.append(f"batch {name}: {flips} rows predict another class")
        if bad.any():
            problems.append(
                f"batch {name}: {int(bad.sum())} of {len(got)} rows differ beyond tolerance "
                f"(max |diff| {entry['max_abs_diff']:.3g}, {entry['max_diff_over_tolerance']:.3g}× the tolerance)"
            )
        figures[name] = entry
    return {
        "passed": not problems,
        "verdict": "; ".join(problems) if problems else "equal within tolerance at every batch size, same argmax",
        "tolerance": {
            "max": float(tolerance.max()) if len(tolerance) else 0.0,
            "median": float(np.median(tolerance)) if len(tolerance) else 0.0,
            "rule": "per row: twice the float32 forward-error bound of the network on that row (gamma(fan-in+1)·Σ|w||h| "
            "per layer, carried through |W| and activations), through the output head",
        },
        "batches": figures,
    }
