"""The config schema (every key, its type, range and default, in one place) and its safe YAML loading."""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlp_cli.components import ACTIVATIONS, DEFAULT_LOSS, LOSSES, OPTIMIZERS, SCHEDULERS, TASKS
from mlp_cli.errors import ConfigError, MLPWarning
from mlp_cli.tasks import TASKS as TASK_TABLE

Task = Literal[TASKS]  # type: ignore[valid-type]
Activation = Literal[tuple(ACTIVATIONS)]  # type: ignore[valid-type]
LossName = Literal[tuple(LOSSES)]  # type: ignore[valid-type]
Optimizer = Literal[OPTIMIZERS]  # type: ignore[valid-type]
Scheduler = Literal[SCHEDULERS]  # type: ignore[valid-type]
Width = Annotated[int, Field(ge=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, allow_inf_nan=False)


class SyntheticConfig(_Section):
    """Teaching data generated in memory instead of read from a file."""

    name: Literal["sine", "moons", "circles", "spirals", "xor"] = Field(
        description="sine (1-D regression) or moons, circles, spirals, xor (2-D classification)"
    )
    n: int = Field(1000, ge=10, le=10_000_000, description="rows to generate, before the test split")
    noise: float = Field(0.1, ge=0, description="standard deviation of the Gaussian noise added")
    seed: int = Field(0, ge=0, description="seed of the generator (the split still follows train.seed)")


class DataConfig(_Section):
    """Where the table comes from and how it becomes tensors."""

    train: str | None = Field(
        None, description="CSV or Parquet file; relative paths resolve against the config file's folder"
    )
    test: str | None = Field(None, description="held-out CSV or Parquet file; when absent, test_fraction is used")
    target: str | None = Field(None, description="the column to predict")
    features: list[str] | None = Field(None, description="columns to use as inputs; default every column but the target")
    categorical: list[str] = Field(
        default_factory=list, description="text columns to one-hot encode (categories learned on the training split)"
    )
    encoding: str | None = Field(
        None, description="text encoding of CSV files, e.g. cp1252 or latin-1 (European Excel); default UTF-8, or UTF-16/32 "
        "when the file starts with a byte-order mark"
    )
    delimiter: Literal[",", ";", "\t", "|"] | None = Field(
        None, description="CSV field delimiter; default detected from the first lines among , ; tab | (a .tsv is tab) "
        "and reported when it is not a comma"
    )
    na_values: list[str] = Field(
        default_factory=lambda: [""],
        description="text cells read as missing in text columns (labels, categories) and number columns; number columns "
        "also read NA, NaN, null, N/A, #N/A as missing. Default: only the empty cell, so NA (Namibia) stays text",
    )
    missing: Literal["error", "drop", "mean"] = Field(
        "error", description="missing values: error names them; drop removes the rows; mean imputes training means"
    )
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of the training rows held out for validation")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share of the rows held out for testing when test is absent")
    standardize: bool = Field(True, description="scale numeric features to mean 0, std 1 with training-split statistics")
    standardize_target: bool | None = Field(
        None,
        description="learn a standardized target: default on for regression (a target in the hundreds would otherwise "
        "dwarf the initial outputs and stall learning); predictions and mse/rmse/mae/r2 are in target units, "
        "loss is the training objective on the standardized target. Regression only",
    )
    synthetic: SyntheticConfig | None = Field(None, description="generated teaching data instead of files")
    streaming: bool = Field(
        False,
        description="read Parquet (a file or a folder of shards) row group by row group instead of loading it; "
        "splits are a seeded hash of each row's position (random, not stratified)",
    )
    shuffle_buffer: int = Field(65536, ge=1, description="streaming: rows held in the shuffle buffer")
    group: str | None = Field(
        None,
        description="column whose groups (e.g. the polygon a pixel came from) stay whole on one side of every split; "
        "never a feature",
    )
    exclude: list[str] = Field(default_factory=list, description="columns left out of the default feature set, e.g. [x, y]")


