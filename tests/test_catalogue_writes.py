"""The write catalogue: every path mlp writes is checked first, written without replacing what it should not, locked
against a second run, and every write failure is one line that leaves no half-written checkpoint."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlp_cli import checkpoint, files
from mlp_cli.cli import app

from conftest import REPO, blobs, write_config, write_csv

MARKUP_LABELS = ("forest [dense]", "[/]", "[bold]x", "$x^$")  # rich markup, and matplotlib mathtext that fails to parse


def invoke(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def tree(folder: Path) -> dict:
    """Every file under `folder` with its bytes' hash and mtime: equal trees mean nothing was touched."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def one_line_error(result, *words: str) -> str:
    assert result.exit_code == 2, result.output
    message = result.stderr
    assert message.startswith("error: ") and message.count("\n") == 1 and "Traceback" not in result.output, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small run on labels that look like rich markup, and its data file."""
    folder = tmp_path_factory.mktemp("writes")
    write_csv(folder / "d.csv", blobs(120, classes=MARKUP_LABELS))
    config = write_config(folder / "c.yaml", {
        "task": "multiclass",
        "data": {"train": "d.csv", "target": "label", "val_fraction": 0.2, "test_fraction": 0.2},
        "model": {"hidden": [8]},
        "train": {"epochs": 2, "batch_size": 16},
        "output_dir": str(folder / "run [red]"),
    })
    result = invoke("train", config)
    assert result.exit_code == 0, result.output
    return folder, config, result


# ---------------------------------------------------------------------------------------------- user text is literal


def test_markup_labels_and_paths_print_literally(trained):
    folder, _, result = trained
    for text in (*MARKUP_LABELS, f"mlp train → {folder / 'run [red]'}", "per class", "confusion matrix"):
        assert text in result.stderr, f"{text!r} not printed literally"
    result = invoke("eval", folder / "run [red]" / "best.pt", "--data", folder / "d.csv")
    assert result.exit_code == 0, result.output
    assert all(label in result.stdout for label in MARKUP_LABELS)
    result = invoke("plot", folder / "run [red]")
    assert result.exit_code == 0, result.output
    assert "confusion.png" in result.stdout


# ---------------------------------------------------------------------------------------------- outputs checked first


def test_symlink_output_writes_its_target_with_umask_then_kept_mode(trained, tmp_path):
    folder, _, _ = trained
    best = folder / "run [red]" / "best.pt"
    target, link = tmp_path / "target.csv", tmp_path / "link.csv"
    link.symlink_to(target)
    old = os.umask(0o027)
    try:
        assert invoke("predict", best, folder / "d.csv", "-o", link).exit_code == 0
    finally:
        os.umask(old)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().startswith("prediction,") and stat.S_IMODE(target.stat().st_mode) == 0o640
    target.chmod(0o604)
    assert invoke("predict", best, folder / "d.csv", "-o", link).exit_code == 0
    assert link.is_symlink() and stat.S_IMODE(target.stat().st_mode) == 0o604
    # A run's own files follow the umask too (mkstemp alone would make them 0600).
    assert stat.S_IMODE((folder / "run [red]" / "best.pt").stat().st_mode) == 0o666 & ~old


def test_fifo_and_device_outputs_are_streamed_not_replaced(trained, tmp_path):
    folder, _, _ = trained
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    result = invoke("predict", folder / "run [red]" / "best.pt", folder / "d.csv", "-o", fifo)
    reader.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(fifo.stat().st_mode) and received[0].count(b"\n") == 121
    assert invoke("predict", folder / "run [red]" / "best.pt", folder / "d.csv", "-o", "/dev/null").exit_code == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("which", ["data", "checkpoint", "symlink to data", "hard link to checkpoint"])
def test_an_input_as_output_is_refused(trained, tmp_path, which):
    folder, _, _ = trained
    data, best = folder / "d.csv", folder / "run [red]" / "best.pt"
    output = {"data": data, "checkpoint": best}.get(which, tmp_path / "alias")
    if which == "symlink to data":
        output.symlink_to(data)
    elif which == "hard link to checkpoint":
        os.link(best, output)
    before = tree(folder)
    one_line_error(invoke("predict", best, data, "-o", output), "is the input file")
    assert tree(folder) == before


# ---------------------------------------------------------------------------------------------- one run per folder


def test_a_second_train_is_refused_while_one_runs_and_a_killed_runs_lock_is_taken_over(tmp_path):
    write_csv(tmp_path / "d.csv", blobs(400, classes=("a", "b")))
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", {
        "task": "binary", "data": {"train": "d.csv", "target": "label"}, "model": {"hidden": [4]},
        "train": {"epochs": 100_000, "batch_size": 1, "early_stopping": 0}, "output_dir": str(run),
    })
    first = subprocess.Popen([sys.executable, "-m", "mlp_cli", "train", str(config), "--quiet"], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        lock = run / files.LOCK_NAME
        while not (lock.exists() and lock.read_text().strip()):  # the first run holds the folder
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read().decode()
            time.sleep(0.1)
        for extra in ([], ["--overwrite"], ["--resume"]):
            one_line_error(invoke("train", config, *extra), f"pid {first.pid}", "in use by another mlp run")
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        first.stderr.close()
    assert lock.read_text().strip() == str(first.pid)  # a dead process's lock is left behind
    result = invoke("train", config, "train.epochs=1", "train.batch_size=64", "--overwrite", "--quiet")
    assert result.exit_code == 0, result.output
    assert not (run / files.LOCK_NAME).exists()


def test_a_second_sweep_of_the_same_key_is_refused(trained, tmp_path):
    _, config, _ = trained
    base = tmp_path / "out" / "sweep-model.hidden"
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import sys, time; from mlp_cli.files import FolderLock; "
                                "FolderLock(sys.argv[1], 'sweep').acquire(); print('held', flush=True); time.sleep(60)"),
         str(base)],
        stdout=subprocess.PIPE, cwd=REPO,
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        one_line_error(invoke("sweep", config, "model.hidden", "[2]", "--set", f"output_dir={tmp_path / 'out'}", "--overwrite"),
                       f"pid {holder.pid}", "in use by another mlp sweep")
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_cleanup_removes_only_dead_processes_temporaries(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live, stale = tmp_path / f"{files.TEMP_PREFIX}{os.getppid()}-best.pt.x", tmp_path / f"{files.TEMP_PREFIX}{dead.pid}-best.pt.y"
    live.write_bytes(b"being written")
    stale.write_bytes(b"left by a kill")
    assert files.remove_stale_temps(tmp_path) == 1
    assert live.exists() and not stale.exists()


# ---------------------------------------------------------------------------------------------- --overwrite is a transaction


def test_failed_overwrite_leaves_the_old_sweep_byte_identical(trained, tmp_path):
    _, config, _ = trained
    out = tmp_path / "out"
    assert invoke("sweep", config, "model.hidden", "[2]", "--set", f"output_dir={out}", "--quiet").exit_code == 0
    before = tree(out)
    for bad in (f"data.train={tmp_path / 'missing.csv'}", "data.target=nope"):
        one_line_error(invoke("sweep", config, "model.hidden", "[3]", "--set", f"output_dir={out}", "--set", bad, "--overwrite"))
        assert tree(out) == before
    # The train side of the same promise is tests/test_catalogue.py (19 bad inputs with --overwrite).


def test_output_dir_in_home_and_output_dir_that_is_a_file(trained, tmp_path, monkeypatch):
    _, config, _ = trained
    monkeypatch.setenv("HOME", str(tmp_path))
    result = invoke("config", config, "output_dir=~/runs/x")
    assert result.exit_code == 0 and f"output_dir: {tmp_path / 'runs' / 'x'}" in result.stdout
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_error(invoke("sweep", config, "model.hidden", "[2]", "--set", f"output_dir={blocker}"), "is a file")
    one_line_error(invoke("train", config, f"output_dir={blocker}", "--quiet"), "is a file")
    assert blocker.read_text() == "x"


# ---------------------------------------------------------------------------------------------- write failures


def no_torn_checkpoints(run: Path) -> None:
    assert not [p for p in run.iterdir() if p.name.startswith(files.TEMP_PREFIX)]
    for name in ("best.pt", "last.pt"):
        if (run / name).exists():
            checkpoint.load(run / name)


def test_disk_full_inside_torch_save_is_one_line(trained, tmp_path, monkeypatch):
    """The real torch.save on a file whose writes fail with ENOSPC after a budget, as a full disk does:
    torch turns the OSError into a RuntimeError without the reason; mlp names the reason."""
    _, config, _ = trained
    real = files._Recording.write
    written = {"n": 0}

    def full_after_budget(self, data):
        written["n"] += len(data)
        if written["n"] > 20_000:
            self.error = OSError(errno.ENOSPC, "No space left on device")
            raise self.error
        return real(self, data)

    monkeypatch.setattr(files._Recording, "write", full_after_budget)
    run = tmp_path / "run"
    result = invoke("train", config, f"output_dir={run}", "model.hidden=[64,64]", "--quiet")
    one_line_error(result, "No space left on device", "is kept")
    no_torn_checkpoints(run)


def test_disk_full_and_read_only_on_a_real_tmpfs(trained, tmp_path):
    folder, config, _ = trained
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = shutil.which("mount") is not None and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)], capture_output=True, check=False
    ).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        run = mount / "run"
        one_line_error(invoke("train", config, f"output_dir={run}", "model.hidden=[128,128]", "--quiet"), "No space left on device")
        no_torn_checkpoints(run)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        one_line_error(invoke("train", config, f"output_dir={mount / 'other'}", "--quiet"), "Read-only file system")
        one_line_error(invoke("train", config, f"output_dir={run}", "--overwrite", "--quiet"), "Read-only file system")
        one_line_error(invoke("predict", folder / "run [red]" / "best.pt", folder / "d.csv", "-o", mount / "p.csv"),
                       "Read-only file system")
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the tmpfs test covers it there")
def test_read_only_folder_is_one_line(trained, tmp_path):
    _, config, _ = trained
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        one_line_error(invoke("train", config, f"output_dir={locked}", "--quiet"), "Permission denied")
        one_line_error(invoke("train", config, f"output_dir={locked / 'run'}", "--quiet"), "Permission denied")
    finally:
        locked.chmod(0o755)


# ---------------------------------------------------------------------------------------------- every writing command


@pytest.fixture(scope="module")
def geo(tmp_path_factory):
    """A tiny scene, its polygons, the sampled table and a checkpoint trained on the scene's bands."""
    pytest.importorskip("rasterio")
    pytest.importorskip("pyogrio")
    from scenes import write_polygons, write_scene

    folder = tmp_path_factory.mktemp("geo")
    raster, labels = write_scene(folder / "scene.tif"), write_polygons(folder / "labels.geojson")
    assert invoke("sample", raster, labels, "-o", folder / "t.csv", "--field", "landuse").exit_code == 0
    config = write_config(folder / "geo.yaml", {
        "task": "multiclass", "data": {"train": "t.csv", "target": "landuse", "group": "polygon", "exclude": ["x", "y"]},
        "model": {"hidden": [4]}, "train": {"epochs": 1, "batch_size": 16}, "output_dir": str(folder / "run"),
    })
    assert invoke("train", config, "--quiet").exit_code == 0
    return raster, labels, folder / "run" / "best.pt"


