"""Choosing where to compute: the torch device, CPU thread count, and how much memory there is."""

from __future__ import annotations

import os
import re
import statistics
import time

import torch

from mlp_cli import host
from mlp_cli.errors import RunError


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; asking for a GPU that is not there is a clear error."""
    if not re.fullmatch(r"auto|cpu|cuda|cuda:\d+", name):
        raise RunError(f"device {name!r} is not one of auto, cpu, cuda, cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RunError(f"device {name} was asked for, but this torch sees no CUDA GPU (torch {torch.__version__}); use cpu or auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise RunError(f"device {name} was asked for, but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device("cuda", index)
    return torch.device(name)


def default_threads(n_params: int) -> int:
    """Threads for CPU training (benchmarks/bench.py, "levers", measures the trade-off).

    A tabular MLP's matrices are small, and OpenMP's hand-offs cost more than they save: on 2 cores, one thread
    was as fast as two up to 128-wide layers and 20-33 % slower only at 256-wide ones, while two threads became
    5-25x slower as soon as another process used a core. So: one thread for small nets or small machines, and
    half the cores (at most 8) for large nets on large machines.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if n_params < 50_000 or cores <= 2:
        return 1
    return min(cores // 2, 8)


PROBE_REPS = 3  # timed rounds per thread count (medians)
PROBE_GAIN = 0.9  # more threads must take at most 90 % of the time of fewer: OpenMP hand-offs are a risk when busy
PROBE_MIN_STEP_S = 0.002  # a 1-thread step shorter than this is all dispatch overhead: threads cannot pay


def thread_candidates(cores: int | None = None) -> list[int]:
    """1, 2, 4 and 8 threads, as far as the usable cores go."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return [n for n in (1, 2, 4, 8) if n <= cores]


def probe_threads(step, candidates: list[int], reps: int = PROBE_REPS) -> tuple[int, dict]:
    """The thread count to train with, chosen by timing `step` (a few real-sized training steps on a scratch copy
    of the model; returns tensors) at each candidate count, interleaved, medians of `reps`.

    Only counts whose `step` outputs equal the 1-thread outputs bit for bit take part: GEMM and reductions may
    split their sums differently with more threads (not here: MKL, AVX-512, the shapes of mlp's nets, but nothing
    guarantees it), and then a run's weights would depend on how busy the machine was when it started. So the
    choice changes the time only, never the results, and resume or a re-probe may pick another count.

    Cheap by design: when one thread's step takes under PROBE_MIN_STEP_S, the net is too small for threads to pay
    and no other count is tried; a count over twice as slow as the best so far (OpenMP waiting for a core another
    process holds) is dropped after one round. Returns the count and a record of the probe for summary.json.
    """
    before = torch.get_num_threads()
    first = candidates[0]
    times: dict[int, list[float]] = {n: [] for n in candidates}
    excluded: list[int] = []

    def timed(n: int):
        torch.set_num_threads(n)
        started = time.perf_counter()
        out = step()
        times[n].append(time.perf_counter() - started)
        return out

    try:
        timed(first)  # warm-up: first-call allocations
        times[first].clear()
        reference = timed(first)
        alive = [first]
        if times[first][0] >= PROBE_MIN_STEP_S:
            for n in candidates[1:]:
                out = timed(n)
                if all(torch.equal(a, b) for a, b in zip(out, reference, strict=True)):
                    alive.append(n)
                else:
                    excluded.append(n)
            for _ in range(reps - 1):
                best = min(statistics.median(times[n]) for n in alive)
                alive = [n for n in alive if n == first or statistics.median(times[n]) <= 2 * best]
                for n in alive:
                    timed(n)
    finally:
        torch.set_num_threads(before)
    medians = {n: statistics.median(t) for n, t in times.items() if t}
    chosen = first
    for n in candidates[1:]:
        if n in medians and n not in excluded and medians[n] <= PROBE_GAIN * medians[chosen]:
            chosen = n
    record = {"threads": chosen, "median_step_seconds": {str(n): round(t, 6) for n, t in medians.items()},
              "excluded_not_bit_identical": excluded}
    return chosen, record


def available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return host.available_bytes()


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PiB"
