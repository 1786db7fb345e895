"""`mlp predict` on a raster: a map on the scene's grid, window by window, so memory stays flat whatever its size.

Band 1 holds the class (the user's label where labels are integers, else the class index, with the names in the
band's tags and a colour table) or the regression value; `confidence` adds the top probability x 100, `proba` one
band per class. A pixel with any nodata or NaN band is nodata in every output band. The map is written to a
temporary file next to the output and renamed at the end, so an interrupted run leaves no half map behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mlp_cli import files
from mlp_cli.data import Preprocessor, label_text
from mlp_cli.errors import DataError
from mlp_cli.evaluate import autocast, load_checkpoint_model, model_outputs, output_values
from mlp_cli.raster import (
    band_names,
    gdal_env,
    open_raster,
    require_geo,
    window_frame,
)
from mlp_cli.tasks import TASKS

TILE = 256  # output block side: 65,536 pixels per forward pass


@dataclass
class MapReport:
    path: Path
    width: int
    height: int
    bands: list[str]
    valid: int  # pixels predicted
    invalid: int  # pixels left nodata


@dataclass
class Encoding:
    """How band 1 stores a prediction: data type, nodata value, and whether it holds labels or class indices."""

    dtype: str
    nodata: float
    codes: np.ndarray | None  # class index -> value written (None: regression values)
    names: list[str] | None  # class index -> label text, when band 1 holds indices


def encoding(prep: Preprocessor, proba: bool) -> Encoding:
    if not TASKS[prep.task].classes:
        return Encoding("float32", float("nan"), None, None)
    labels = prep.labels
    integer = all(type(label) is int for label in labels)
    codes = np.asarray(labels if integer else range(len(labels)), dtype=np.int64)
    names = None if integer else [label_text(label) for label in labels]
    if proba:  # a GeoTIFF has one data type for all bands: the probabilities decide it
        return Encoding("float32", float("nan"), codes, names)
    low, high = int(codes.min()), int(codes.max())
    if low >= 0 and high < 255:
        return Encoding("uint8", 255, codes, names)
    if low >= 0 and high < 65535:
        return Encoding("uint16", 65535, codes, names)
    if low > -(2**31) and high < 2**31:
        return Encoding("int32", -(2**31), codes, names)
    raise DataError(f"class labels {low}..{high} do not fit a 32-bit map band")


def check_output(output: Path, *inputs: Path) -> None:
    """files.check_output (not the raster or checkpoint, not a folder), plus the map's own rules: .tif, a folder."""
    if not output.name.lower().endswith((".tif", ".tiff")):
        raise DataError(f"{output}: the map is written as a GeoTIFF; give -o a name ending in .tif")
    files.check_output(output, inputs=inputs)
    if not output.parent.is_dir():
        raise DataError(f"-o {output}: folder {output.parent} does not exist")


def match_bands(prep: Preprocessor, names: list[str], raster: Path) -> list[int]:
    """1-based band indexes in the checkpoint's feature order, matched by name."""
    if prep.categorical:
        raise DataError(f"the model one-hot encodes {', '.join(prep.categorical)}; a raster holds numbers only")
    missing = [f for f in prep.features if f not in names]
    if missing:
        raise DataError(
            f"{raster}: the model needs bands {', '.join(map(repr, missing))}, which the raster lacks; "
            f"its bands are {', '.join(names)} (named by band description, else b1..bN)"
            + ("; train with data.exclude: [x, y] (and data.group: polygon) so coordinates are not features"
               if set(missing) & {"x", "y", "polygon"} else "")
        )
    return [names.index(f) + 1 for f in prep.features]


