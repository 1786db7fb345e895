"""Atomic file writes (a temporary file in the same folder, flushed and fsynced, then os.replace'd into place),
and the one CSV and JSON formatting every file mlp writes goes through.

A process killed at any instant leaves either the old file or the new one, never a torn one. Temporary files
carry a recognisable prefix so the next run can remove the ones a killed process left behind.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from mlp_cli.errors import RunError

TEMP_PREFIX = ".mlp-tmp-"


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call `write(file)` on a temporary file, then move it over `path`; on failure the old `path` is untouched."""
    path = Path(path)
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_dir(path.parent)
    except OSError as exc:
        raise RunError(f"could not write {path}: {exc.strerror or exc}; the previous {path.name} (if any) is kept") from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def csv_line(cells: Iterable, digits: int = 8) -> str:
    """One CSV line, quoted where needed by the csv module; floats with `digits` significant digits, None empty."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(
        "" if v is None else (f"{v:.{digits}g}" if isinstance(v, float) else str(v)) for v in cells
    )
    return out.getvalue()


def write_csv(path: Path, columns: Iterable[str], rows: Iterable[Iterable], digits: int = 8) -> None:
    write_text(path, csv_line(columns) + "".join(csv_line(row, digits) for row in rows))


def json_safe(value):
    """NaN and infinity are not JSON; write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _fsync_dir(folder: Path) -> None:
    # The rename itself must reach the disk, or a power cut could bring back the old name.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(folder: Path) -> int:
    """Delete temporary files a killed run left behind; returns how many."""
    removed = 0
    if not folder.is_dir():
        return 0
    for stale in folder.glob(f"{TEMP_PREFIX}*"):
        try:
            stale.unlink()
            removed += 1
        except OSError:
            pass
    return removed