class ModelConfig(_Section):
    """The network: Linear → [BatchNorm1d] → activation → [Dropout] per hidden layer, then a Linear output."""

    hidden: list[Width] = Field(
        default_factory=lambda: [64, 64],
        description="hidden widths; input width = number of features, output = classes (1 for binary/regression)",
    )
    # Activation and LossName are Literals built from the component tables at run time, which mypy cannot evaluate: hence the ignores
    activation: Activation = Field("relu", description="non-linearity g after each hidden layer")  # type: ignore[valid-type]
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout probability after each hidden activation")
    batch_norm: bool = Field(False, description="BatchNorm1d after each hidden Linear")
    init: Literal["default", "xavier", "kaiming"] = Field(
        "default",
        description="weight initialization: torch's default, xavier (Glorot, suits tanh/sigmoid) or kaiming (He, suits ReLU)",
    )


class TrainConfig(_Section):
    """How the weights are fitted."""

    epochs: int = Field(100, ge=1, description="maximum passes over the training rows")
    batch_size: int = Field(128, ge=1, description="rows per optimizer step (the global batch under torchrun)")
    optimizer: Optimizer = Field("adam", description="sgd (with momentum) | adam | adamw")
    lr: float = Field(0.001, gt=0, description="learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (decoupled for adamw)")
    scheduler: Scheduler = Field("none", description="none | cosine | step | plateau, stepped once per epoch")
    step_size: int = Field(30, ge=1, description="step scheduler: epochs between decays")
    gamma: float = Field(0.1, gt=0, le=1, description="step and plateau schedulers: decay factor")
    grad_clip: float | None = Field(None, gt=0, description="clip the global gradient norm to this value")
    early_stopping: int = Field(
        10, ge=0, description="patience in epochs on validation loss (best weights restored); 0 turns it off"
    )
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seeds splits, initialization, shuffling and dropout")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$", description="auto | cpu | cuda | cuda:N")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 uses autocast on CUDA")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch; default chosen for the model's size")
    compile: bool = Field(False, description="torch.compile the model (compile time is reported separately)")
    diagnostics: bool = Field(False, description="per-layer gradient and activation health each epoch")
    checkpoint_interval: float = Field(
        300.0, gt=0, description="seconds between mid-epoch saves of last.pt (it is also saved after every epoch)"
    )


class MlflowConfig(_Section):
    """Where MLflow tracking logs a run (`mlflow: true` takes these defaults)."""

    uri: str | None = Field(
        None, min_length=1,
        description="tracking URI; default sqlite:///<folder holding output_dir>/mlflow.db; relative sqlite: paths "
        "resolve against the working directory, like output_dir",
    )
    experiment: str | None = Field(None, min_length=1, description="experiment name; default the config file's name")


class TensorBoardConfig(_Section):
    """TensorBoard event files in <output_dir>/tensorboard/ (`tensorboard: true` takes these defaults)."""

    histograms: bool = Field(False, description="weight histograms each epoch (slow for big models)")


class TrackingConfig(_Section):
    """Experiment trackers fed during training; the run folder stays the source of truth (pip install 'mlp-cli[track]')."""

    mlflow: MlflowConfig | None = Field(None, description="true, or {uri, experiment}: log to MLflow")
    tensorboard: TensorBoardConfig | None = Field(None, description="true, or {histograms}: write TensorBoard scalars")

    @field_validator("mlflow", "tensorboard", mode="before")
    @classmethod
    def _switch(cls, value):
        # `true` means "on, with the defaults", `false` the same as leaving the key out.
        if value is True:
            return {}
        return None if value is False else value
