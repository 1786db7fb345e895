"""What the host machine has free for a run: its available memory (torch-free, read at the moment of asking)."""

from __future__ import annotations

import os


def available_bytes() -> int | None:
    """Memory the kernel can give without swapping (MemAvailable), else free physical pages; None if unknown."""
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