# Each writer: its command line for an output, its input files, the output's name, the bytes a written file starts
# with, and the refusal an input given as -o gets directly (a command's own stricter rule may come first).
WRITERS = {
    "predict csv": lambda t, g: (["predict", t["best"], t["data"], "-o"], [t["data"], t["best"]], "p.csv", b"prediction,", "is the input file"),
    "predict map": lambda t, g: (["predict", g[2], g[0], "-o"], [g[0]], "map.tif", b"II", "is the input file"),
    "export": lambda t, g: (["export", t["best"], "-o"], [t["best"]], "m.onnx", b"\x08", "must end in .onnx"),
    "explain -o": lambda t, g: (["explain", t["best"], "--data", t["data"], "--repeats", "1", "-o"], [t["data"], t["best"]],
                                "imp.csv", b"feature,importance,std", "is the input file"),
    "sample -o": lambda t, g: (["sample", g[0], g[1], "--field", "landuse", "-o"], [g[0], g[1]], "s.csv", b"blue,",
                               "Parquet (.parquet) or CSV (.csv)"),
    "plot": lambda t, g: (["plot", t["run"], "--out"], [t["run"] / "metrics.csv", t["run"] / "summary.json"], "curves.png",
                          b"\x89PNG", "is the input file"),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_every_writer_refuses_its_input_and_writes_through_a_symlink(trained, geo, tmp_path, writer):
    if writer == "export":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    folder = trained[0]
    t = {"best": folder / "run [red]" / "best.pt", "data": folder / "d.csv", "run": folder / "run [red]"}
    args, inputs, name, magic, direct_refusal = WRITERS[writer](t, geo)
    before = {path: path.read_bytes() for path in inputs}

    def out(path: Path) -> Path:  # plot takes a folder and writes fixed names in it; the others take the file
        return path.parent if writer == "plot" else path

    # The input itself as the output (plot: a picture's name hard-linked to the run's metrics.csv) ...
    if writer == "plot":
        (tmp_path / "hard").mkdir()
        os.link(inputs[0], tmp_path / "hard" / name)
        direct = tmp_path / "hard" / name
    else:
        direct = inputs[0]
    result = invoke(*args, out(direct))
    assert result.exit_code != 0 and direct_refusal in result.stderr, result.output
    # ... and through a symlink named like a proper output: every writer refuses with files.check_output's line.
    for source in inputs:
        (tmp_path / "alias").mkdir(exist_ok=True)
        alias = tmp_path / "alias" / name
        alias.unlink(missing_ok=True)
        alias.symlink_to(source)
        one_line_error(invoke(*args, out(alias)), "is the input file")
        assert alias.is_symlink() and os.readlink(alias) == str(source)
    assert {path: path.read_bytes() for path in inputs} == before
    # A symlink to a file of our own (not there yet: explain would refuse to replace a file that is not its table)
    # is written through: the target gets the output, the link stays a link.
    (tmp_path / "linked").mkdir()
    target, link = tmp_path / f"target-{name}", tmp_path / "linked" / name
    link.symlink_to(target)
    result = invoke(*args, out(link))
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes().startswith(magic)
    assert not list(tmp_path.rglob(f"{files.TEMP_PREFIX}*")) and not list(folder.rglob(f"{files.TEMP_PREFIX}*"))