# Validation metrics a search may optimize, by task (the keys of the run's `val` metrics), and which of them grow.
SEARCH_METRICS = {
    "regression": ("loss", "mse", "rmse", "mae", "r2"),
    "binary": ("loss", "accuracy", "balanced_accuracy", "macro_f1", "kappa"),
    "multiclass": ("loss", "accuracy", "balanced_accuracy", "macro_f1", "kappa"),
}
MAXIMIZED_METRICS = ("r2", "accuracy", "balanced_accuracy", "macro_f1", "kappa")


class FloatParam(_Section):
    """A number drawn from [low, high]."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)


class IntParam(_Section):
    """A whole number drawn from [low, high]."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, ge=1)


class CategoricalParam(_Section):
    """One of a list of values (any YAML value the key accepts, e.g. [64, 64] for model.hidden)."""

    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)


SearchParam = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class SearchConfig(_Section):
    """`mlp tune`: the space of config keys to search, the validation metric to optimize, sampler and pruner."""

    metric: str = Field("val_loss", description="validation metric to optimize: val_loss, val_accuracy, val_r2, ... "
                        "(val_ + a metric of the task: loss, mse, rmse, mae, r2 or loss, accuracy, balanced_accuracy, macro_f1, kappa)")
    direction: Literal["minimize", "maximize"] | None = Field(
        None, description="default: maximize for accuracy, balanced_accuracy, macro_f1, kappa and r2, minimize otherwise"
    )
    sampler: Literal["tpe", "random", "grid"] = Field(
        "tpe", description="tpe | random | grid (grid tries every combination: categorical, int or float with step)"
    )
    pruner: Literal["median", "none"] = Field(
        "median", description="median stops a trial whose metric is worse than the median of earlier trials at the same epoch"
    )
    startup_trials: int = Field(
        5, ge=0, description="trials that must finish before the median pruner prunes any (and TPE's random start)"
    )
    warmup_epochs: int = Field(2, ge=0, description="median pruner: epochs of every trial that are never pruned")
    trials: int = Field(20, ge=1, description="trials per `mlp tune` command (--trials overrides)")
    seed: int | None = Field(None, ge=0, description="seed of the sampler; default train.seed")
    space: dict[str, SearchParam] = Field(
        min_length=1,
        description="dotted config keys, as in overrides and mlp sweep, each {type: float, low, high, log, step}, "
        "{type: int, low, high, log, step} or {type: categorical, choices: [...]}",
    )


class Config(_Section):
    """One experiment: task, data, model, loss and training."""

    task: Task = Field(description="regression | binary | multiclass")
    data: DataConfig = Field(description="the table and its preparation")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the network")
    loss: LossName | None = Field(  # type: ignore[valid-type]  # a run-time Literal, see activation above
        None, description="default by task: mse (regression), bce (binary), cross_entropy (multiclass); also mae, huber"
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="the optimization")
    output_dir: str | None = Field(None, min_length=1, description="run directory, relative to the working directory; default runs/<config name>")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow and TensorBoard (off by default)")
    search: SearchConfig | None = Field(None, description="what `mlp tune` searches; mlp train ignores it")

    @property
    def loss_name(self) -> str:
        return self.loss or DEFAULT_LOSS[self.task]

    def to_dict(self) -> dict:
        data = self.model_dump(mode="json")
        if data.get("search") is None:  # only `mlp tune` configs have one; plain runs stay as they were
            data.pop("search", None)
        return data


# ---------------------------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` as a float, as YAML 1.2 and every user does."""


# Numbers follow YAML 1.2's core schema, as every other YAML tool now does: `010` is ten (not octal 8), `0o10` is
# eight, `0x10` sixteen; YAML 1.1's `1_000`, `0b101` and sexagesimal `1:30` are text, which the schema then refuses
# by name instead of silently reading 1000, 5 or 90.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def _construct_int(loader, node) -> int:
    value = loader.construct_scalar(node)
    if value.startswith("0o"):
        return int(value[2:], 8)
    if value.startswith("0x"):
        return int(value[2:], 16)
    return int(value, 10)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)

_YAML11_BOOLS = {"yes", "no", "on", "off", "y", "n"}
_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
_MAX_NODES = 20_000  # configs are small; this stops alias bombs


