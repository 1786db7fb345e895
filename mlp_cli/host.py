"""What the host machine has free for a run: its available memory within this process's cgroup, and the torchrun
ranks that share it (torch-free, read at the moment of asking)."""

from __future__ import annotations

import os


def available_bytes() -> int | None:
    """Memory the kernel can give without swapping (MemAvailable, else free physical pages), capped by what this
    process's cgroup still allows (a container, a Slurm or Kubernetes job: the host's free memory is not theirs);
    None if unknown."""
    free = _meminfo_available()
    room = _cgroup_room()
    if free is None:
        return room
    return free if room is None else min(free, room)


def ranks_on_this_node() -> int:
    """Processes of one torchrun job on this machine (LOCAL_WORLD_SIZE), 1 when run alone."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    except ValueError:
        return 1


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


CGROUP = "/sys/fs/cgroup"
_FILES = {"v2": ("memory.max", "memory.current"), "v1": ("memory.limit_in_bytes", "memory.usage_in_bytes")}


def _cgroup_room(root: str = CGROUP, membership: str = "/proc/self/cgroup") -> int | None:
    """The least room (limit minus usage) over this process's memory cgroup and its ancestors; None when no level
    sets a limit or cgroups are not there (v2 `memory.max`/`memory.current`, v1 `memory.limit_in_bytes`/`usage`)."""
    try:
        with open(membership) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    folders = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "" and path:
            folders.append(("v2", root, path))
        elif "memory" in controllers.split(","):
            folders.append(("v1", os.path.join(root, "memory"), path))
    rooms = []
    for version, base, path in folders:
        limit_name, usage_name = _FILES[version]
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):
            folder = os.path.join(base, *parts[:depth])
            try:
                with open(os.path.join(folder, limit_name)) as handle:
                    limit = handle.read().strip()
                with open(os.path.join(folder, usage_name)) as handle:
                    usage = int(handle.read().strip())
            except (OSError, ValueError):
                continue
            if limit.isdigit() and int(limit) < 1 << 60:  # "max" (v2) or a huge number (v1) mean no limit
                rooms.append(max(0, int(limit) - usage))
    return min(rooms) if rooms else None
