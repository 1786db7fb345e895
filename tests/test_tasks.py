"""The task table (mlp_cli.tasks): each entry's pieces agree with each other and with the loss table."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mlp_cli.components import LOSSES, loss_function
from mlp_cli.tasks import TASKS


@pytest.mark.parametrize("name", list(TASKS))
def test_default_loss_suits_the_task_and_takes_its_shapes(name):
    task = TASKS[name]
    assert name in LOSSES[task.default_loss].tasks
    labels = [0, 1, 2] if task.n_classes is None else list(range(task.n_classes))
    out = task.squeeze(torch.randn(5, task.width(labels if task.classes else None)))
    y = torch.tensor([0, 1, 1, 0, 1]).to(getattr(torch, task.target_dtype))
    assert torch.isfinite(loss_function(task.default_loss)(out, y))


@pytest.mark.parametrize("name", [n for n, t in TASKS.items() if t.classes])
def test_probabilities_and_predictions_agree(name):
    task = TASKS[name]
    width = task.width([0, 1, 2] if task.n_classes is None else list(range(task.n_classes)))
    out = task.squeeze(torch.randn(64, width, generator=torch.Generator().manual_seed(0)))
    probs = task.probabilities(out)
    # float64 probabilities of at most a few classes: their sum is 1 to within a few ulps of 1.0.
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(64, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.equal(probs.argmax(dim=1), task.predict(out))


@pytest.mark.parametrize("name", [n for n, t in TASKS.items() if t.classes])
def test_constant_baseline_predicts_the_majority_class(name):
    task = TASKS[name]
    y = torch.tensor([1, 1, 1, 0, 1]).to(getattr(torch, task.target_dtype))
    width = task.width([0, 1] if task.n_classes is None else list(range(task.n_classes)))
    assert task.predict(task.prior(y, 3, width)).tolist() == [1, 1, 1]


def test_the_table_imports_no_torch():
    code = "import sys, mlp_cli.tasks; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