class _Located:
    """Where each dotted key came from: a line in the file, or a command-line override."""

    def __init__(self) -> None:
        self.where: dict[tuple, str] = {}
        self.raw: dict[tuple, str] = {}

    def find(self, loc: tuple) -> str | None:
        loc = tuple(loc)
        while loc:
            if loc in self.where:
                return self.where[loc]
            loc = loc[:-1]
        return self.where.get(())


def _parse_yaml(text: str, origin: str, located: _Located, prefix: tuple = (), line_offset: int = 0):
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_yaml_error_message(exc, origin)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from None
    if len(nodes) > 1:
        raise ConfigError(f"{origin}: holds {len(nodes)} YAML documents; a config is one mapping")
    if not nodes:
        return None
    loader = _Loader("")
    count = [0]

    def build(node, path: tuple):
        count[0] += 1
        if count[0] > _MAX_NODES:
            raise ConfigError(f"{origin}: too many values (aliases expanding?); a config is a small mapping")
        here = f"{origin}:{node.start_mark.line + 1 + line_offset}" if origin != "override" else origin
        located.where.setdefault(path, here)
        if not isinstance(node, yaml.ScalarNode) and node.tag not in _PLAIN_TAGS:
            raise ConfigError(f"{here}: tag {node.tag!r} is not allowed; a config holds plain values only")
        if isinstance(node, yaml.MappingNode):
            result: dict = {}
            key_lines: dict = {}
            for key_node, value_node in node.value:
                key = build_scalar(key_node)
                line = key_node.start_mark.line + 1 + line_offset
                if not isinstance(key, str):
                    raise ConfigError(f"{here}: key {key!r} must be text")
                if key == "<<":
                    raise ConfigError(f"{here}: YAML merge keys (<<) are not supported in a config")
                dotted = ".".join(str(p) for p in path + (key,))
                if key in result:
                    raise ConfigError(f"{origin}:{line}: duplicate key {dotted!r} (first set on line {key_lines[key]})")
                key_lines[key] = line
                located.where[path + (key,)] = f"{origin}:{line}" if origin != "override" else origin
                result[key] = build(value_node, path + (key,))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [build(item, path + (i,)) for i, item in enumerate(node.value)]
        located.raw[path] = node.value
        return build_scalar(node)

    def build_scalar(node):
        try:
            return loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            line = node.start_mark.line + 1 + line_offset
            where = f"{origin}:{line}" if origin != "override" else origin
            raise ConfigError(
                f"{where}: tag {node.tag!r} is not allowed; a config holds plain values only ({exc.problem})"
            ) from None

    return build(nodes[0], prefix)


