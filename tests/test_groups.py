"""Grouped splits: whole groups on one side, classes stratified as far as groups allow, groups never features."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mlp_cli.config import load_config
from mlp_cli.data import load_dataset, read_frames, split_frames
from mlp_cli.data.groups import group_split_indices
from mlp_cli.errors import ConfigError, DataError

from conftest import assert_data_error, write_config, write_csv


def polygons(n_groups: int, classes: int, seed: int, sizes=(5, 60)):
    rng = np.random.default_rng(seed)
    size = rng.integers(*sizes, size=n_groups)
    groups = np.repeat(np.arange(n_groups), size)
    strata = np.repeat(rng.integers(0, classes, size=n_groups), size)
    return groups, strata


@settings(max_examples=40, deadline=None)
@given(n_groups=st.integers(2, 60), classes=st.integers(1, 5), seed=st.integers(0, 10_000), fraction=st.floats(0.05, 0.5))
def test_no_group_on_two_sides_and_every_row_once(n_groups, classes, seed, fraction):
    groups, strata = polygons(n_groups, classes, seed)
    kept, held = group_split_indices(groups, strata, fraction, seed, 1)
    assert len(held) and len(kept)  # a split that was asked for holds out something and keeps something
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(len(groups)))
    assert not set(groups[kept]) & set(groups[held])
    # deterministic for a seed
    again = group_split_indices(groups, strata, fraction, seed, 1)
    assert np.array_equal(again[1], held)


def test_every_class_with_two_groups_or_more_is_held_out_near_its_share():
    groups, strata = polygons(300, 4, seed=3)
    _, held = group_split_indices(groups, strata, 0.25, 0, 1)
    for c in range(4):
        share = np.isin(held, np.flatnonzero(strata == c)).sum() / (strata == c).sum()
        # whole groups of 5..60 rows among ~75 per class: the share lands within one group's weight of 0.25
        assert 0.15 < share < 0.35, (c, share)


def test_a_class_in_a_single_group_stays_in_training():
    groups = np.array([0] * 10 + [1] * 10 + [2] * 10 + [3] * 4)
    strata = np.array([0] * 30 + [1] * 4)
    kept, _ = group_split_indices(groups, strata, 0.3, 0, 1)
    assert set(groups[kept]) >= {3}


def test_a_single_group_cannot_be_split():
    with pytest.raises(DataError, match="single group"):
        group_split_indices(np.zeros(10), None, 0.2, 0, 1)


@pytest.fixture
def pixels(tmp_path):
    rng = np.random.default_rng(0)
    polygon = np.repeat(np.arange(40), 12)
    label = np.where(polygon % 2 == 0, "water", "forest")
    columns = {
        "b1": rng.normal(size=len(polygon)) + (label == "water"),
        "b2": rng.normal(size=len(polygon)),
        "landuse": label,
        "x": rng.uniform(size=len(polygon)),
        "y": rng.uniform(size=len(polygon)),
        "polygon": polygon,
    }
    return write_csv(tmp_path / "pixels.csv", columns)


def config_for(tmp_path, pixels, **data):
    return write_config(tmp_path / "c.yaml", {
        "task": "multiclass",
        "data": {"train": str(pixels), "target": "landuse", "group": "polygon", "exclude": ["x", "y"], **data},
        "train": {"epochs": 1}, "output_dir": str(tmp_path / "run"),
    })


def test_dataset_keeps_polygons_whole_and_out_of_the_features(tmp_path, pixels):
    config = load_config(config_for(tmp_path, pixels))
    train, test, features = read_frames(config)
    assert features == ["b1", "b2"]
    parts = split_frames(config, train, test)
    polygon = np.repeat(np.arange(40), 12)
    sides = [set(polygon[parts[name].rows]) for name in ("train", "val", "test")]
    assert all(sides) and not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert load_dataset(config).prep.features == ["b1", "b2"]


def test_group_listed_as_a_feature_is_refused(tmp_path, pixels):
    config = load_config(config_for(tmp_path, pixels, features=["b1", "polygon"]))
    with pytest.raises(DataError) as info:
        read_frames(config)
    assert_data_error(info, "group column 'polygon'", "never a feature")


def test_unknown_group_or_exclude_column_names_the_file(tmp_path, pixels):
    with pytest.raises(DataError) as info:
        read_frames(load_config(config_for(tmp_path, pixels, group="polygn")))
    assert_data_error(info, "'polygn' (did you mean 'polygon'?)")


def test_streaming_with_group_is_refused_in_one_line(tmp_path, pixels):
    with pytest.raises(ConfigError, match="data.group needs a table file read whole"):
        load_config(config_for(tmp_path, pixels, streaming=True))
