"""Raster `mlp predict`: the map equals table predictions on the same pixels; nodata, bands, encodings, Ctrl-C."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rasterio")
pytest.importorskip("pyogrio")

import rasterio

from mlp_cli.files import TEMP_PREFIX

from conftest import write_config, write_csv
from scenes import BANDS, spectra, write_polygons, write_scene


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A scene, its sampled table and three checkpoints: text labels, integer labels, regression."""
    from typer.testing import CliRunner

    from mlp_cli.cli import app

    folder = tmp_path_factory.mktemp("scene")
    raster = write_scene(folder / "scene.tif")
    labels = write_polygons(folder / "labels.geojson")
    def run(*args):
        return CliRunner().invoke(app, [str(a) for a in args])
    assert run("sample", raster, labels, "-o", folder / "t.csv", "--field", "landuse").exit_code == 0
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(folder / "t.csv")
    code = np.where(np.asarray(table["landuse"]) == "water", 10, 20)
    table = table.append_column("code", pa.array(code)).append_column("bright", pc.add(table["nir"], table["blue"]))
    pacsv.write_csv(table, folder / "t2.csv")
    checkpoints = {}
    for name, task, target in (("text", "multiclass", "landuse"), ("int", "multiclass", "code"), ("reg", "regression", "bright")):
        drop = [c for c in ("landuse", "code", "bright") if c != target]
        config = write_config(folder / f"{name}.yaml", {
            "task": task, "data": {"train": "t2.csv", "target": target, "group": "polygon", "exclude": ["x", "y", *drop]},
            "model": {"hidden": [8]}, "train": {"epochs": 3, "batch_size": 16, "lr": 0.01},
            "output_dir": str(folder / name),
        })
        result = run("train", config, "--quiet")
        assert result.exit_code == 0, result.output
        checkpoints[name] = folder / name / "best.pt"
    return folder, raster, checkpoints


def read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.profile, ds.descriptions, ds.tags(1), ds


def valid_mask(raster):
    with rasterio.open(raster) as ds:
        values = ds.read()
    return ~((values == ds.nodata) | np.isnan(values)).any(axis=0)


def test_map_equals_table_predictions_on_the_same_pixels(invoke, trained, tmp_path):
    from mlp_cli.evaluate import predict

    _, raster, checkpoints = trained
    result = invoke("predict", checkpoints["text"], raster, "-o", tmp_path / "map.tif", "--confidence", "--proba")
    assert result.exit_code == 0, result.output
    values, profile, names, tags, _ = read(tmp_path / "map.tif")
    with rasterio.open(raster) as src:
        assert (profile["crs"], profile["transform"], profile["width"], profile["height"]) == (src.crs, src.transform, src.width, src.height)
    assert names == ("class", "confidence", "prob_forest", "prob_water")
    assert tags == {"class_0": "forest", "class_1": "water"} and profile["dtype"] == "float32"
    valid = valid_mask(raster)
    pixels = spectra().reshape(3, -1)[:, valid.ravel()]
    write_csv(tmp_path / "pixels.csv", {name: pixels[j] for j, name in enumerate(BANDS)})
    table = predict(checkpoints["text"], tmp_path / "pixels.csv")
    # Same float32 inputs and weights; only the batch composition could differ, so probabilities agree to a few
    # float32 ulps of the logits (~1e-6 after softmax), far below any difference that matters.
    for j, label in enumerate(["forest", "water"]):
        np.testing.assert_allclose(values[2 + j][valid], np.asarray(table[f"prob_{label}"]), atol=1e-5)
    names_by_index = np.array(["forest", "water"])
    assert (names_by_index[values[0][valid].astype(int)] == np.asarray(table["prediction"])).all()
    np.testing.assert_allclose(values[1][valid], values[2:, valid].max(axis=0) * 100, rtol=1e-6)
    # a pixel with one bad band is nodata in every band
    assert np.isnan(values[:, ~valid]).all() and (~valid).sum() == 2