def _yaml_error_message(exc: yaml.MarkedYAMLError, origin: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"{origin}:{mark.line + 1}:{mark.column + 1}" if mark and origin != "override" else origin
    problem = exc.problem or exc.context or "not valid YAML"
    if "\\t" in problem or "'\\t'" in str(exc):
        problem = "a tab character; YAML indents with spaces only"
    return f"{where}: YAML syntax error: {problem}"


# ---------------------------------------------------------------------------------------------- loading


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read, override and validate a config; relative data paths resolve against the file's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a config is YAML)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    located = _Located()
    raw = _parse_yaml(text, str(path), located)
    if raw is None:
        raise ConfigError(f"{path}: the config is empty; it needs at least task and data (see `mlp schema`)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config is a mapping of keys to values, not a {type(raw).__name__}")
    from_file = _data_paths(raw)
    overridden = apply_overrides(raw, overrides, located)
    _resolve_data_paths(raw, path.parent, from_file, overridden)
    config = validate(raw, located, str(path))
    if config.output_dir is None:
        config.output_dir = str(Path("runs") / path.stem)
    if config.tracking.mlflow is not None and config.tracking.mlflow.experiment is None:
        config.tracking.mlflow.experiment = path.stem
    config.output_dir = str(Path(config.output_dir).expanduser())  # `~/runs/x` is in the home folder, as for data paths
    return config


def config_from_dict(raw: dict, origin: str = "config", warn: bool = True) -> Config:
    """Validate an already-parsed config (a checkpoint's stored one, or one built in code)."""
    return validate(raw, _Located(), origin, warn)


def _data_paths(raw: dict) -> dict:
    data = raw.get("data")
    return {k: data.get(k) for k in ("train", "test")} if isinstance(data, dict) else {}


def _resolve_data_paths(raw: dict, base: Path, from_file: dict, overridden: set) -> None:
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    for key in ("train", "test"):
        value = data.get(key)
        if isinstance(value, str) and value:
            # A path typed on the command line means what the shell means: relative to the working directory.
            root = Path.cwd() if ("data", key) in overridden else base
            data[key] = str((root / Path(value).expanduser()).resolve()) if not Path(value).is_absolute() else value


def apply_overrides(raw: dict, overrides, located: _Located) -> set:
    """Set `dotted.key=value` pairs in `raw`, values parsed as YAML; returns the keys touched."""
    touched = set()
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. train.epochs=5")
        parts = tuple(key.split("."))
        if any(not p for p in parts):
            raise ConfigError(f"override {item!r}: {key!r} is not a dotted key like train.epochs")
        origin = "override"
        here = _Located()
        try:
            parsed = _parse_yaml(value, origin, here, prefix=parts) if value.strip() else None
        except ConfigError as exc:
            raise ConfigError(f"override {item!r}: {str(exc).split(': ', 1)[-1]}") from None
        node = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: depth + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = parsed
        located.where[parts] = f"override {item!r}"
        for sub in list(located.where):
            if sub[: len(parts)] == parts and sub != parts:
                located.where[sub] = f"override {item!r}"
        # The file's text for keys under this one is gone: messages quote what the override says.
        for sub in [sub for sub in located.raw if sub[: len(parts)] == parts]:
            del located.raw[sub]
        located.raw.update(here.raw)
        if isinstance(value, str) and value.strip():
            located.raw[parts] = value.strip()
        touched.add(parts)
    return touched


def validate(raw: dict, located: _Located, origin: str, warn: bool = True) -> Config:
    problems: list[str] = []
    config = None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            problems.append(_describe(error, located, origin))
    problems.extend(_cross_checks(raw, located, origin))
    if problems:
        if len(problems) == 1:
            raise ConfigError(problems[0])
        raise ConfigError(f"{origin}: {len(problems)} problems\n" + "\n".join(f"  {p}" for p in problems))
    assert config is not None
    if warn and config.model.activation == "identity" and config.model.hidden:
        warnings.warn(
            "model.activation is identity: without a non-linearity the hidden layers compose into one affine map, "
            "so the net can only learn what a linear model learns (use relu, tanh, ...)",
            MLPWarning,
            stacklevel=2,
        )
    return config


def _cross_checks(raw: dict, located: _Located, origin: str) -> list[str]:
    problems = []
    task = raw.get("task")
    loss = raw.get("loss")
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    if task in TASKS and isinstance(loss, str) and loss in LOSSES and task not in LOSSES[loss].tasks:
        problems.append(f"{located.find(('loss',)) or origin}: loss {loss} does not fit task {task}: {LOSSES[loss].why_not}")
    if isinstance(data, dict) and "data" in raw:
        synthetic = data.get("synthetic")
        where = located.find(("data",)) or origin
        if synthetic is None and not data.get("train"):
            problems.append(f"{where}: data.train is required (a CSV or Parquet file), or data.synthetic for teaching data")
        if synthetic is None and data.get("train") and not data.get("target"):
            problems.append(f"{where}: data.target is required: the column to predict")
        if synthetic is not None and data.get("train"):
            problems.append(f"{where}: give data.train or data.synthetic, not both")
        model, train = raw.get("model"), raw.get("train")
        batch = train.get("batch_size") if isinstance(train, dict) else None
        if isinstance(model, dict) and model.get("batch_norm") is True and isinstance(batch, int) and 0 < batch < 2:
            problems.append(f"{located.find(('train', 'batch_size'))}: model.batch_norm needs train.batch_size >= 2 "
                            "(a batch of one row has no variance to normalize by)")
        if data.get("group") and (data.get("streaming") is True or synthetic is not None):
            problems.append(f"{located.find(('data', 'group'))}: data.group needs a table file read whole "
                            "(not data.streaming, not data.synthetic)")
        features = data.get("features")
        if isinstance(features, list):
            repeated = sorted({str(n) for n in features if features.count(n) > 1})
            if repeated:
                problems.append(f"{located.find(('data', 'features'))}: data.features lists {', '.join(map(repr, repeated))} "
                                "more than once; name each column once")
        if data.get("standardize_target") is True and task in TASK_TABLE and TASK_TABLE[task].classes:
            problems.append(f"{located.find(('data', 'standardize_target'))}: data.standardize_target applies to regression only")
    problems.extend(_search_checks(raw, located, origin))
    return problems


def _search_checks(raw: dict, located: _Located, origin: str) -> list[str]:
    """The search section against the rest of the config: its metric, its keys, and every bound or choice as a value."""
    search = raw.get("search")
    if not isinstance(search, dict):
        return []
    problems = []
    task = raw.get("task")
    metric = search.get("metric", "val_loss")
    if task in SEARCH_METRICS and isinstance(metric, str):
        known = [f"val_{m}" for m in SEARCH_METRICS[task]]
        if metric not in known:
            where = located.find(("search", "metric")) or origin
            problems.append(f"{where}: search.metric is {metric!r}; a {task} run's validation metrics are "
                            f"{', '.join(known)}{_suggest(metric, known, list_all=False)}")
    data = raw.get("data")
    if isinstance(data, dict) and data.get("val_fraction") == 0:
        problems.append(f"{located.find(('data', 'val_fraction')) or origin}: search needs validation rows to score "
                        "trials, but data.val_fraction is 0")
    space = search.get("space")
    if not isinstance(space, dict):
        return problems
    base = {k: v for k, v in raw.items() if k != "search"}
    for key, spec in space.items():
        where = located.find(("search", "space", key)) or origin
        problem = _search_key_problem(str(key))
        if problem:
            problems.append(f"{where}: search.space: {problem}")
            continue
        if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "categorical"):
            continue  # the schema reports it
        problems.extend(f"{where}: search.space.{key}: {p}" for p in _range_problems(spec, search.get("sampler")))
        if spec["type"] == "categorical":
            values = spec["choices"] if isinstance(spec.get("choices"), list) else []
        else:
            values = [spec[b] for b in ("low", "high") if isinstance(spec.get(b), (int, float)) and not isinstance(spec.get(b), bool)]
        whys = [(value, _value_problem(base, tuple(key.split(".")), value)) for value in values]
        problems.extend(f"{where}: search.space.{key}: {value!r} does not fit {key}: {why}" for value, why in whys if why)
        if spec["type"] == "float" and len(values) == 2 and not any(why for _, why in whys):
            middle = (float(values[0]) + float(values[1])) / 2
            why = _value_problem(base, tuple(key.split(".")), middle if middle % 1 else middle + 0.5)
            if why:  # e.g. a float range on a whole-number key: the bounds fit, the draws between them do not
                problems.append(f"{where}: search.space.{key}: type float does not fit {key} ({why}); use type int")
    return problems


