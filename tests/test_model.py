"""The builder's layer order: Linear → [BatchNorm1d] → activation → [Dropout], then a bare Linear output."""

import torch.nn as nn

from mlp_cli.config import ModelConfig
from mlp_cli.model import build_model


def test_layer_order_with_everything_on():
    model = build_model(4, 3, ModelConfig(hidden=[8, 5], activation="tanh", dropout=0.2, batch_norm=True))
    kinds = [type(m) for m in model]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.Tanh, nn.Dropout, nn.Linear, nn.BatchNorm1d, nn.Tanh, nn.Dropout, nn.Linear]
    assert model[-1].in_features == 5 and model[-1].out_features == 3


def test_no_hidden_layer_is_one_linear_map():
    model = build_model(4, 1, ModelConfig(hidden=[]))
    assert len(model) == 1 and isinstance(model[0], nn.Linear)


def test_output_has_no_activation():
    model = build_model(4, 2, ModelConfig(hidden=[3], activation="sigmoid"))
    assert isinstance(model[-1], nn.Linear) and isinstance(model[-2], nn.Sigmoid)
