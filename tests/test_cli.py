"""The `mlp` command line: params, config, schema, and clean one-line errors (exit 2, no traceback)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


def python_c(code: str, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    """`code` run by a fresh interpreter, as a command's whole process (exit, finalization, signals) sees it."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=check)


def test_params_spec_table(invoke):
    result = invoke("params", "6,3,5,4,3")
    assert result.exit_code == 0
    assert "3·(6+1) = 21" in result.stdout and "4·(5+1) = 24" in result.stdout
    assert result.stdout.rstrip().endswith("80")


def test_params_spec_json(invoke):
    result = invoke("params", "6,3,5,4,3", "--json")
    data = json.loads(result.stdout)
    assert data["total"] == 80
    assert data["layers"][0] == {"in": 6, "out": 3, "weights": 18, "biases": 3, "params": 21}


@pytest.mark.parametrize("spec", ["6,0,3", "abc", "6", "6,-3,2", "6,,3"])
def test_params_malformed_specs_exit_2_with_one_line(invoke, spec):
    result = invoke("params", spec)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: layer spec")
    assert "Traceback" not in result.output


def test_params_for_a_config_reads_widths_from_data(invoke):
    result = invoke("params", REPO / "configs" / "satimage.yaml", "--json")
    data = json.loads(result.stdout)
    assert data["layers"][0]["in"] == 36 and data["layers"][-1]["out"] == 6
    assert data["total"] == 128 * 37 + 128 * 129 + 6 * 129
    result = invoke("params", REPO / "configs" / "satimage.yaml", "model.hidden=[10]", "model.batch_norm=true", "--json")
    data = json.loads(result.stdout)
    assert data["layers"][0] == {"in": 36, "out": 10, "weights": 360, "biases": 10, "batch_norm": 20, "params": 390}


def test_params_batch_norm_for_spec(invoke):
    assert json.loads(invoke("params", "6,3,5,4,3", "--batch-norm", "--json").stdout)["total"] == 80 + 2 * (3 + 5 + 4)


def test_cli_import_and_params_do_not_import_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mlp_cli.cli import app\n"
        "r = CliRunner().invoke(app, ['params', '6,3,5,4,3'])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules)\n"
    )
    result = python_c(code, check=True)
    assert result.stdout.strip() == "False"


def test_config_prints_resolved_config(invoke, multiclass_config):
    result = invoke("config", multiclass_config, "train.epochs=3")
    assert result.exit_code == 0
    assert "epochs: 3" in result.stdout and "optimizer: adam" in result.stdout and "hidden: [16]" in result.stdout


def test_config_errors_exit_2_without_traceback(invoke, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: multiclass\ndata:\n  train: x.csv\n  target: y\ntrain:\n  epochs: ten\n  epoch: 3\n")
    result = invoke("config", bad)
    assert result.exit_code == 2
    assert "train.epochs must be a whole number" in result.stderr and "did you mean 'epochs'" in result.stderr
    assert "Traceback" not in result.output


def test_identity_warning_is_printed(invoke, multiclass_config):
    result = invoke("config", multiclass_config, "model.activation=identity")
    assert result.exit_code == 0 and "warning:" in result.stderr and "affine map" in result.stderr


def test_schema_command(invoke):
    result = invoke("schema")
    assert result.exit_code == 0 and json.loads(result.stdout)["title"] == "Config"


def test_real_executable_help_and_version():
    result = subprocess.run([sys.executable, "-m", "mlp_cli", "--help"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and "train" in result.stdout and "params" in result.stdout
    result = subprocess.run([sys.executable, "-m", "mlp_cli", "--version"], capture_output=True, text=True)
    assert result.stdout.startswith("mlp ")


def test_a_command_that_loaded_torch_exits_quickly_yet_completely(multiclass_config, tmp_path):
    """cli.main skips the interpreter's finalization after torch was loaded (cli.quick_exit): the exit code, the
    whole JSON on stdout and atexit handlers (MLflow ends its run there) must still come through."""
    marker = tmp_path / "atexit-ran"
    code = (
        "import atexit, pathlib, sys\n"
        f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('yes'))\n"
        "from mlp_cli.cli import main\n"
        "sys.argv = ['mlp'] + sys.argv[1:]\n"
        "main()\n"
        "raise AssertionError('main() returns only through SystemExit')\n"
    )
    run_dir = tmp_path / "run"
    args = [sys.executable, "-c", code, "train", str(multiclass_config), "--quiet", "--json", f"output_dir={run_dir}", "train.epochs=2"]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["epochs_run"] == 2 and marker.read_text() == "yes"
    marker.unlink()
    again = subprocess.run(args, capture_output=True, text=True)  # the run folder exists: a refusal, exit 2
    assert again.returncode == 2 and again.stderr.startswith("error: ") and marker.read_text() == "yes"
    assert "Traceback" not in again.stderr


def test_torch_is_loaded_without_garbage_collection_and_frozen_once():
    code = (
        "import gc, sys\n"
        "from mlp_cli.cli import loading_torch\n"
        "assert 'torch' not in sys.modules and gc.isenabled()\n"
        "with loading_torch():\n"
        "    assert not gc.isenabled()\n"
        "    import torch\n"
        "frozen = gc.get_freeze_count()\n"
        "assert gc.isenabled() and frozen > 10_000, frozen\n"
        "gc.unfreeze()\n"
        "with loading_torch():\n"
        "    assert gc.isenabled()  # torch is loaded: nothing paused, nothing frozen\n"
        "assert gc.get_freeze_count() == 0\n"
        "print('ok')\n"
    )
    result = python_c(code)
    assert result.stdout.strip() == "ok", result.stderr


def test_ctrl_c_while_torch_loads_takes_effect_once_it_is_loaded():
    """A KeyboardInterrupt inside torch's import can abort the process (exit 134); it is held until the import ends."""
    code = (
        "import os, signal, sys\n"
        "from mlp_cli.cli import loading_torch\n"
        "reached = []\n"
        "try:\n"
        "    with loading_torch():\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        import torch\n"
        "        reached.append('end of block')\n"
        "except KeyboardInterrupt:\n"
        "    print(reached, signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n"
    )
    result = python_c(code)
    assert result.stdout.strip() == "['end of block'] True", result.stderr


def test_a_command_left_with_a_daemon_thread_running_skips_finalization():
    """The read-ahead thread inside pyarrow when Ctrl-C ends the command: no finalization under it (no torch loaded)."""
    code = (
        "import sys, threading, time\n"
        "import mlp_cli.cli as cli\n"
        "assert not cli._skip_finalization()\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "assert cli._skip_finalization() and 'torch' not in sys.modules\n"
        "sys.argv = ['mlp', 'params', '6,3']\n"
        "cli.main()\n"
    )
    result = python_c(code)
    assert result.returncode == 0 and result.stdout.rstrip().endswith("21"), result.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["params", "6,3,5,4,3", "--json"], ["train", "--quiet", "--json", "train.epochs=1"]])
def test_standard_output_on_a_full_disk_is_one_error_line_never_success(multiclass_config, tmp_path, args):
    if args[0] == "train":
        args = ["train", str(multiclass_config), *args[1:], f"output_dir={tmp_path / 'run'}"]
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "mlp_cli", *args], stdout=full, stderr=subprocess.PIPE, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: could not write the output: No space left on device"
