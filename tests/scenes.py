"""Tiny synthetic scenes for the raster tests: a GeoTIFF with band descriptions, nodata in one band, a NaN, and
polygons written in another CRS (WGS 84 GeoJSON) than the raster's (UTM 33N)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

UTM = "EPSG:32633"
ORIGIN = (330000.0, 5822040.0)  # top-left corner, metres
PIXEL = 10.0
NODATA = -9999.0
BANDS = ["blue", "green", "nir"]
WIDTH, HEIGHT = 24, 16


def spectra(seed: int = 0) -> np.ndarray:
    """(3, HEIGHT, WIDTH) float32: water on the left (dark nir), forest on the right (bright nir), noise."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 0.02, size=(3, HEIGHT, WIDTH)).astype(np.float32)
    left = np.arange(WIDTH) < WIDTH // 2
    values[0] += np.where(left, 0.10, 0.05)
    values[1] += np.where(left, 0.08, 0.09)
    values[2] += np.where(left, 0.02, 0.40)
    return values


def write_scene(path: Path, values: np.ndarray | None = None, *, nodata=NODATA, names=BANDS, crs=UTM, dtype="float32", holes=True) -> Path:
    """The scene; with `holes`, pixel (2, 3) is nodata in band 2 only and pixel (3, 14) is NaN in band 1."""
    import rasterio
    from rasterio.transform import from_origin

    values = spectra() if values is None else values
    values = values.astype(dtype)
    if holes:
        values[1, 2, 3] = nodata
        if values.dtype.kind == "f":
            values[0, 3, 14] = np.nan
    profile = {"driver": "GTiff", "width": values.shape[2], "height": values.shape[1], "count": values.shape[0],
               "dtype": dtype, "crs": crs, "transform": from_origin(*ORIGIN, PIXEL, PIXEL), "nodata": nodata}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(values)
        for i, name in enumerate(names or [], start=1):
            ds.set_band_description(i, name)
    return path


# Rectangles in pixel units (col0, row0, col1, row1), edges on pixel boundaries: four per class.
RECTANGLES = [
    ("water", (1, 1, 4, 5)), ("water", (6, 1, 10, 4)), ("water", (1, 8, 5, 12)), ("water", (6, 9, 11, 15)),
    ("forest", (13, 1, 17, 5)), ("forest", (19, 1, 23, 4)), ("forest", (13, 8, 18, 12)), ("forest", (19, 10, 23, 15)),
]


def rectangle_utm(box, shift=(0.0, 0.0)):
    c0, r0, c1, r1 = box
    x0, y0 = ORIGIN[0] + c0 * PIXEL + shift[0], ORIGIN[1] - r0 * PIXEL + shift[1]
    x1, y1 = ORIGIN[0] + c1 * PIXEL + shift[0], ORIGIN[1] - r1 * PIXEL + shift[1]
    return {"type": "Polygon", "coordinates": [[(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]]}


def write_polygons(path: Path, *, field="landuse", shift=(0.0, 0.0), rectangles=RECTANGLES) -> Path:
    """GeoJSON in WGS 84 (GDAL reads a GeoJSON without a crs member as EPSG:4326), so sampling must reproject."""
    from rasterio.warp import transform_geom

    features = [
        {"type": "Feature", "properties": {field: label, "note": "x"}, "geometry": transform_geom(UTM, "EPSG:4326", rectangle_utm(box, shift))}
        for label, box in rectangles
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def expected_pixels(values: np.ndarray) -> dict[tuple[int, int], str]:
    """(row, col) -> label for every labelled pixel whose bands are all valid."""
    out = {}
    for label, (c0, r0, c1, r1) in RECTANGLES:
        for r in range(r0, r1):
            for c in range(c0, c1):
                if (r, c) not in ((2, 3), (3, 14)):
                    out[(r, c)] = label
    return out