def _search_key_problem(key: str) -> str | None:
    parts = key.split(".")
    if parts[0] in ("search", "output_dir"):
        return f"{key} cannot be searched (a trial's output_dir is its own trials/<number> folder)"
    model: Any = Config
    for depth, part in enumerate(parts):
        names = list(model.model_fields) if model is not None else []
        if part not in names:
            dotted = ".".join(parts[:depth])
            close = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
            hint = f" (did you mean {'.'.join([*parts[:depth], close[0]])!r}?)" if close else ""
            return f"{key!r} is not a config key" + (f": {dotted} has no {part!r}" if dotted else "") + hint
        annotation = model.model_fields[part].annotation
        model = next((a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is not None and depth == len(parts) - 1:
            return f"{key} is a section; search one of its keys, e.g. {key}.{next(iter(model.model_fields))}"
    return None


def _range_problems(spec: dict, sampler) -> list[str]:
    kind, low, high = spec["type"], spec.get("low"), spec.get("high")
    if kind == "categorical":
        choices = spec.get("choices")
        if isinstance(choices, list):
            seen = [repr(c) for c in choices]
            repeated = sorted({c for c in seen if seen.count(c) > 1})
            if repeated:
                return [f"choices repeat {', '.join(repeated)}"]
        return []
    numbers = [v for v in (low, high) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) < 2:
        return []  # the schema reports a missing or non-numeric bound
    low, high = numbers  # the same two bounds, now known to be numbers
    problems = []
    if low >= high:
        problems.append(f"low {low!r} must be below high {high!r}")
    if spec.get("log") and low <= 0:
        problems.append(f"a log scale needs low > 0, got {low!r}")
    step = spec.get("step")
    if spec.get("log") and step not in (None, 1):
        problems.append("step and log cannot be combined")
    if isinstance(step, (int, float)) and step > 0 and low < high and step > high - low:
        problems.append(f"step {step!r} is wider than the range [{low!r}, {high!r}]")
    if sampler == "grid" and kind == "float" and step is None:
        problems.append("the grid sampler needs a finite set of values: give this float range a step, "
                        "or make it {type: categorical, choices: [...]}")
    return problems


def _value_problem(base: dict, parts: tuple, value) -> str | None:
    """Why `value` cannot stand at `parts` in this config, as the schema would say it; None when it fits."""
    import copy

    trial = copy.deepcopy(base)
    node = trial
    for part in parts[:-1]:
        child = node.get(part)
        node = node.setdefault(part, {}) if not isinstance(child, dict) else child
    node[parts[-1]] = value
    try:
        Config.model_validate(trial)
    except ValidationError as exc:
        for error in exc.errors():
            if tuple(error["loc"][: len(parts)]) == parts:
                return _describe(error, _Located(), "").lstrip(": ")
    return None


def _describe(error: Mapping[str, Any], located: _Located, origin: str) -> str:
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p in ("str", "int", "float", "bool", "list")))
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    where = located.find(loc) or origin
    kind = error["type"]
    value = error.get("input")
    raw_text = located.raw.get(loc)
    if kind == "extra_forbidden":
        key = str(loc[-1])
        suggestion = _suggest(key, _field_names(loc[:-1]))
        return f"{where}: unknown key {dotted!r}{suggestion}"
    if kind == "missing":
        return f"{where}: {dotted} is required"
    if kind in ("union_tag_not_found", "union_tag_invalid"):  # search.space entries choose their shape by `type`
        allowed = error.get("ctx", {}).get("expected_tags") or "float, int, categorical"
        allowed = allowed.replace("'", "")
        got = f"type is {error['ctx']['tag']!r}" if kind == "union_tag_invalid" else "type is missing"
        return f"{where}: {dotted}: {got}; expected one of {allowed}"
    if kind == "literal_error":
        allowed = error["ctx"]["expected"].replace("'", "")
        message = f"{where}: {dotted} is {raw_text or value!r}; expected one of {allowed}"
        if isinstance(value, bool) and raw_text and raw_text.lower() in _YAML11_BOOLS:
            return message + f" (YAML reads unquoted {raw_text} as {str(value).lower()}; quote it if you meant text)"
        if isinstance(value, str):
            message += _suggest(value, [a.strip() for a in allowed.replace(" or ", ", ").split(", ")], list_all=False)
        return message
    if kind.endswith("_type") or kind in ("int_from_float", "bool_parsing", "int_parsing", "float_parsing"):
        expected = {
            "int": "a whole number",
            "float": "a number",
            "bool": "true or false",
            "string": "text",
            "list": "a list like [64, 64]",
            "model": "a section of keys",
            "dict": "a section of keys",
        }
        want = next((v for k, v in expected.items() if kind.startswith(k)), error["msg"].lower())
        shown = raw_text if raw_text is not None else value
        message = f"{where}: {dotted} must be {want}, got {shown!r}"
        if isinstance(value, bool) and raw_text and raw_text.lower() in _YAML11_BOOLS:
            message += f" (YAML reads unquoted {raw_text} as {str(value).lower()}; quote it if you meant text)"
        return message
    ctx = error.get("ctx", {})
    bounds = {"greater_than": "> {gt}", "greater_than_equal": ">= {ge}", "less_than": "< {lt}", "less_than_equal": "<= {le}"}
    if kind in bounds:
        message = f"{where}: {dotted} must be {bounds[kind].format(**ctx)}, got {value!r}"
        if loc[:2] == ("model", "hidden"):
            message += " (every layer needs at least one unit)"
        return message
    if kind == "string_pattern_mismatch" and loc == ("train", "device"):
        return f"{where}: {dotted} is {value!r}; expected auto, cpu, cuda or cuda:N"
    return f"{where}: {dotted}: {error['msg']} (got {value!r})"


