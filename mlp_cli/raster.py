"""Rasters as tables: which files are rasters, band names, validity (any band nodata or NaN), pixels as a `Frame`.

rasterio is an optional extra (`pip install 'mlp-cli[geo]'`): it is imported only when a raster is used.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np

from mlp_cli.data.readers import Frame
from mlp_cli.errors import DataError, MLPError

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img", ".nc")
GDAL_CACHE_MB = 256  # GDAL's block cache; with window-by-window work this bounds memory whatever the scene size


class MissingExtra(MLPError):
    """An optional package a command needs is not installed."""


def require_geo():
    """rasterio, or one line that says how to install it."""
    try:
        import rasterio
    except ImportError:
        raise MissingExtra("rasters need rasterio: pip install 'mlp-cli[geo]'") from None
    return rasterio


def is_raster(path: Path) -> bool:
    return Path(path).name.lower().endswith(RASTER_SUFFIXES)


@contextlib.contextmanager
def gdal_env():
    """GDAL with a bounded block cache; rasterio's own `Affine * Affine` deprecation notices are not the user's business."""
    rasterio = require_geo()
    with warnings.catch_warnings(), rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning, message=".*matmul.*")
        yield


def open_raster(path: Path):
    """An open rasterio dataset, or a DataError naming the file."""
    rasterio = require_geo()
    path = Path(path)
    if not path.exists():
        raise DataError(f"raster not found: {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a raster")
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"{path}: not a raster GDAL can read ({str(exc).splitlines()[0]})") from None


def band_names(ds) -> list[str]:
    """Band descriptions when every band has a distinct one, else b1..bN."""
    descriptions = [d.strip() if d else "" for d in ds.descriptions]
    if all(descriptions) and len(set(descriptions)) == len(descriptions):
        return descriptions
    return [f"b{i}" for i in range(1, ds.count + 1)]


def invalid_pixels(ds, values: np.ndarray, indexes: list[int], window) -> np.ndarray:
    """(rows, cols) True where ANY of the bands read is nodata, masked or NaN.

    rasterio's `dataset_mask` flags a pixel only when every band is nodata; a pixel missing one band has no
    usable spectrum either, so one bad band is enough here.
    """
    from rasterio.enums import MaskFlags

    bad = np.zeros(values.shape[1:], dtype=bool)
    if values.dtype.kind == "f":
        bad |= np.isnan(values).any(axis=0)
    for j, band in enumerate(indexes):
        flags = ds.mask_flag_enums[band - 1]
        if flags == [MaskFlags.all_valid]:
            continue
        nodata = ds.nodatavals[band - 1]
        if flags == [MaskFlags.nodata] and nodata is not None:
            bad |= np.isnan(values[j]) if np.isnan(nodata) else values[j] == nodata
        else:  # per-dataset mask, alpha band: GDAL knows best
            bad |= ds.read_masks(band, window=window) == 0
    return bad


def window_frame(ds, indexes: list[int], names: list[str], window, origin: str) -> tuple[Frame, np.ndarray]:
    """The valid pixels of one window as a Frame (rows = flat positions in the window) and the window's invalid mask."""
    values = ds.read(indexes, window=window)
    bad = invalid_pixels(ds, values, indexes, window)
    keep = np.flatnonzero(~bad.ravel())
    pixels = values.reshape(len(indexes), -1)[:, keep].T.astype(np.float32)
    return Frame(origin, "raster", np.ascontiguousarray(pixels), list(names), {}, None, keep, bad.size), bad


def crs_text(crs) -> str:
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()[:60]


def bounds_text(bounds) -> str:
    left, bottom, right, top = bounds
    return f"x {left:.6g}..{right:.6g}, y {bottom:.6g}..{top:.6g}"
