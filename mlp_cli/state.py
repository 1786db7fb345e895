"""The training state that last.pt carries: written by `TrainState.to_dict`, read back by `from_dict`, one format."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class TrainState:
    """Everything that continues from one step to the next; saved in last.pt so a run resumes bit for bit."""

    epoch: int = 0  # epochs completed
    step: int = 0  # steps completed in the current epoch (mid-epoch saves)
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list = field(default_factory=list)
    epoch_generator_state: torch.Tensor | None = None  # shuffling generator at the start of the current epoch
    partial_losses: torch.Tensor | None = None
    wall_seconds: float = 0.0

    def to_dict(self, *, optimizer, scheduler, generator: torch.Generator, device: torch.device,
                best_state: dict | None, elapsed: float) -> dict:
        """last.pt's `train_state`: this state plus the optimizer, scheduler, RNGs and best weights it goes on with."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": pack_history(self.history),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
                "generator": generator.get_state(),
                "epoch_generator": self.epoch_generator_state,
            },
            "partial_losses": self.partial_losses,
            "best_state": {k: v.detach().cpu().clone() for k, v in best_state.items()} if best_state is not None else None,
            "wall_seconds": self.wall_seconds + elapsed,
        }

    @classmethod
    def from_dict(cls, stored: dict, *, optimizer, scheduler, generator: torch.Generator) -> tuple[TrainState, dict | None]:
        """The state `to_dict` wrote; loads the optimizer, scheduler and RNGs in place and returns the best weights too."""
        optimizer.load_state_dict(stored["optimizer"])
        if scheduler is not None and stored["scheduler"] is not None:
            scheduler.load_state_dict(stored["scheduler"])
        rng = stored["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        generator.set_state(rng["generator"])
        state = cls(
            epoch=stored["epoch"],
            step=stored["step"],
            best_loss=stored["best_loss"],
            best_epoch=stored["best_epoch"],
            bad_epochs=stored["bad_epochs"],
            history=unpack_history(stored["history"]),
            epoch_generator_state=rng["epoch_generator"],
            partial_losses=stored["partial_losses"],
            wall_seconds=stored["wall_seconds"],
        )
        return state, stored["best_state"]


def pack_history(history: list[dict]) -> dict:
    """Epoch rows as one float64 tensor (NaN for empty cells): cheap to save every epoch however long the run."""
    if not history:
        return {"columns": [], "values": torch.zeros(0, 0, dtype=torch.float64)}
    columns = list(history[0])
    values = [[math.nan if row[c] is None else float(row[c]) for c in columns] for row in history]
    return {"columns": columns, "values": torch.tensor(values, dtype=torch.float64)}


def unpack_history(packed: dict) -> list[dict]:
    rows: list[dict[str, Any]] = []
    for values in packed["values"].tolist():
        row: dict[str, Any] = {c: (None if math.isnan(v) else v) for c, v in zip(packed["columns"], values, strict=True)}
        row["epoch"] = int(row["epoch"])
        rows.append(row)
    return rows
