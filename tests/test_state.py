"""last.pt's training state: one format, written by TrainState.to_dict and read back by from_dict."""

from __future__ import annotations

import io

import torch

from mlp_cli.state import TrainState

# The keys of last.pt's train_state since the first release: files written before TrainState.to_dict must still resume.
FORMAT_KEYS = {"epoch", "step", "best_loss", "best_epoch", "bad_epochs", "history", "optimizer", "scheduler", "rng",
               "partial_losses", "best_state", "wall_seconds"}
RNG_KEYS = {"torch", "cuda", "generator", "epoch_generator"}


def parts(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler, torch.Generator().manual_seed(seed)


def test_to_dict_from_dict_round_trip_through_torch_save():
    model, optimizer, scheduler, generator = parts(0)
    torch.randperm(10, generator=generator)
    state = TrainState(epoch=3, step=5, best_loss=0.25, best_epoch=2, bad_epochs=1,
                       history=[{"epoch": 1, "train_loss": 0.5, "val_loss": None}, {"epoch": 2, "train_loss": 0.4, "val_loss": 0.3}],
                       epoch_generator_state=generator.get_state(), partial_losses=torch.arange(4.0), wall_seconds=7.0)
    stored = state.to_dict(optimizer=optimizer, scheduler=scheduler, generator=generator, device=torch.device("cpu"),
                           best_state=model.state_dict(), elapsed=1.5)
    assert set(stored) == FORMAT_KEYS and set(stored["rng"]) == RNG_KEYS
    buffer = io.BytesIO()
    torch.save(stored, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    expected_draw = torch.rand(3)  # the global RNG continues where it was saved
    torch.manual_seed(123)
    _, optimizer2, scheduler2, generator2 = parts(1)
    back, best = TrainState.from_dict(loaded, optimizer=optimizer2, scheduler=scheduler2, generator=generator2)
    assert back.history == state.history and back.wall_seconds == 8.5
    assert (back.epoch, back.step, back.best_loss, back.best_epoch, back.bad_epochs) == (3, 5, 0.25, 2, 1)
    assert torch.equal(back.partial_losses, state.partial_losses)
    assert torch.equal(back.epoch_generator_state, state.epoch_generator_state)
    assert torch.equal(generator2.get_state(), generator.get_state())
    assert torch.equal(torch.rand(3), expected_draw)
    assert scheduler2.state_dict() == scheduler.state_dict()
    for a, b in zip(optimizer2.state_dict()["state"].values(), optimizer.state_dict()["state"].values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(best[k], model.state_dict()[k]) for k in best)
