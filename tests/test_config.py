"""Config validation: every problem at once, with its dotted key, its line and a suggestion."""

import json
import warnings
from pathlib import Path

import pytest

from mlp_cli.config import load_config, schema
from mlp_cli.errors import ConfigError, MLPWarning

from conftest import REPO


def config_text(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


BASE = "task: multiclass\ndata:\n  train: t.csv\n  target: label\n"


def error_of(tmp_path, text, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_config(config_text(tmp_path, text), list(overrides))
    return str(info.value)


def test_defaults_are_filled_and_paths_resolve(tmp_path):
    config = load_config(config_text(tmp_path, BASE))
    assert config.model.hidden == [64, 64] and config.model.activation == "relu"
    assert config.train.epochs == 100 and config.train.optimizer == "adam" and config.loss_name == "cross_entropy"
    assert config.data.train == str(tmp_path / "t.csv")
    assert config.output_dir == str(Path("runs") / "c")


def test_overrides_parse_as_yaml(tmp_path):
    config = load_config(config_text(tmp_path, BASE), ["train.epochs=5", "model.hidden=[128,64]", "train.lr=1e-3", "output_dir=/tmp/x"])
    assert config.train.epochs == 5 and config.model.hidden == [128, 64] and config.train.lr == 0.001
    assert config.output_dir == "/tmp/x"


def test_override_paths_resolve_against_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    config = load_config(config_text(tmp_path / "sub", BASE), ["data.train=other.csv"])
    assert config.data.train == str(tmp_path / "other.csv")


def test_every_problem_reported_at_once_with_lines(tmp_path):
    text = BASE + "  val_fraction: 2\nmodel:\n  hidden: [6, 0]\n  activaton: relu\ntrain:\n  epochs: ten\n"
    message = error_of(tmp_path, text)
    assert "4 problems" in message
    assert "c.yaml:5: data.val_fraction must be < 1" in message
    assert "c.yaml:7: model.hidden.1 must be >= 1" in message
    assert "c.yaml:8: unknown key 'model.activaton' (did you mean 'activation'?)" in message
    assert "c.yaml:10: train.epochs must be a whole number, got 'ten'" in message


def test_unknown_top_level_key_suggests(tmp_path):
    assert "did you mean 'train'?" in error_of(tmp_path, BASE + "trian:\n  epochs: 3\n")


def test_yaml11_boolean_gets_a_hint(tmp_path):
    message = error_of(tmp_path, BASE + "model:\n  activation: no\n")
    assert "model.activation" in message and "YAML reads unquoted no as false" in message


def test_literal_typo_suggests(tmp_path):
    assert "did you mean 'tanh'?" in error_of(tmp_path, BASE + "model:\n  activation: tahn\n")


def test_override_errors_name_the_override(tmp_path):
    message = error_of(tmp_path, BASE, ["train.epochs=ten"])
    assert "override 'train.epochs=ten'" in message and "whole number" in message
    assert "key=value" in error_of(tmp_path, BASE, ["train.epochs"])


def test_duplicate_key(tmp_path):
    assert "c.yaml:2: duplicate key 'task' (first set on line 1)" in error_of(tmp_path, "task: binary\n" + BASE)


def test_tab_indentation(tmp_path):
    message = error_of(tmp_path, "task: multiclass\ndata:\n\ttrain: t.csv\n")
    assert "c.yaml:3:1" in message and "tab" in message


def test_syntax_error_has_line_and_column(tmp_path):
    message = error_of(tmp_path, "task: [multiclass\n")
    assert "c.yaml:2:1: YAML syntax error" in message


def test_python_tags_are_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    message = error_of(tmp_path, f'task: !!python/object/apply:os.system ["touch {marker}"]\n')
    assert "not allowed" in message and not marker.exists()
    assert "not allowed" in error_of(tmp_path, "task: !!python/name:os.system\n")


def test_empty_and_list_configs(tmp_path):
    assert "empty" in error_of(tmp_path, "")
    assert "mapping" in error_of(tmp_path, "- a\n- b\n")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "task,loss,words",
    [
        ("regression", "cross_entropy", "does not fit task regression"),
        ("multiclass", "mse", "class numbers"),
        ("binary", "mae", "class numbers"),
        ("multiclass", "bce", "task: binary"),
    ],
)
def test_wrong_task_loss_pairs_are_refused_with_reason(tmp_path, task, loss, words):
    text = BASE.replace("multiclass", task) + f"loss: {loss}\n"
    assert words in error_of(tmp_path, text)


def test_identity_with_hidden_layers_warns(tmp_path):
    with pytest.warns(MLPWarning, match="affine map"):
        load_config(config_text(tmp_path, BASE + "model:\n  activation: identity\n"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(config_text(tmp_path, BASE + "model:\n  activation: identity\n  hidden: []\n"))


def test_data_source_required(tmp_path):
    assert "data.train is required" in error_of(tmp_path, "task: regression\ndata:\n  target: y\n")


def test_alias_bomb_is_stopped(tmp_path):
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, 8):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i-1}"] * 10) + "]")
    message = error_of(tmp_path, "\n".join(lines) + "\n")
    assert "too many values" in message


def test_schema_is_json_schema_with_descriptions():
    data = schema()
    json.dumps(data)
    assert set(data["properties"]) >= {"task", "data", "model", "loss", "train", "output_dir"}
    assert data["$defs"]["TrainConfig"]["properties"]["epochs"]["default"] == 100


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    if path.name == "linear_collapse.yaml":  # identity on purpose: the warning is the lesson
        with pytest.warns(MLPWarning, match="affine map"):
            load_config(path)
    else:
        load_config(path)


def test_config_reference_doc_is_current():
    from mlp_cli.config import reference_markdown

    assert (REPO / "docs" / "config.md").read_text() == reference_markdown(), "regenerate: mlp schema --markdown > docs/config.md"


@pytest.mark.parametrize("text,value", [("010", 10), ("0o17", 15), ("0x1F", 31), ("-0", 0), ("+12", 12), ("1.5e-3", 0.0015), (".5", 0.5)])
def test_yaml_numbers_follow_yaml_1_2(tmp_path, text, value):
    import yaml

    from mlp_cli.config import _Loader  # the loader is private; this pins its number rules directly

    assert yaml.load(f"v: {text}", Loader=_Loader)["v"] == value


@pytest.mark.parametrize("text", ["1_000", "1:30", "0b101", "0o8", "1__0"])
def test_yaml_1_1_only_numbers_are_text(text):
    import yaml

    from mlp_cli.config import _Loader

    assert yaml.load(f"v: {text}", Loader=_Loader)["v"] == text
