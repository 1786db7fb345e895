"""backprop.HandStep: the same loss and gradients as autograd to the last bit, whole runs with the same weights, and
autograd kept for everything it does not cover."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from mlp_cli.backprop import HandStep
from mlp_cli.tasks import TASKS


def net(activation: type, widths=(6, 16, 16, 3), seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers[:-1])


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Identity])
@pytest.mark.parametrize("task,loss_fn", [("multiclass", nn.CrossEntropyLoss(reduction="sum")), ("regression", nn.MSELoss(reduction="sum"))])
@pytest.mark.parametrize("rows", [1, 7, 128])
def test_gradients_and_loss_equal_autograds_bit_for_bit(activation, task, loss_fn, rows):
    model = net(activation, (6, 16, 16, 3 if task == "multiclass" else 1))
    generator = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 6, generator=generator)
    y = torch.randint(0, 3, (rows,), generator=generator) if task == "multiclass" else torch.randn(rows, generator=generator)
    hand = HandStep.for_model(model, loss_fn, TASKS[task].squeeze)
    assert hand is not None
    seed = torch.tensor(1.0 / rows)
    assert hand.matches_autograd(model, loss_fn, x, y, seed)
    assert all(p.grad is None for p in model.parameters())
    grads, loss = hand(x, y, seed)
    assert [g.shape for g in grads] == [p.shape for p in model.parameters()]


@pytest.mark.parametrize("model,loss_fn", [
    (nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)), nn.CrossEntropyLoss(reduction="sum")),
    (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 2)), nn.CrossEntropyLoss(reduction="sum")),
    (nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(), nn.Linear(8, 2)), nn.CrossEntropyLoss(reduction="sum")),
    (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)), nn.BCEWithLogitsLoss(reduction="sum")),
    (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)), nn.HuberLoss(reduction="sum")),
    (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.1)),
    (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), nn.CrossEntropyLoss(reduction="mean")),
    (nn.Sequential(nn.Linear(4, 8, bias=False), nn.ReLU(), nn.Linear(8, 2)), nn.CrossEntropyLoss(reduction="sum")),
])
def test_anything_else_keeps_autograd(model, loss_fn):
    assert HandStep.for_model(model, loss_fn, TASKS["multiclass"].squeeze) is None


def test_a_hooked_model_keeps_autograd():
    model = net(nn.ReLU)
    model[0].register_forward_hook(lambda module, args, out: None)
    assert HandStep.for_model(model, nn.CrossEntropyLoss(reduction="sum"), TASKS["multiclass"].squeeze) is None


@pytest.mark.parametrize("fixture,overrides", [
    ("multiclass_config", ["model.activation=tanh"]),
    ("multiclass_config", ["model.hidden=[16,8]"]),
    ("regression_config", []),
])
def test_a_run_trains_the_same_weights_with_and_without_it(fixture, overrides, request, tmp_path):
    from mlp_cli.config import load_config
    from mlp_cli.train import Levers, Trainer

    config = load_config(request.getfixturevalue(fixture), ["train.epochs=2", *overrides])
    runs = []
    for levers in (Levers(), Levers(hand_backward=False)):
        trainer = Trainer(config, tmp_path / str(len(runs)), levers=levers)
        summary = trainer.run()
        runs.append((trainer, summary))
    (hand, with_hand), (_, without) = runs
    assert hand.hand_checked is True  # the first-batch check passed, so the hand-written step trained this run
    assert with_hand["train"] == without["train"] and with_hand["test"] == without["test"]
    weights = [torch.load(tmp_path / str(i) / "best.pt", weights_only=True)["model_state"] for i in range(2)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_failed_first_batch_check_keeps_autograd_for_the_run(multiclass_config, tmp_path, monkeypatch):
    from mlp_cli.config import load_config
    from mlp_cli.train import Trainer

    monkeypatch.setattr(HandStep, "matches_autograd", lambda self, *args: False)
    monkeypatch.setattr(HandStep, "__call__", lambda self, *args: pytest.fail("HandStep used after a failed check"))
    trainer = Trainer(load_config(multiclass_config, ["train.epochs=2"]), tmp_path / "run")
    trainer.run()
    assert trainer.hand_checked is False
