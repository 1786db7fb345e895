"""Parameter counting against torch's own count, the course example, and malformed specs."""

import torch
from hypothesis import given, settings, strategies as st

from mlp_cli.components import ACTIVATIONS
from mlp_cli.config import ModelConfig
from mlp_cli.model import build_model
from mlp_cli.params import as_json, count_layers, parse_spec, total


def torch_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_course_example_is_80():
    layers = count_layers([6, 3, 5, 4, 3])
    assert [layer.params for layer in layers] == [21, 20, 24, 15]
    assert total(layers) == 80
    assert layers[0].formula == "3·(6+1) = 21"


def test_course_example_matches_torch():
    model = build_model(6, 3, ModelConfig(hidden=[3, 5, 4]))
    assert torch_count(model) == total(count_layers([6, 3, 5, 4, 3])) == 80


@settings(max_examples=60, deadline=None)
@given(
    n_in=st.integers(1, 40),
    hidden=st.lists(st.integers(1, 40), max_size=4),
    n_out=st.integers(1, 12),
    activation=st.sampled_from(sorted(ACTIVATIONS)),
    dropout=st.sampled_from([0.0, 0.3]),
    batch_norm=st.booleans(),
)
def test_counts_equal_torch_for_any_net(n_in, hidden, n_out, activation, dropout, batch_norm):
    config = ModelConfig(hidden=hidden, activation=activation, dropout=dropout, batch_norm=batch_norm)
    model = build_model(n_in, n_out, config)
    assert total(count_layers([n_in, *hidden, n_out], batch_norm)) == torch_count(model)


def test_json_shape():
    assert as_json(count_layers([6, 3, 5, 4, 3]))["layers"][0] == {"in": 6, "out": 3, "weights": 18, "biases": 3, "params": 21}


def test_parse_spec_accepts_spaces():
    assert parse_spec(" 6, 3 ,5") == [6, 3, 5]
