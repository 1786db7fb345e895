"""`python -m mlp_cli` runs the CLI, which is how torchrun starts one process per rank."""

import os
import sys

from mlp_cli.cli import app, main


def run_rank() -> None:
    """One torchrun rank: the CLI, then an exit that skips the interpreter's finalization.

    After training, gloo's threads (`gloo_tcp_loop`, two `pt_gloo_runloop`) are still alive even after
    destroy_process_group: a DistributedDataParallel model that has run a backward keeps the process group
    referenced (torch 2.13; `del` and gc.collect() do not free it). If one of them drops the last
    reference to a tensor that Python has seen while the main thread is finalizing the interpreter, it must take
    the GIL; Python then ends that thread with pthread_exit, whose unwinding through a noexcept C++ destructor is
    `terminate called without an active exception` (SIGABRT, exit 134). A rank that is slow to be scheduled
    (a loaded machine) hits that window. Everything a rank writes is already closed and atomic when the command
    returns, so the rank flushes its output and leaves with os._exit: no finalization, no window.
    """
    code = 0
    try:
        app()  # not main(): its quick exit runs atexit handlers, which a rank skips too
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            code = 1
        else:
            code = exc.code or 0
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001  a real bug: show it as Python would, then leave the same way
        import traceback

        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        run_rank()
    main()
