"""The one exception family: every user-facing failure is an MLPError carrying its exit code."""


class MLPError(Exception):
    """A problem the user can fix; the CLI prints its message as one clear line and exits with `exit_code`."""

    exit_code = 2


class ConfigError(MLPError):
    """The config file or an override is malformed or inconsistent."""


class SpecError(MLPError):
    """A layer-width spec such as `6,3,5,4,3` is malformed."""


class DataError(MLPError):
    """A data file is missing, unreadable, or holds values the task cannot use."""


class CheckpointError(MLPError):
    """A file handed to us is not a usable mlp checkpoint."""

    def __init__(self, path, why: str):
        super().__init__(f"not a usable mlp checkpoint: {path}: {why}")


class RunError(MLPError):
    """The run directory, device or resources do not allow the requested run."""


class TrainingDiverged(MLPError):
    """The loss became NaN or infinite; the last good checkpoints are left untouched."""

    exit_code = 1


class TrainingInterrupted(MLPError):
    """Ctrl-C or SIGTERM stopped training after `last.pt` was saved."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class MLPWarning(UserWarning):
    """Something the user should know that does not stop the run; the CLI prints it as `warning: ...`."""


class ModelFileError(MLPError):
    """A file handed to us as an ONNX model is not one `mlp export` wrote, or cannot be read."""

    def __init__(self, path, why: str):
        super().__init__(f"not a usable mlp ONNX model: {path}: {why}")


class ExportError(MLPError):
    """An export that could not be written or did not prove equal to its checkpoint; no model file is left."""

    exit_code = 1