@torch.inference_mode()
def predict_map(
    checkpoint: str | Path, raster: str | Path, output: str | Path, *, confidence: bool = False, proba: bool = False,
    device: str = "cpu", progress: Callable[[int, int], None] | None = None,
) -> MapReport:
    """Write the map; `progress(done, total)` is called with pixel counts after each window."""
    require_geo()
    import rasterio

    raster, output = Path(raster), Path(output)
    check_output(output, raster, Path(checkpoint))
    _, config, model, prep = load_checkpoint_model(checkpoint, device)
    target_device = next(model.parameters()).device
    enc = encoding(prep, proba)
    with gdal_env(), open_raster(raster) as src:
        indexes = match_bands(prep, band_names(src), raster)
        classes = TASKS[prep.task].classes
        out_names = ["class" if classes else (prep.target or "value")]
        if confidence and classes:
            out_names.append("confidence")
        if proba and classes:
            out_names += [f"prob_{label_text(label)}" for label in prep.labels]
        profile = {
            "driver": "GTiff", "width": src.width, "height": src.height, "count": len(out_names), "dtype": enc.dtype,
            "crs": src.crs, "transform": src.transform, "nodata": enc.nodata, "tiled": True, "blockxsize": TILE,
            "blockysize": TILE, "compress": "deflate", "BIGTIFF": "IF_SAFER",
        }
        total, done, invalid = src.width * src.height, 0, 0
        with files.written_beside(output, suffix=".tif") as tmp, rasterio.open(tmp, "w", **profile) as dst:
            for i, name in enumerate(out_names, start=1):
                dst.set_band_description(i, name)
            for _, window in dst.block_windows(1):
                frame, bad = window_frame(src, indexes, prep.features, window, str(raster))
                block = np.full((len(out_names), *bad.shape), enc.nodata, dtype=enc.dtype)
                if len(frame):
                    x = torch.from_numpy(prep.inputs(frame)).to(target_device)
                    with autocast(target_device, config.train.precision):
                        out = model_outputs(model, x, config.task).float().cpu()
                    flat = block.reshape(len(out_names), -1)
                    assert frame.rows is not None  # Frame.__post_init__ fills rows
                    _fill(flat, frame.rows, out, prep, enc, confidence, proba)
                dst.write(block, window=window)
                invalid += int(bad.sum())
                done += bad.size
                if progress is not None:
                    progress(done, total)
            _describe_classes(dst, prep, enc)
        return MapReport(output, src.width, src.height, out_names, total - invalid, invalid)


def _fill(flat: np.ndarray, rows: np.ndarray, out: torch.Tensor, prep: Preprocessor, enc: Encoding, confidence: bool, proba: bool) -> None:
    values = output_values(prep.task, prep, out)  # target units, or probabilities [rows, classes]
    if not TASKS[prep.task].classes:
        flat[0, rows] = values
        return
    probs, index = values, values.argmax(axis=1)
    top = probs[np.arange(len(index)), index]
    assert enc.codes is not None  # a classification encoding maps every class to a code
    flat[0, rows] = enc.codes[index]
    band = 1
    if confidence:
        value = top * 100
        flat[band, rows] = value if enc.dtype == "float32" else np.round(value)
        band += 1
    if proba:
        flat[band : band + probs.shape[1], rows] = probs.T


def _describe_classes(dst, prep: Preprocessor, enc: Encoding) -> None:
    if not TASKS[prep.task].classes:
        dst.update_tags(1, target=prep.target or "")
        return
    if enc.names is not None:  # band 1 holds indices: say what each one means, and colour them
        dst.update_tags(1, **{f"class_{i}": name for i, name in enumerate(enc.names)})
        if enc.dtype in ("uint8", "uint16"):
            dst.write_colormap(1, palette(len(enc.names)))
    else:
        dst.update_tags(1, labels=",".join(label_text(label) for label in prep.labels))


def palette(n: int) -> dict[int, tuple[int, int, int, int]]:
    """Distinct colours for n classes (tab10, then tab20, then a hue wheel)."""
    tab = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
    colours = {}
    for i in range(n):
        if i < len(tab):
            r, g, b = tab[i]
        else:
            import colorsys

            r, g, b = (int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618) % 1, 0.65, 0.9))
        colours[i] = (r, g, b, 255)
    return colours
