"""README.md's generated blocks: the satimage training session and the figures quoted from it, run with this code.

    python docs/readme_session.py           # rerun the example, rewrite the blocks between the markers
    python docs/readme_session.py --check   # exit 1 when README.md differs from what this code prints

Each block sits between `<!-- name:begin -->` and `<!-- name:end -->`. The session block records the machine it
was made on (CPU model, torch, threads): float32 matrix products round differently on other CPUs (Intel and AMD,
AVX2 and AVX-512 take different kernels), and over dozens of epochs that changes the last digits and the epoch at
which early stopping keeps the weights. tests/test_readme.py compares everything on a machine like the recorded
one, and the CPU-independent lines (data, parameter table, row counts) everywhere.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CONFIG = "configs/satimage.yaml"
SHOWN_EPOCHS = 5  # the first epochs are printed, then "...", then the stopping line and the final tables
TIME = re.compile(r"\b\d+(\.\d+)?s\b")


def machine() -> str:
    """What decides float32 rounding here: CPU model, torch build and its CPU kernels, threads used."""
    import torch

    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})"


def run_session() -> str:
    """Stderr of `mlp train configs/satimage.yaml` in a fresh folder, epochs trimmed as the README shows them."""
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1"}
        result = subprocess.run(
            [sys.executable, "-m", "mlp_cli", "train", str(REPO / CONFIG)],
            cwd=folder, env=env, capture_output=True, text=True, timeout=900, check=False,
        )
    if result.returncode != 0:
        raise SystemExit(f"mlp train failed ({result.returncode}):\n{result.stderr}")
    lines = [line.rstrip() for line in result.stderr.splitlines()]
    epochs = [i for i, line in enumerate(lines) if line.startswith("epoch ")]
    if len(epochs) > SHOWN_EPOCHS:
        lines = lines[: epochs[SHOWN_EPOCHS]] + ["..."] + lines[epochs[-1] + 1 :]
    return "\n".join(["$ mlp train " + CONFIG, *lines]).rstrip() + "\n"


def test_accuracy(session: str) -> str:
    match = re.search(r"^accuracy\s+(\S+)", session, re.MULTILINE)
    if match is None:
        raise SystemExit("no accuracy row in the session")
    return match.group(1)


def blocks(session: str, when: str | None = None) -> dict[str, str]:
    """Text of each marked block, from one session."""
    when = when or datetime.date.today().isoformat()
    recorded = (
        f"<!-- machine: {machine()} -->\n"
        f"Recorded on {when} on {machine()}, by `python docs/readme_session.py`.\n"
        "On another CPU the last digits and the epoch that early stopping keeps may differ: float32 matrix products "
        "round differently there.\n"
    )
    return {
        "session": f"```text\n{session}```\n{recorded}",
        "satimage-accuracy": f"The satimage test accuracy, {test_accuracy(session)},",
    }


def marked(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- {re.escape(name)}:begin -->\n?)(.*?)(<!-- {re.escape(name)}:end -->)", re.DOTALL)


def rewrite(readme: str, new: dict[str, str]) -> str:
    for name, text in new.items():
        pattern = marked(name)
        if not pattern.search(readme):
            raise SystemExit(f"README.md has no block {name!r} (<!-- {name}:begin --> ... <!-- {name}:end -->)")
        readme = pattern.sub(lambda m, text=text: m.group(1) + text + m.group(3), readme, count=1)
    return readme


def block(readme: str, name: str) -> str:
    match = marked(name).search(readme)
    if match is None:
        raise SystemExit(f"README.md has no block {name!r}")
    return match.group(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is not what this code prints")
    args = parser.parse_args(argv)
    current = README.read_text(encoding="utf-8")
    updated = rewrite(current, blocks(run_session()))
    if normalize(updated) == normalize(current):
        # Only times differ: keep the recorded ones (a loaded machine's times would misstate an idle one's).
        print("README.md is current")
        return 0
    if args.check:
        print("README.md is stale: run python docs/readme_session.py")
        return 1
    from mlp_cli.files import write_text

    write_text(README, updated)  # atomic, with a temporary name of its own: two runs at once cannot mix
    print(f"wrote {README}")
    return 0


def recorded_machine(readme: str) -> str | None:
    match = re.search(r"<!-- machine: (.*?) -->", block(readme, "session"))
    return match.group(1) if match else None


THREADS = re.compile(r"(\(device \w+), \d+ threads?\)")


def normalize(text: str) -> str:
    """Wall-clock times, the recording date and the thread count vary from run to run; nothing else may. The count is
    a timed probe's choice among counts that give the same results bit for bit (device.probe_threads), so a loaded
    machine may pick another without changing a figure."""
    text = THREADS.sub(r"\1, <threads>)", TIME.sub("<time>", text))
    return re.sub(r"Recorded on \d{4}-\d\d-\d\d", "Recorded on <date>", text)


if __name__ == "__main__":
    sys.exit(main())
