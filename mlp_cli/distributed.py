"""Data-parallel training through torch.distributed: this process's rank, its share of each batch, torchrun hand-off."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import torch


@dataclass
class World:
    """This process's place in a data-parallel job (size 1 when alone)."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.size > 1:
            import torch.distributed as dist

            dist.all_reduce(tensor)
        return tensor

    def agree(self, flag: bool) -> bool:
        """True on every rank if it is true on any."""
        if self.size == 1:
            return flag
        import torch.distributed as dist

        vote = torch.tensor([1 if flag else 0])
        dist.all_reduce(vote, op=dist.ReduceOp.MAX)
        return bool(vote.item())

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def shard_bounds(count: int, world: World) -> tuple[int, int]:
    """This rank's contiguous share [lo, hi) of `count` rows; shares differ by at most one row, none repeat."""
    base, extra = divmod(count, world.size)
    lo = world.rank * base + min(world.rank, extra)
    return lo, lo + base + (1 if world.rank < extra else 0)


def epoch_plan(n: int, batch_size: int, world: World) -> list[tuple[int, int, int]]:
    """Per step: (global rows in the batch, start, end) of this rank's rows in its gathered epoch slice."""
    plan, offset = [], 0
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        lo, hi = shard_bounds(count, world)
        plan.append((count, offset, offset + hi - lo))
        offset += hi - lo
    return plan


def local_positions(n: int, batch_size: int, world: World) -> torch.Tensor | None:
    """Positions in the epoch permutation that this rank trains on, in step order; None means all of them."""
    if world.size == 1:
        return None
    parts = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        lo, hi = shard_bounds(count, world)
        parts.append(torch.arange(start + lo, start + hi))
    return torch.cat(parts)


def world_from_env(config) -> World:
    """A World for this process: alone, or a rank of a torchrun job (RANK/WORLD_SIZE set by torchrun)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch.distributed as dist

    from mlp_cli.device import resolve_device

    device = resolve_device(config.train.device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return World(dist.get_world_size(), dist.get_rank(), local_rank)



def launch(argv: list[str], nproc: int) -> int:
    """Re-run this command under torchrun's own launcher with `nproc` processes; returns its exit code."""
    args = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if arg.startswith("--nproc="):
            continue
        args.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "mlp_cli", *args]
    child = subprocess.Popen(command)
    # Ctrl-C reaches the whole process group, torchrun and its workers included; the workers save last.pt and
    # exit, torchrun reports, and this process only waits and forwards SIGTERM (which does not reach the group).
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signal.SIGTERM)),
    }
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