def test_text_labels_get_indices_tags_and_a_colour_table(invoke, trained, tmp_path):
    _, raster, checkpoints = trained
    assert invoke("predict", checkpoints["text"], raster, "-o", tmp_path / "m.tif", "--confidence").exit_code == 0
    values, profile, names, tags, _ = read(tmp_path / "m.tif")
    assert profile["dtype"] == "uint8" and profile["nodata"] == 255 and names == ("class", "confidence")
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert ds.colormap(1)[0][:3] != ds.colormap(1)[1][:3]
    valid = valid_mask(raster)
    assert set(np.unique(values[0][valid])) <= {0, 1} and (values[:, ~valid] == 255).all()
    assert values[1][valid].min() >= 50 and values[1][valid].max() <= 100  # two classes: top probability >= 0.5
    # the scene is easy: water on the left, forest on the right
    assert (values[0][:, :10][valid[:, :10]] == 1).mean() > 0.9


def test_integer_labels_are_written_as_themselves(invoke, trained, tmp_path):
    _, raster, checkpoints = trained
    assert invoke("predict", checkpoints["int"], raster, "-o", tmp_path / "m.tif").exit_code == 0
    values, profile, _, tags, _ = read(tmp_path / "m.tif")
    valid = valid_mask(raster)
    assert set(np.unique(values[0][valid])) <= {10, 20} and tags["labels"] == "10,20"


def test_regression_writes_float32_values_in_target_units(invoke, trained, tmp_path):
    _, raster, checkpoints = trained
    assert invoke("predict", checkpoints["reg"], raster, "-o", tmp_path / "m.tif").exit_code == 0
    values, profile, names, _, _ = read(tmp_path / "m.tif")
    assert profile["dtype"] == "float32" and names == ("bright",)
    valid = valid_mask(raster)
    assert np.isfinite(values[0][valid]).all() and np.isnan(values[0][~valid]).all()
    assert 0.0 < np.median(values[0][valid]) < 0.6  # nir + blue lies between 0.1 and 0.5 here


def test_missing_bands_are_named(invoke, trained, tmp_path):
    _, _, checkpoints = trained
    other = write_scene(tmp_path / "other.tif", names=["blue", "red", "swir"])
    result = invoke("predict", checkpoints["text"], other, "-o", tmp_path / "m.tif")
    assert result.exit_code == 2
    assert "needs bands 'green', 'nir'" in result.stderr and "blue, red, swir" in result.stderr
    assert not (tmp_path / "m.tif").exists()


def test_output_equal_to_the_raster_is_refused(invoke, trained, tmp_path):
    _, raster, checkpoints = trained
    copy = tmp_path / "scene.tif"
    copy.write_bytes(raster.read_bytes())
    link = tmp_path / "link.tif"
    link.symlink_to(copy)
    for output in (copy, link):
        result = invoke("predict", checkpoints["text"], copy, "-o", output)
        assert result.exit_code == 2 and "is the input file" in result.stderr  # files.check_output
    assert copy.read_bytes() == raster.read_bytes()
    result = invoke("predict", checkpoints["text"], copy)
    assert result.exit_code == 2 and "-o MAP.tif" in result.stderr


def test_ctrl_c_leaves_no_map_and_no_temporary_file(invoke, trained, tmp_path, monkeypatch):
    import mlp_cli.raster_predict as rp

    _, raster, checkpoints = trained
    (tmp_path / "m.tif").write_bytes(b"old map")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rp, "_fill", interrupted)
    result = invoke("predict", checkpoints["text"], raster, "-o", tmp_path / "m.tif")
    assert result.exit_code == 130 and "no map written" in result.stderr
    assert (tmp_path / "m.tif").read_bytes() == b"old map"
    assert not list(tmp_path.glob(f"{TEMP_PREFIX}*"))


def test_table_options_refused_for_tables(invoke, trained):
    folder, _, checkpoints = trained
    result = invoke("predict", checkpoints["text"], folder / "t.csv", "--proba")
    assert result.exit_code == 2 and "apply to raster maps" in result.stderr
