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
            for p, gi in zip(params, g, strict=True):
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
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
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
    for ours, theirs in zip(trainer.model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_fast_step_self_check_leaves_the_global_rng_alone(monkeypatch):
    monkeypatch.setattr(components, "_FAST_STEP_OK", None)
    before = torch.get_rng_state()
    assert components._fast_step_matches_torch()
    assert torch.equal(before, torch.get_rng_state())


def test_a_callback_can_stop_training_and_the_run_ends_cleanly(multiclass_config, tmp_path):
    """A tuner's pruning: on_epoch sees the validation metric and returns True; the run folder is complete."""
    from mlp_cli.config import load_config
    from mlp_cli.train import Callback, Trainer

    class Prune(Callback):
        def __init__(self):
            self.seen, self.messages = [], []

        def on_epoch(self, report):
            self.seen.append((report.epoch, report.val[report.main_metric]))
            return report.epoch == 2

        def on_message(self, text):
            self.messages.append(text)

    config = load_config(multiclass_config)
    prune = Prune()
    summary = Trainer(config, callback=prune).run()
    assert [epoch for epoch, _ in prune.seen] == [1, 2] and config.train.epochs == 6
    assert summary["epochs_run"] == 2 and summary["stopped_early"]
    assert any("a callback asked to stop" in m for m in prune.messages)
    run = tmp_path / "run"
    assert all((run / name).exists() for name in ("config.yaml", "metrics.csv", "best.pt", "last.pt", "summary.json"))
    assert len((run / "metrics.csv").read_text().splitlines()) == 3
    assert torch.load(run / "last.pt", weights_only=True)["train_state"]["epoch"] == 2


def test_levers_off_train_the_same_weights(multiclass_config, tmp_path):
    """fast_step and fast_forward are exact shortcuts; the benchmark switches them off through Levers, not the env."""
    from mlp_cli.config import load_config
    from mlp_cli.train import Levers, Trainer

    config = load_config(multiclass_config, ["train.epochs=1"])
    weights = []
    for levers in (Levers(), Levers(fast_step=False, fast_forward=False)):
        trainer = Trainer(config, tmp_path / str(len(weights)), levers=levers)
        trainer.setup()
        trainer.train_epoch(1)
        weights.append(trainer.model.state_dict())
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    slow = Trainer(config, tmp_path / "slow", levers=Levers(fused=False))
    slow.setup()
    assert not slow.optimizer.param_groups[0]["fused"]


def test_a_stop_asked_inside_composed_callbacks_still_stops_and_every_callback_hears_the_epoch(multiclass_config):
    """Trackers are composed with the reporter (tracking.attach): the composite must pass a stop request through."""
    from mlp_cli.callback import Callback, Callbacks
    from mlp_cli.config import load_config
    from mlp_cli.train import Trainer

    class Stop(Callback):
        def on_epoch(self, report):
            return report.epoch == 2

    class Listen(Callback):
        def __init__(self):
            self.epochs = []

        def on_epoch(self, report):
            self.epochs.append(report.epoch)

    listen = Listen()
    summary = Trainer(load_config(multiclass_config), callback=Callbacks([Stop(), listen])).run()
    assert summary["epochs_run"] == 2 and summary["stopped_early"]
    assert listen.epochs == [1, 2]  # the second callback heard epoch 2 although the first asked to stop there


def test_one_file_as_train_and_test_reports_the_test_figures_its_evaluation_gives(multiclass_config, tmp_path):
    """finish() evaluates a test split that is the training split once; the figures equal a real evaluation."""
    from mlp_cli.config import load_config
    from mlp_cli.train import Trainer

    base = load_config(multiclass_config)
    config = load_config(multiclass_config, [f"data.test={base.data.train}", "data.val_fraction=0", "train.epochs=2"])
    trainer = Trainer(config, tmp_path / "same")
    summary = trainer.run()
    assert trainer.data.test is trainer.data.train
    assert summary["test"] == summary["train"] and summary["test"] is not summary["train"]
    assert summary["test"] == trainer.evaluate(trainer.data.test)


def test_a_stop_while_the_data_is_still_being_read_ends_setup_with_nothing_changed(multiclass_config, tmp_path, monkeypatch):
    import threading

    from mlp_cli.config import load_config
    from mlp_cli.data import load
    from mlp_cli.data.load import ReadAhead
    from mlp_cli.errors import TrainingInterrupted
    from mlp_cli.train import StopFlag, Trainer

    release = threading.Event()
    monkeypatch.setattr(load, "prepare_arrays", lambda config: release.wait(30))
    config = load_config(multiclass_config)
    stop = StopFlag()
    stop.set(2)  # SIGINT, as the handler records it
    trainer = Trainer(config, tmp_path / "run", read_ahead=ReadAhead.start(config), stop=stop)
    with pytest.raises(TrainingInterrupted, match="SIGINT received before training started; nothing was changed"):
        trainer.setup()
    release.set()
    assert not (tmp_path / "run" / "config.yaml").exists()
