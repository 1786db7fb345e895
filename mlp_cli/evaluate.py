"""Using a trained model: metrics on a split or file (`mlp eval`) and predictions in the user's labels (`mlp predict`)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from mlp_cli import checkpoint, predictions
from mlp_cli.components import loss_function
from mlp_cli.config import Config
from mlp_cli.data import Preprocessor, Split, load_for_model, read_frames, split_frames, to_split
from mlp_cli.device import resolve_device
from mlp_cli.metrics import Accumulator
from mlp_cli.tasks import TASKS

EVAL_BATCH = 65536  # rows per forward pass when nothing needs gradients: on a GPU, and the most on a CPU
CACHE_PER_THREAD = 2 << 20  # bytes of one layer's activations per CPU thread kept in cache (a core's L2 is 1-2 MiB)
MIN_EVAL_ROWS = 256


def inference_rows(model: torch.nn.Module) -> int:
    """Rows per forward pass when nothing needs gradients.

    On a CPU, as many as keep the widest layer's activations within CACHE_PER_THREAD per thread: a 65,536-row pass
    of a 54-256-256-7 net writes 64 MiB per layer to memory and reads it back, and runs 2.4x slower on 2 threads than
    2,048-row passes (`python benchmarks/bench.py --only levers`, lever 11). A power of two in [256, EVAL_BATCH].
    """
    device = next(model.parameters()).device
    if device.type != "cpu":
        return EVAL_BATCH
    widest = max((max(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)), default=1)
    rows = torch.get_num_threads() * CACHE_PER_THREAD // (4 * widest)
    return max(MIN_EVAL_ROWS, min(EVAL_BATCH, 1 << max(rows, 1).bit_length() - 1))


def model_outputs(model: torch.nn.Module, x: torch.Tensor, task: str) -> torch.Tensor:
    out = model(x)
    return TASKS[task].squeeze(out)


def autocast(device: torch.device, precision: str):
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def evaluate_split(
    model: torch.nn.Module, split: Split, config: Config, prep: Preprocessor, loss_fn=None, precision: str = "fp32",
    accumulator: Accumulator | None = None,
) -> Accumulator:
    """Sums for one split, batch by batch on the model's device; the caller reads `.result()` once."""
    device = next(model.parameters()).device
    loss_fn = loss_fn or loss_function(config.loss_name)
    acc = accumulator or Accumulator.for_task(config.task, prep, device)
    was_training = model.training
    model.eval()
    with autocast(device, precision):
        for x, y in split.batches(inference_rows(model)):
            out = model_outputs(model, x, config.task).float()
            acc.update(out, y, loss_fn(out, y))
    model.train(was_training)
    return acc


def load_checkpoint_model(path: str | Path, device: str = "cpu"):
    data = checkpoint.load(path)
    config, model, prep = checkpoint.restore(data, path)
    target = resolve_device(device)
    return data, config, model.to(target), prep


def evaluate_checkpoint(path: str | Path, data_path: str | Path | None = None, device: str = "cpu") -> tuple[dict, str]:
    """Metrics of a checkpoint on a file, or on the test split its run used (rebuilt from the stored config)."""
    _, config, model, prep = load_checkpoint_model(path, device)
    if data_path is None:
        split = test_split(config, prep)
    else:
        frame = load_for_model(prep, Path(data_path), target_required=True)
        split = to_split(prep, frame)
    split = split.to(next(model.parameters()).device)
    metrics = evaluate_split(model, split, config, prep, precision=config.train.precision).result(prep.labels)
    return metrics, config.task


def test_split(config: Config, prep: Preprocessor) -> Split:
    """The run's test rows, re-read and re-split with the stored seed, transformed by the stored preprocessor."""
    if config.data.streaming:
        from mlp_cli.data import streaming_split

        return streaming_split(config, prep, "test")
    train_frame, test_frame, _ = read_frames(config)
    return to_split(prep, split_frames(config, train_frame, test_frame)["test"])


@torch.inference_mode()
def predict(path: str | Path, data_path: str | Path, device: str = "cpu"):
    """A pyarrow Table of predictions with one row per input row, in input order (null where a row was dropped)."""
    _, config, model, prep = load_checkpoint_model(path, device)
    frame = load_for_model(prep, Path(data_path), target_required=False)
    x = torch.from_numpy(prep.inputs(frame))
    target_device = next(model.parameters()).device
    outputs, rows = [], inference_rows(model)
    with autocast(target_device, config.train.precision):
        for start in range(0, len(x), rows):
            outputs.append(model_outputs(model, x[start : start + rows].to(target_device), config.task).float().cpu())
    out = torch.cat(outputs) if outputs else torch.empty(0)
    return prediction_table(config.task, prep, out, frame.rows, frame.n_source)


def prediction_table(task: str, prep: Preprocessor, out: torch.Tensor, rows: np.ndarray, n_source: int):
    """The model's raw outputs as the shared prediction table."""
    return predictions.prediction_table(task, prep.labels, output_values(task, prep, out), rows, n_source)


def output_values(task: str, prep: Preprocessor, out: torch.Tensor) -> np.ndarray:
    """Raw outputs to probabilities [rows, classes] (binary: two columns) or target units, in float64."""
    probabilities = TASKS[task].probabilities
    if probabilities is None:
        return prep.unscale_target(out.double()).numpy()
    return probabilities(out).numpy()


def predictions_csv(path: str | Path, data_path: str | Path, device: str = "cpu") -> bytes:
    """Predictions as CSV bytes, one line per input row in input order; rows dropped for missing values stay blank."""
    return predictions.csv_bytes(predict(path, data_path, device))
