"""Every file mlp writes goes through here: the output-path check, the atomic writer, the run-folder lock, and the
one CSV and JSON formatting.

The rules, for every writer (predict -o, run directories, sweep folders, plots, and commands to come):

- `check_output(path, inputs=[...])` first: an output that is one of the command's input files (data, checkpoint,
  model), through symlinks and hard links too, or that is a folder, is refused with exit 2 before any work.
- `write_atomic(path, write)` then writes. A regular file is written to a temporary file in the same folder, flushed,
  fsynced and `os.replace`d, so a process killed at any instant leaves the old file or the new one, never a torn
  one. A symlink is followed: the file it points to is replaced and the link stays a link. A FIFO or a device
  (`/dev/stdout`, `/dev/null`, a terminal) is written as a stream and never swapped for a regular file. A new file
  gets the user's umask (0666 & ~umask, not mkstemp's 0600); an overwritten file keeps its mode. Any failure,
  including the `RuntimeError` torch.save raises when the disk fills, is one `RunError` line and the old file stays.
- `written_beside(path)` is the same for a library that must write a path itself (GDAL's GeoTIFF, the ONNX file):
  it yields a temporary path beside the target, named like the others, and commits it with the same mode, symlink
  and FIFO rules when the block ends without an error; otherwise the temporary file is removed.
- Temporary files are named `.mlp-tmp-<pid>-<name>.<random>`; `remove_stale_temps` deletes only those of
  processes that no longer run, so it never takes a file another run is writing.
- `FolderLock(folder)` holds `<folder>/.mlp.lock` (fcntl.flock) while a run writes there: a second run is refused
  with exit 2 naming the pid that holds it; the kernel drops the lock when its process dies, so a stale lock file
  of a killed run is taken over. A lock is re-entrant within one process, and a child started with the holder's
  environment (torchrun ranks) inherits it through MLP_HELD_LOCKS.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, ClassVar, cast

from mlp_cli.errors import RunError

try:
    import fcntl
except ImportError:  # not on Windows: runs there are not locked
    fcntl = None  # type: ignore[assignment]  # the module or None: FolderLock checks which

TEMP_PREFIX = ".mlp-tmp-"
LOCK_NAME = ".mlp.lock"
HELD_ENV = "MLP_HELD_LOCKS"  # os.pathsep-separated lock files an ancestor process holds for us (torchrun ranks)
_TEMP_PID = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-")


def check_output(path: Path, inputs: Iterable = ()) -> Path:
    """Refuse (exit 2) an output path that is a folder or the same file as one of `inputs`; returns the path."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise RunError(f"output {path} is a folder; name a file")
    if path.exists():
        for source in inputs:
            if source is None:
                continue
            try:
                same = os.path.samefile(path, Path(source).expanduser())
            except OSError:
                continue
            if same:
                raise RunError(f"output {path} is the input file {source}; writing it would destroy it, choose another name")
    return path


def _umask() -> int:
    # /proc reads it without changing it; os.umask's set-and-restore is the fallback (briefly racy with threads).
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _Recording:
    """A file whose write errors are remembered: torch.save turns them into a RuntimeError without the reason."""

    def __init__(self, handle: IO[bytes]):
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def __getattr__(self, name):
        return getattr(self._handle, name)


def _target(path: Path) -> Path:
    """Where writing `path` lands: the end of its symlink chain (the link itself stays)."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call `write(file)` on a temporary file, then move it over `path`; on failure the old `path` is untouched.

    A FIFO or device at `path` is written directly as a stream instead."""
    path = Path(path)
    try:
        info = path.stat()  # follows links; /dev/stdout's magic link to a pipe only the kernel can follow
    except OSError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):
        _write_stream(path, write)
        return
    target = _target(path)
    mode = stat.S_IMODE(info.st_mode) if info is not None else 0o666 & ~_umask()
    tmp_name = None
    recording = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-{target.name}.", dir=target.parent)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            recording = _Recording(handle)
            write(cast(IO[bytes], recording))  # a file-like wrapper: it has every method torch.save and pyarrow call
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
        tmp_name = None
        _fsync_dir(target.parent)
    except OSError as exc:
        raise RunError(f"could not write {path}: {exc.strerror or exc}; the previous {path.name} (if any) is kept") from None
    except RuntimeError:
        if recording is None or recording.error is None:
            raise  # not a failed write: a real bug keeps its traceback
        why = recording.error.strerror or recording.error
        raise RunError(f"could not write {path}: {why}; the previous {path.name} (if any) is kept") from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


