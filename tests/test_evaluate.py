"""mlp_cli.evaluate's batching: cache-sized forward passes on a CPU, whole 65,536-row passes elsewhere, and figures
that do not depend on the pass size beyond float32 summation order."""

from __future__ import annotations

import pytest
import torch

from mlp_cli import evaluate


def net(*widths: int) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for a, b in zip(widths, widths[1:], strict=False):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


@pytest.mark.parametrize("widths,threads,rows", [
    ((54, 256, 256, 7), 1, 2048),  # 2 MiB / (4 B x 256)
    ((54, 256, 256, 7), 2, 4096),
    ((36, 64, 64, 6), 1, 8192),
    ((36, 300, 6), 1, 1024),  # 1747.6 rounds down to a power of two
    ((8, 4, 2), 2, evaluate.EVAL_BATCH),  # capped
    ((4, 100_000, 2), 1, evaluate.MIN_EVAL_ROWS),  # floored
])
def test_cpu_passes_keep_the_widest_layer_in_cache(widths, threads, rows):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert evaluate.inference_rows(net(*widths)) == rows
    finally:
        torch.set_num_threads(before)


def test_other_devices_take_whole_passes():
    assert evaluate.inference_rows(net(54, 256, 7).to("meta")) == evaluate.EVAL_BATCH


def test_the_pass_size_changes_no_figure_beyond_summation_order(multiclass_config, monkeypatch):
    from mlp_cli.config import load_config
    from mlp_cli.data import load_dataset

    config = load_config(multiclass_config)
    data = load_dataset(config)
    torch.manual_seed(0)
    model = net(data.n_inputs, 32, data.n_outputs)
    figures = []
    for size in (7, 4096):
        monkeypatch.setattr(evaluate, "inference_rows", lambda model, size=size: size)
        figures.append(evaluate.evaluate_split(model, data.train, config, data.prep).result(data.prep.labels))
    small, whole = figures
    with torch.inference_mode():
        top2 = model(data.train.x).topk(2, dim=1).values
    # Per-row outputs may differ in the last bits between pass sizes (GEMM blocking); a class can flip only where
    # the top two logits are that close, which this seed's model never has (checked, not assumed).
    assert (top2[:, 0] - top2[:, 1]).min() > 1e-4
    assert {k: v for k, v in small.items() if k != "loss"} == {k: v for k, v in whole.items() if k != "loss"}
    # The loss is a float64 sum of per-pass float32 sums: the pass size reorders float32 additions of n terms,
    # each within n * 2^-24 of its exact value relative to the sum of absolute terms (all positive here).
    n = len(data.train)
    assert small["loss"] == pytest.approx(whole["loss"], rel=n * 2**-24)
