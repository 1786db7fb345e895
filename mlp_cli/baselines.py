"""What the hidden layers add: the majority-class (or mean) predictor and the same net with no hidden layer."""

from __future__ import annotations

import torch

from mlp_cli.components import loss_function
from mlp_cli.config import Config
from mlp_cli.data import Dataset, Split
from mlp_cli.metrics import Accumulator
from mlp_cli.tasks import TASKS

LINEAR_MAX_ROWS = 200_000  # the linear fit sees at most this many training rows (a random subset beyond)


def baselines(config: Config, data: Dataset, device: torch.device) -> dict | None:
    """Test-split metrics (validation when there is no test split) of both baselines."""
    target = data.test if data.test is not None else data.val
    if target is None:
        return None
    names = (TASKS[config.task].baseline, "no_hidden")
    return {
        names[0]: constant_baseline(config, data, target),
        names[1]: linear_baseline(config, data, target, device),
    }


def _metrics(config: Config, data: Dataset, split: Split, outputs: torch.Tensor) -> dict:
    prep = data.prep
    y = split.y.to(outputs.device)
    acc = Accumulator.for_task(config.task, prep, outputs.device)
    acc.update(outputs, y, loss_function(config.loss_name)(outputs, y))
    return acc.result(prep.labels)


@torch.no_grad()
def constant_baseline(config: Config, data: Dataset, split: Split) -> dict:
    """Predict the training prior: class frequencies (logits = log-prior) or the training mean."""
    outputs = TASKS[config.task].prior(data.train.y, len(split), data.n_outputs)
    return _metrics(config, data, split, outputs.float())


def linear_baseline(config: Config, data: Dataset, split: Split, device: torch.device) -> dict:
    """Linear(n_inputs, n_outputs) with the run's loss, fitted full-batch with L-BFGS (softmax/logistic/linear regression)."""
    generator = torch.Generator().manual_seed(config.train.seed)
    x, y = data.train.x, data.train.y
    if len(x) > LINEAR_MAX_ROWS:
        pick = torch.randperm(len(x), generator=generator)[:LINEAR_MAX_ROWS].to(x.device)
        x, y = x[pick], y[pick]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        model = torch.nn.Linear(data.n_inputs, data.n_outputs).to(device)
    loss_fn = loss_function(config.loss_name)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=200, history_size=20, line_search_fn="strong_wolfe")
    decay = config.train.weight_decay

    def closure():
        optimizer.zero_grad()
        out = model(x)
        out = TASKS[config.task].squeeze(out)
        loss = loss_fn(out, y) / len(x) + 0.5 * decay * model.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        out = model(split.x)
        out = TASKS[config.task].squeeze(out)
    return _metrics(config, data, split, out)
