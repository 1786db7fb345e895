"""The training loop's pieces: the direct fused-Adam step against torch.optim, and the loop against a hand loop."""

import pytest
import torch

from mlp_cli import components
from mlp_cli.components import fast_step


@pytest.mark.parametrize("cls,decay", [(torch.optim.Adam, 0.0), (torch.optim.Adam, 0.01), (torch.optim.AdamW, 0.01)])
def test_fast_step_is_bit_identical_to_torch_optim(cls, decay):
    torch.manual_seed(0)
    start = [torch.randn(8, 5), torch.randn(8), torch.randn(3, 8), torch.randn(3)]
    grads = [[torch.randn_like(t) for t in start] for _ in range(20)]
    final = []
    for fast in (False, True):
        params = [t.clone().requires_grad_() for t in start]
        opt = cls(params, lr=0.003, weight_decay=decay, fused=True)
        step = None
        for i, g in enumerate(grads):
            for p, gi in zip(params, g):
                p.grad = gi.clone()
            if fast and step is not None:
                step()
            else:
                opt.step()
                step = fast_step(opt) if fast else None
            if i == 9:
                opt.param_groups[0]["lr"] = 0.001  # a scheduler changing lr mid-run is seen
        final.append((params, opt.state_dict()))
    (a, sa), (b, sb) = final
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    for key in sa["state"]:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa["state"][key][name], sb["state"][key][name])


def test_fast_step_falls_back_when_not_applicable():
    params = [torch.zeros(2, requires_grad=True)]
    sgd = torch.optim.SGD(params, lr=0.1)
    assert fast_step(sgd) == sgd.step
    amsgrad = torch.optim.Adam(params, amsgrad=True, fused=True)
    params[0].grad = torch.ones(2)
    amsgrad.step()
    assert fast_step(amsgrad) == amsgrad.step
    fresh = torch.optim.Adam(params, fused=True)
    assert fast_step(fresh) == fresh.step  # no state yet


def test_fast_step_self_check_guards_the_private_kernel(monkeypatch):
    monkeypatch.setattr(components, "_FAST_STEP_OK", None)
    monkeypatch.delattr(torch, "_fused_adam_")
    params = [torch.zeros(2, requires_grad=True)]
    opt = torch.optim.AdamW(params, fused=True)
    params[0].grad = torch.ones(2)
    try:
        opt.step()
    except Exception:
        pytest.skip("this torch needs _fused_adam_ for its own fused step")
    assert fast_step(opt) == opt.step and components._FAST_STEP_OK is False


def test_one_epoch_equals_a_hand_written_loop(multiclass_config):
    """Same permutation, batches, loss and Adam: mlp's epoch is the textbook loop, only faster."""
    from mlp_cli.config import load_config
    from mlp_cli.model import build_model
    from mlp_cli.train import Trainer

    config = load_config(multiclass_config, ["model.dropout=0", "data.val_fraction=0"])
    trainer = Trainer(config, overwrite=True)
    trainer.setup()
    trainer.next_save = float("inf")
    torch.manual_seed(config.train.seed)
    model = build_model(trainer.data.n_inputs, trainer.data.n_outputs, config.model)
    model.load_state_dict(trainer.model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    generator = torch.Generator().manual_seed(config.train.seed)
    x, y = trainer.data.train.x, trainer.data.train.y
    for epoch in (1, 2):
        trainer.train_epoch(epoch)
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), config.train.batch_size):
            index = order[start : start + config.train.batch_size]
            loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
            opt.zero_grad()
            loss.backward()
            opt.step()
    for ours, theirs in zip(trainer.model.parameters(), model.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_fast_step_self_check_leaves_the_global_rng_alone(monkeypatch):
    monkeypatch.setattr(components, "_FAST_STEP_OK", None)
    before = torch.get_rng_state()
    assert components._fast_step_matches_torch()
    assert torch.equal(before, torch.get_rng_state())