def _field_names(loc: tuple) -> list[str]:
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        model = next(
            (a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type) and issubclass(a, BaseModel)),
            None,
        )
        if model is None:
            return []
    return list(model.model_fields)


def _suggest(word: str, candidates: list[str], list_all: bool = True) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if candidates and list_all:
        return f" (known keys: {', '.join(candidates)})"
    return ""


def schema() -> dict:
    """The JSON Schema of a config file, for editors."""
    return Config.model_json_schema()


class _Dumper(yaml.SafeDumper):
    """Writes short lists of plain values inline (`hidden: [64, 64]`), everything else as blocks."""


def _represent_list(dumper: yaml.SafeDumper, data: list):
    flow = all(not isinstance(item, (dict, list)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def reference_markdown() -> str:
    """Every key with its type, default and meaning, from the schema itself (docs/config.md is this text)."""
    lines = ["# Config reference", "", "Generated by `mlp schema --markdown` from the schema in `mlp_cli/config.py`.", ""]

    def walk(model, prefix: str) -> None:
        lines.extend([f"## `{prefix.rstrip('.') or 'top level'}`", "", (model.__doc__ or "").strip(), "",
                      "| key | type | default | meaning |", "| --- | --- | --- | --- |"])
        nested = []
        for name, field in model.model_fields.items():
            annotation = field.annotation
            inner = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type) and issubclass(a, BaseModel)]
            if inner:
                nested.append((inner[0], f"{prefix}{name}."))
                kind = "section"
            else:
                kind = _type_name(annotation)
            default = "required" if field.is_required() else ("" if inner else f"`{_default_text(field)}`")
            meaning = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{prefix}{name}` | {kind} | {default} | {meaning} |")
        lines.append("")
        for sub, sub_prefix in nested:
            walk(sub, sub_prefix)

    walk(Config, "")
    return "\n".join(lines).rstrip() + "\n"


def _type_name(annotation) -> str:
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        kinds = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(kinds) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {_type_name(args[0])}"
    return getattr(annotation, "__name__", str(annotation))


def _default_text(field) -> str:
    value = field.get_default(call_default_factory=True)
    return "null" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))


def dump_yaml(config: Config | dict) -> str:
    data = config.to_dict() if isinstance(config, Config) else config
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 0.1}} -> {'train.lr': 0.1}; lists stay values."""
    flat = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat
