"""Ctrl-C and SIGTERM during training: a flag the loop checks after every step, so it can save last.pt and stop."""

from __future__ import annotations

import signal
import threading


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it after every step, saves last.pt and stops cleanly."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    def set(self, signum: int) -> None:
        self.signum = signum


class SignalHandlers:
    """Within `with`, SIGINT and SIGTERM set `flag` instead of killing the process (main thread only)."""

    def __init__(self, flag: StopFlag):
        self.flag = flag
        self.previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.flag:  # a second Ctrl-C means "now": give the default behaviour back
            signal.signal(signum, signal.SIG_DFL)
        self.flag.set(signum)

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
