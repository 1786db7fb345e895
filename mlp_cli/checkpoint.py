"""Checkpoints: plain dicts of tensors, numbers, strings and lists, saved atomically and loaded weights-only.

A checkpoint rebuilds its model from what it says (config, widths, preprocessor) and never unpickles code.
"""

from __future__ import annotations

import pickle
import platform
import zipfile
from pathlib import Path

import torch

from mlp_cli import __version__
from mlp_cli.config import Config, config_from_dict
from mlp_cli.data import Preprocessor
from mlp_cli.errors import CheckpointError, ConfigError
from mlp_cli.files import file_problem, write_atomic
from mlp_cli.model import build_model

FORMAT = "mlp-checkpoint"
FORMAT_VERSION = 1


def versions() -> dict:
    return {"mlp": __version__, "torch": str(torch.__version__), "python": platform.python_version()}


def payload(config: Config, model_state: dict, prep: Preprocessor, **extra) -> dict:
    """The dict a checkpoint holds; `extra` adds metrics, epoch and (for last.pt) the training state."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "n_inputs": prep.n_inputs,
        "n_outputs": prep.n_outputs,
        "feature_names": prep.feature_names,
        "preprocessor": prep.to_dict(),
        "model_state": {k: v.detach().cpu().clone() for k, v in model_state.items()},
        "versions": versions(),
        **extra,
    }


def save(path: Path, data: dict) -> None:
    check_plain(data)
    write_atomic(path, lambda handle: torch.save(data, handle))


_PLAIN = (str, int, float, bool, type(None))


def check_plain(value, where: str = "checkpoint") -> None:
    """Refuse to write anything a weights-only load would reject (numpy scalars, str subclasses, objects)."""
    if type(value) in _PLAIN or isinstance(value, torch.Tensor):
        return
    if type(value) is dict:
        for key, item in value.items():
            check_plain(key, f"{where} key")
            check_plain(item, f"{where}.{key}")
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
        return
    raise TypeError(f"{where} holds a {type(value).__module__}.{type(value).__qualname__}; checkpoints hold plain data only")


def load(path: str | Path) -> dict:
    """Load and check a checkpoint; every way a file can be unusable becomes a CheckpointError."""
    path = Path(path)
    problem = file_problem(path, "pass best.pt or last.pt inside it")
    if problem:
        raise CheckpointError(path, problem)
    with path.open("rb") as handle:
        head = handle.read(4)
    if head != b"PK\x03\x04":  # torch.save writes a zip archive; anything else is not ours
        looks = "text" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "binary data"
        raise CheckpointError(path, f"not a torch file (it holds {looks}, not the zip archive torch.save writes)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        if "Unsupported global" in str(exc) or "weights_only" in str(exc).lower():
            raise CheckpointError(
                path, "it carries pickled Python objects, which are refused without being run (a checkpoint holds plain data only)"
            ) from None
        raise CheckpointError(path, f"not a torch file ({first or 'unreadable pickle'})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError, IndexError, KeyError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "zip archive" in text or "central directory" in text or isinstance(exc, EOFError):
            text = f"truncated or damaged ({text})"
        raise CheckpointError(path, text) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(path, "a torch file, but not one written by mlp (no mlp format marker)")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            path, f"format version {version} is newer than this mlp reads ({FORMAT_VERSION}); upgrade mlp-cli"
        )
    missing = [key for key in ("config", "model_state", "preprocessor", "n_inputs", "n_outputs") if key not in data]
    if missing:
        raise CheckpointError(path, f"missing {', '.join(missing)}")
    return data


def restore(data: dict, path: str | Path = "checkpoint") -> tuple[Config, torch.nn.Sequential, Preprocessor]:
    """Rebuild config, model (weights loaded, eval mode) and preprocessor from a loaded checkpoint."""
    try:
        config = config_from_dict(data["config"], origin=f"{path} (stored config)", warn=False)  # warned at training
        prep = Preprocessor.from_dict(data["preprocessor"])
        model = build_model(data["n_inputs"], data["n_outputs"], config.model)
        model.load_state_dict(data["model_state"])
    except (ConfigError, TypeError, RuntimeError, KeyError) as exc:
        raise CheckpointError(path, f"its contents do not fit together ({str(exc).splitlines()[0]})") from None
    model.eval()
    return config, model, prep