@contextmanager
def written_beside(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target's folder for a library to write; commit it over `path` on success.

    The commit keeps the old file's mode (a new file gets the umask's), follows a symlink (the link stays) and copies
    into a FIFO or device as a stream. On any exception the temporary file is removed and `path` is untouched."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError:
        info = None
    stream = info is not None and not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode)
    target = _target(path)
    folder = Path(tempfile.gettempdir()) if stream else target.parent
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-{target.name}.", suffix=suffix, dir=folder)
        os.close(fd)
    except OSError as exc:
        raise RunError(f"could not write {path}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        if stream:
            with tmp.open("rb") as source:
                _write_stream(path, lambda handle: shutil.copyfileobj(source, handle))
            return
        mode = stat.S_IMODE(info.st_mode) if info is not None else 0o666 & ~_umask()
        try:
            os.chmod(tmp, mode)
            with tmp.open("rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            raise RunError(f"could not write {path}: {exc.strerror or exc}; the previous {path.name} (if any) is kept") from None
        _fsync_dir(target.parent)
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass


def _write_stream(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    recording = None
    try:
        with open(path, "wb") as handle:
            recording = _Recording(handle)
            write(cast(IO[bytes], recording))  # a file-like wrapper: it has every method torch.save and pyarrow call
    except OSError as exc:
        raise RunError(f"could not write {path}: {exc.strerror or exc}") from None
    except RuntimeError:
        if recording is None or recording.error is None:
            raise
        raise RunError(f"could not write {path}: {recording.error.strerror or recording.error}") from None


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


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(folder: Path) -> int:
    """Delete temporary files of processes that no longer run (a killed save); returns how many."""
    removed = 0
    if not folder.is_dir():
        return 0
    for stale in folder.glob(f"{TEMP_PREFIX}*"):
        match = _TEMP_PID.match(stale.name)
        if match and _alive(int(match.group(1))):
            continue  # another process is writing it right now
        try:
            stale.unlink()
            removed += 1
        except OSError:
            pass
    return removed


class FolderLock:
    """`<folder>/.mlp.lock`, held with fcntl.flock while a run writes into `folder`; `release()` removes it."""

    _held: ClassVar[dict[str, FolderLock]] = {}  # lock file -> the holder in this process (the lock is re-entrant)

    def __init__(self, folder: Path, what: str = "run"):
        self.folder = Path(folder)
        self.what = what
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None
        self.count = 0
        self.created_folder = False
        self._holder: FolderLock | None = None  # the object that holds the lock in this process (self or an outer one)

    def acquire(self) -> FolderLock:
        key = os.path.realpath(self.path) if self.folder.exists() else os.path.abspath(self.path)
        holder = FolderLock._held.get(key)
        if holder is not None:
            holder.count += 1
            self._holder = holder
            return holder
        if key in os.environ.get(HELD_ENV, "").split(os.pathsep) or fcntl is None:
            return self  # a torchrun rank: the launching process holds it for the whole job
        if self.folder.exists() and not self.folder.is_dir():
            raise RunError(f"output_dir {self.folder} is a file, not a folder")
        if not self.folder.exists():
            try:
                self.folder.mkdir(parents=True)
            except OSError as exc:
                raise RunError(f"cannot create output_dir {self.folder}: {exc.strerror or exc}") from None
            self.created_folder = True
        try:
            key = os.path.realpath(self.path)
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise RunError(
                        f"{self.folder} is in use by another mlp {self.what} (pid {self._holder_pid()}); wait for it to "
                        f"finish or choose another output_dir"
                    ) from None
                # The holder before us may have removed the file between our open and our lock: lock the new one.
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:
            self._undo_folder()
            raise RunError(f"cannot write in {self.folder}: {exc.strerror or exc}") from None
        self.fd, self.count, self._holder = fd, 1, self
        FolderLock._held[key] = self
        return self

    def _holder_pid(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def _undo_folder(self) -> None:
        if self.created_folder:
            try:
                self.folder.rmdir()  # only if still empty: we made it, nothing was written
            except OSError:
                pass
            self.created_folder = False

    def release(self, *, failed: bool = False) -> None:
        """Drop the lock (the outermost release removes the file); `failed` also removes a folder we made, if empty."""
        if self._holder is not None and self._holder is not self:
            holder, self._holder = self._holder, None
            holder.release(failed=False)
            return
        if self.fd is None:
            return
        self.count -= 1
        if self.count > 0:
            return
        FolderLock._held.pop(os.path.realpath(self.path), None)
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
        if failed:
            self._undo_folder()

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, kind, value, tb) -> None:
        self.release(failed=kind is not None)


def file_problem(path: Path, folder_hint: str) -> str | None:
    """Why `path` cannot be a model file mlp reads (missing, a folder, empty), or None; the caller raises its own error."""
    if not path.exists():
        return "file not found"
    if path.is_dir():
        return f"it is a folder ({folder_hint})"
    if path.stat().st_size == 0:
        return "the file is empty"
    return None
