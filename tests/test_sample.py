"""`mlp sample`: rows, columns, reprojection, validity and the ways a newcomer can get it wrong."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("rasterio")
pytest.importorskip("pyogrio")

import pyarrow.parquet as pq

from mlp_cli.sample import parse_wkb

from scenes import (
    ORIGIN,
    PIXEL,
    RECTANGLES,
    expected_pixels,
    spectra,
    write_polygons,
    write_scene,
)


@pytest.fixture
def scene(tmp_path):
    return write_scene(tmp_path / "scene.tif"), write_polygons(tmp_path / "labels.geojson")


def test_one_row_per_labelled_valid_pixel_with_reprojected_polygons(invoke, scene, tmp_path):
    raster, labels = scene
    result = invoke("sample", raster, labels, "-o", tmp_path / "t.parquet", "--field", "landuse")
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "t.parquet")
    assert table.column_names == ["blue", "green", "nir", "landuse", "x", "y", "polygon"]
    values = spectra()
    want = expected_pixels(values)
    cols = np.round((np.asarray(table["x"]) - ORIGIN[0]) / PIXEL - 0.5).astype(int)
    rows = np.round((ORIGIN[1] - np.asarray(table["y"])) / PIXEL - 0.5).astype(int)
    # x, y are pixel centres: exactly half a pixel inside the pixel's corner
    np.testing.assert_allclose(np.asarray(table["x"]), ORIGIN[0] + (cols + 0.5) * PIXEL)
    got = {(r, c): label for r, c, label in zip(rows, cols, table["landuse"].to_pylist(), strict=True)}
    assert got == want  # the band-2-only nodata pixel and the NaN pixel are both gone
    assert len(got) == table.num_rows
    np.testing.assert_array_equal(np.asarray(table["nir"]), values[2][rows, cols])
    # polygon = the feature id; every rectangle's pixels share one id and no two rectangles share one
    ids = np.asarray(table["polygon"])
    for _label, (c0, r0, c1, r1) in RECTANGLES:
        inside = (cols >= c0) & (cols < c1) & (rows >= r0) & (rows < r1)
        assert len(np.unique(ids[inside])) == 1
    assert len(np.unique(ids)) == len(RECTANGLES)
    assert f"wrote {len(want)} rows" in result.stderr and "8 of 8 features" in result.stderr


def test_label_raster_on_the_same_grid_and_csv_output(invoke, scene, tmp_path):
    import rasterio

    raster, _ = scene
    labels = np.full((1, 16, 24), 0, dtype="uint8")  # 0 = nodata = unlabelled
    labels[0, 1:5, 1:4] = 3
    labels[0, 8:12, 13:18] = 7
    with rasterio.open(raster) as src:
        profile = src.profile | {"count": 1, "dtype": "uint8", "nodata": 0}
    with rasterio.open(tmp_path / "labels.tif", "w", **profile) as dst:
        dst.write(labels)
    result = invoke("sample", raster, tmp_path / "labels.tif", "-o", tmp_path / "t.csv", "--field", "cover")
    assert result.exit_code == 0, result.output
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(tmp_path / "t.csv")
    assert table.column_names == ["blue", "green", "nir", "cover", "x", "y"]
    counts = dict(zip(*np.unique(np.asarray(table["cover"]), return_counts=True), strict=True))
    assert counts == {3: 12 - 1, 7: 20}  # (2, 3) has nodata in band 2


def test_label_raster_on_another_grid_is_refused(invoke, scene, tmp_path):
    raster, _ = scene
    other = write_scene(tmp_path / "other.tif", spectra()[:1, :8, :8], names=None, holes=False)
    result = invoke("sample", raster, other, "-o", tmp_path / "t.parquet")
    assert result.exit_code == 2 and "not on the grid" in result.stderr


def test_labels_outside_the_scene_name_both_extents_and_crss(invoke, scene, tmp_path):
    raster, _ = scene
    far = write_polygons(tmp_path / "far.geojson", shift=(50_000.0, 0.0))
    result = invoke("sample", raster, far, "-o", tmp_path / "t.parquet", "--field", "landuse")
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "outside the scene" in line and "EPSG:4326" in line and "EPSG:32633" in line and "\n" not in line
    assert not (tmp_path / "t.parquet").exists()


def test_a_field_that_does_not_exist(invoke, scene, tmp_path):
    raster, labels = scene
    result = invoke("sample", raster, labels, "-o", tmp_path / "t.parquet", "--field", "landus")
    assert result.exit_code == 2 and "did you mean 'landuse'" in result.stderr and "note" in result.stderr


def test_output_equal_to_an_input_is_refused_and_the_input_survives(invoke, scene, tmp_path):
    raster, labels = scene
    before = raster.read_bytes()
    result = invoke("sample", raster, labels, "-o", raster, "--field", "landuse")
    assert result.exit_code == 2 and "Parquet (.parquet) or CSV (.csv)" in result.stderr
    link = tmp_path / "t.parquet"
    link.symlink_to(labels)
    result = invoke("sample", raster, labels, "-o", link, "--field", "landuse")
    assert result.exit_code == 2 and "is the input" in result.stderr
    assert raster.read_bytes() == before


def test_raster_without_crs_cannot_take_georeferenced_labels(invoke, tmp_path):
    raster = write_scene(tmp_path / "plain.tif", crs=None)
    labels = write_polygons(tmp_path / "labels.geojson")
    result = invoke("sample", raster, labels, "-o", tmp_path / "t.parquet", "--field", "landuse")
    assert result.exit_code == 2 and "has no CRS" in result.stderr


def test_one_band_int16_raster_with_nodata_min_and_a_symlink(invoke, tmp_path):
    values = (spectra()[2:3] * 10000).astype("int16")
    values[0, 2, 2] = -32768
    raster = write_scene(tmp_path / "nir.tif", values, nodata=-32768, names=None, dtype="int16", holes=False)
    link = tmp_path / "link.tif"
    link.symlink_to(raster)
    labels = write_polygons(tmp_path / "labels.geojson")
    result = invoke("sample", link, labels, "-o", tmp_path / "t.parquet", "--field", "landuse")
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "t.parquet")
    assert table.column_names[:2] == ["b1", "landuse"]
    assert table.schema.field("b1").type == "int16" and -32768 not in np.asarray(table["b1"])
    assert table.num_rows == len(expected_pixels(values)) + 2 - 1  # no holes but (2, 2): (2, 3) and (3, 14) are back


def test_wkb_parser_reads_what_gdal_writes():
    import struct

    ring = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 0.0)]
    polygon = struct.pack("<BII", 1, 3, 1) + struct.pack("<I", 4) + b"".join(struct.pack("<dd", *p) for p in ring)
    multi = struct.pack("<BII", 1, 6, 2) + polygon + polygon
    assert parse_wkb(multi) == {"type": "MultiPolygon", "coordinates": [[[list(p) for p in ring]]] * 2}
    point_z = struct.pack(">BI", 0, 1001) + struct.pack(">ddd", 5.0, 6.0, 7.0)  # big-endian ISO PointZ
    assert parse_wkb(point_z) == {"type": "Point", "coordinates": [5.0, 6.0]}


def test_missing_geo_extra_is_one_line(tmp_path):
    code = (
        "import sys; sys.modules['rasterio'] = None\n"
        "from mlp_cli.cli import main; sys.argv = ['mlp', 'sample', 'a.tif', 'b.gpkg', '-o', 't.parquet', '--field', 'c']; main()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=os.environ | {"COLUMNS": "200"})
    assert result.returncode == 2
    assert result.stderr.strip() == "error: rasters need rasterio: pip install 'mlp-cli[geo]'"


def test_help_imports_no_geo_package():
    code = "import sys; from typer.testing import CliRunner; from mlp_cli.cli import app; CliRunner().invoke(app, ['--help']); CliRunner().invoke(app, ['sample', '--help']); print(sorted(m for m in ('rasterio', 'pyogrio', 'torch') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr
