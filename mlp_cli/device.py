"""Choosing where to compute: the torch device, CPU thread count, and how much memory there is."""

from __future__ import annotations

import os
import re

import torch

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


def available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PiB"
