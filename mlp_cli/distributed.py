"""Data-parallel training through torch.distributed: this process's rank, its share of each batch, torchrun hand-off."""

from __future__ import annotations

import os
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

    def agree(self, flag: bool, device=None) -> bool:
        """True on every rank if it is true on any (`device`: where the backend wants tensors, the GPU for NCCL)."""
        if self.size == 1:
            return flag
        import torch.distributed as dist

        vote = torch.tensor([1 if flag else 0], device=device)
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


def global_batches(n: int, batch_size: int, min_rows: int = 1) -> list[tuple[int, int]]:
    """(start, rows) of each global batch; a last batch smaller than `min_rows` joins the one before it
    (BatchNorm cannot normalize a single row, so with batch_norm every rank's share needs two)."""
    batches = [(start, min(batch_size, n - start)) for start in range(0, n, batch_size)]
    if len(batches) > 1 and batches[-1][1] < min_rows:
        (start, rows), (_, tail) = batches[-2], batches.pop()
        batches[-1] = (start, rows + tail)
    return batches


def epoch_plan(n: int, batch_size: int, world: World, min_rows: int = 1) -> list[tuple[int, int, int]]:
    """Per step: (global rows in the batch, start, end) of this rank's rows in its gathered epoch slice."""
    plan, offset = [], 0
    for _, count in global_batches(n, batch_size, min_rows):
        lo, hi = shard_bounds(count, world)
        plan.append((count, offset, offset + hi - lo))
        offset += hi - lo
    return plan


def local_positions(n: int, batch_size: int, world: World, min_rows: int = 1) -> torch.Tensor | None:
    """Positions in the epoch permutation that this rank trains on, in step order; None means all of them."""
    if world.size == 1:
        return None
    parts = []
    for start, count in global_batches(n, batch_size, min_rows):
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
    """Re-run this command under torchrun's own launcher with `nproc` processes; returns the job's exit code.

    torchrun is driven in-process (its `run`, not its `main`), so a worker's failure comes back as its exit code
    after the worker's own one-line message, instead of torchrun's report of the failure with a traceback.
    """
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

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
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    # torchrun sets one OpenMP thread per worker and prints a banner saying so; setting it ourselves keeps the
    # same choice without the banner (each worker then picks its torch threads as a single process would).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "mlp_cli", *args]))
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        return failure.exitcode if failure.exitcode > 0 else 128 - failure.exitcode  # killed by signal -N
    except SignalException as exc:
        return 128 + int(exc.sigval)
    return 0
