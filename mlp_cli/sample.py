"""`mlp sample`: a training table from a raster scene and labels (vector polygons/points, or a label raster).

Vector labels are reprojected to the raster's CRS, burnt window by window into feature ids, and every labelled
pixel whose bands are all valid becomes one row: band columns, the target, the pixel centre `x`, `y` and the
feature id `polygon` (use it as data.group so that no polygon lands on both sides of a split).
"""

from __future__ import annotations

import difflib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlp_cli.errors import DataError
from mlp_cli.raster import (
    band_names,
    bounds_text,
    crs_text,
    gdal_env,
    invalid_pixels,
    is_raster,
    open_raster,
    require_geo,
)

VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".kml", ".gml", ".sqlite", ".zip")
TABLE_SUFFIXES = (".parquet", ".pq", ".csv")
STRIP_PIXELS = 1 << 22  # pixels per strip of rows burnt and read at once: memory stays bounded on a full tile


@dataclass
class SampleReport:
    rows: int
    classes: dict  # label -> rows
    features_used: int  # features (or label values) that gave at least one row
    features_total: int | None  # features in the vector file; None for a label raster
    invalid: int  # labelled pixels dropped because a band was nodata or NaN
    columns: list[str]


def sample(raster: Path, labels: Path, output: Path, field: str | None = None) -> SampleReport:
    """Write the table to `output` (Parquet or CSV, atomically) and say what went in."""
    raster, labels, output = Path(raster), Path(labels), Path(output)
    _check_output(output, raster, labels)
    require_geo()
    with gdal_env(), open_raster(raster) as ds:
        names = band_names(ds)
        if is_raster(labels):
            target = field or "label"
            columns, report_features = _sample_label_raster(ds, raster, labels, target)
            id_column = None
        else:
            if not field:
                raise DataError(f"{labels}: --field is required with vector labels: the attribute that holds the class or value")
            target = field
            columns, report_features = _sample_vector(ds, raster, labels, field)
            id_column = "polygon"
    values, target_values, xs, ys, ids, invalid = columns
    clash = [c for c in (target, "x", "y", id_column) if c in names]
    if clash:
        raise DataError(f"{raster}: band name {clash[0]!r} clashes with a column mlp sample adds; rename the band description")
    if not len(target_values):
        raise DataError(
            f"{labels}: the labels overlap the scene but no labelled pixel has valid data in every band "
            f"({invalid} labelled pixels are nodata or NaN)"
        )
    table = _table(names, values, target, target_values, xs, ys, id_column, ids)
    _write(table, output)
    uniques, counts = np.unique(np.asarray(target_values, dtype=object).astype(str), return_counts=True)
    used = len(np.unique(ids)) if ids is not None else len(uniques)
    return SampleReport(len(target_values), dict(zip(uniques.tolist(), counts.tolist(), strict=True)), used, report_features, invalid, table.column_names)


def _check_output(output: Path, raster: Path, labels: Path) -> None:
    """files.check_output (not an input, not a folder), plus the table's own rules: a known ending, an existing folder."""
    from mlp_cli.files import check_output

    if not output.name.lower().endswith(TABLE_SUFFIXES):
        raise DataError(f"{output}: the table is written as Parquet (.parquet) or CSV (.csv); pick one of those endings")
    check_output(output, inputs=[raster, labels])
    if not output.parent.is_dir():
        raise DataError(f"-o {output}: folder {output.parent} does not exist")


# ---------------------------------------------------------------------------------------------- vector labels


def _read_vector(labels: Path, field: str):
    import pyogrio

    if not labels.exists():
        raise DataError(f"labels not found: {labels}")
    try:
        info = pyogrio.read_info(labels)
    except Exception as exc:  # noqa: BLE001  pyogrio raises DataSourceError and friends for anything unreadable
        raise DataError(f"{labels}: not a vector file GDAL can read ({str(exc).splitlines()[0]})") from None
    fields = [str(f) for f in info["fields"]]
    if field not in fields:
        close = difflib.get_close_matches(field, fields, n=1)
        raise DataError(
            f"{labels}: no attribute {field!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; the file has: {', '.join(fields) or '(no attributes)'}"
        )
    meta, table = pyogrio.read_arrow(labels, columns=[field], return_fids=True)
    # Without a named geometry or fid column, pyogrio appends wkb_geometry and puts the fid first (OGC_FID, fid, ...).
    geometry = table.column(meta["geometry_name"] or table.column_names[-1]).to_pylist()
    fids = table.column(meta.get("fid_column") or table.column_names[0]).to_pylist()
    return meta.get("crs"), fids, table.column(field).to_pylist(), geometry


def _sample_vector(ds, raster: Path, labels: Path, field: str):
    from rasterio.crs import CRS
    from rasterio.warp import transform_geom

    crs_name, fids, values, wkbs = _read_vector(labels, field)
    vector_crs = CRS.from_user_input(crs_name) if crs_name else None
    if ds.crs is None and vector_crs is not None:
        raise DataError(f"{raster} has no CRS, so {labels} ({crs_text(vector_crs)}) cannot be placed on it; georeference the raster first")
    geoms, kept_values, kept_ids = [], [], []
    for fid, value, wkb in zip(fids, values, wkbs, strict=True):
        if wkb is None or value is None:
            continue  # no geometry or no label: nothing to learn from
        geom = parse_wkb(wkb)
        if vector_crs is not None and vector_crs != ds.crs:
            geom = transform_geom(vector_crs, ds.crs, geom)
        geoms.append(geom)
        kept_values.append(value)
        kept_ids.append(fid)
    if not geoms:
        raise DataError(f"{labels}: no feature has both a geometry and a value in {field!r}")
    boxes = np.array([_bbox(g) for g in geoms])
    left, bottom, right, top = ds.bounds
    inside = (boxes[:, 0] < right) & (boxes[:, 2] > left) & (boxes[:, 1] < top) & (boxes[:, 3] > bottom)
    if not inside.any():
        extent = (boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max())
        raise DataError(
            f"{labels}: every label lies outside the scene: labels {bounds_text(extent)} "
            f"({crs_text(vector_crs)}, shown in {crs_text(ds.crs)}) against raster {raster} {bounds_text(ds.bounds)} ({crs_text(ds.crs)})"
        )
    burner = _burner(ds, geoms, boxes)
    values_array, ids_array = np.asarray(kept_values, dtype=object), np.asarray(kept_ids, dtype=np.int64)

    def burn(window):
        index = burner(window)
        return index >= 0, lambda rows, cols: (values_array[index[rows, cols]], ids_array[index[rows, cols]])

    columns = _collect(ds, burn)
    if not len(columns[1]) and columns[5] == 0:
        raise DataError(
            f"{labels}: the labels overlap the scene ({bounds_text(ds.bounds)}, {crs_text(ds.crs)}) but cover no pixel centre; "
            "are they points or slivers smaller than a pixel?"
        )
    return columns, len(geoms)


def _burner(ds, geoms, boxes):
    """A function from a window to the index of the feature covering each pixel centre (-1 where none)."""
    from rasterio.features import rasterize
    from rasterio.windows import bounds as window_bounds, transform as window_transform

    def burn(window) -> np.ndarray:
        left, bottom, right, top = window_bounds(window, ds.transform)
        hits = np.flatnonzero((boxes[:, 0] <= right) & (boxes[:, 2] >= left) & (boxes[:, 1] <= top) & (boxes[:, 3] >= bottom))
        shape = (int(window.height), int(window.width))
        if not len(hits):
            return np.full(shape, -1, dtype=np.int32)
        return rasterize(
            ((geoms[i], int(i)) for i in hits), out_shape=shape, transform=window_transform(window, ds.transform),
            fill=-1, dtype="int32",
        )

    return burn


def _bbox(geom: dict) -> tuple[float, float, float, float]:
    coords = np.asarray(list(_flatten(geom["coordinates"])), dtype=np.float64).reshape(-1, 2)
    return coords[:, 0].min(), coords[:, 1].min(), coords[:, 0].max(), coords[:, 1].max()


def _flatten(coords):
    if coords and isinstance(coords[0], (int, float)):
        yield from coords[:2]
        return
    for item in coords:
        yield from _flatten(item)


# ---------------------------------------------------------------------------------------------- label raster


def _sample_label_raster(ds, raster: Path, labels: Path, target: str):
    with open_raster(labels) as lab:
        if lab.count != 1:
            raise DataError(f"{labels}: a label raster has one band; this one has {lab.count}")
        if (lab.width, lab.height) != (ds.width, ds.height) or lab.transform != ds.transform or lab.crs != ds.crs:
            raise DataError(
                f"{labels} is not on the grid of {raster}: {lab.width}x{lab.height} {bounds_text(lab.bounds)} ({crs_text(lab.crs)}) "
                f"against {ds.width}x{ds.height} {bounds_text(ds.bounds)} ({crs_text(ds.crs)}); resample it onto the scene's grid first"
            )

        def burn(window):
            values = lab.read(1, window=window)
            labelled = ~invalid_pixels(lab, values[None], [1], window)
            return labelled, lambda rows, cols: (values[rows, cols], None)

        columns = _collect(ds, burn)
    if not len(columns[1]) and columns[5] == 0:
        raise DataError(f"{labels}: every pixel is nodata (unlabelled); nothing to sample")
    return columns, None


# ---------------------------------------------------------------------------------------------- collecting rows


def _strips(ds):
    from rasterio.windows import Window

    height = max(1, min(ds.height, STRIP_PIXELS // max(ds.width, 1)))
    for row in range(0, ds.height, height):
        yield Window(0, row, ds.width, min(height, ds.height - row))


def _collect(ds, burn):
    """Band values, targets, x, y, ids and the count of labelled-but-invalid pixels, strip by strip.

    `burn(window)` gives the window's labelled pixels and a function from their (rows, cols) to (targets, ids).
    """
    indexes = list(range(1, ds.count + 1))
    parts: dict[str, list] = {"values": [], "target": [], "x": [], "y": [], "ids": []}
    invalid = 0
    for window in _strips(ds):
        labelled, fetch = burn(window)
        if not labelled.any():
            continue
        values = ds.read(indexes, window=window)
        bad = invalid_pixels(ds, values, indexes, window)
        invalid += int((labelled & bad).sum())
        rows, cols = np.nonzero(labelled & ~bad)
        target, ids = fetch(rows, cols)
        parts["values"].append(values[:, rows, cols].T)
        parts["target"].append(target)
        parts["ids"].append(ids)
        centre_row, centre_col = rows + int(window.row_off) + 0.5, cols + int(window.col_off) + 0.5
        t = ds.transform
        parts["x"].append(t.a * centre_col + t.b * centre_row + t.c)
        parts["y"].append(t.d * centre_col + t.e * centre_row + t.f)
    if not parts["values"]:
        empty = np.empty((0, ds.count), dtype=ds.dtypes[0])
        return empty, np.array([]), np.array([]), np.array([]), None, invalid
    ids = None if parts["ids"][0] is None else np.concatenate(parts["ids"])
    return (
        np.concatenate(parts["values"]), np.concatenate(parts["target"]), np.concatenate(parts["x"]),
        np.concatenate(parts["y"]), ids, invalid,
    )


def _table(names, values, target, target_values, xs, ys, id_column, ids):
    import pyarrow as pa

    columns = {name: pa.array(values[:, j]) for j, name in enumerate(names)}
    target_values = np.asarray(target_values)
    if target_values.dtype == object:
        kinds = {type(v) for v in target_values}
        target_values = target_values.astype(np.int64 if kinds <= {int} else str) if kinds <= {int, str} else target_values.astype(str)
    columns[target] = pa.array(target_values)
    columns["x"], columns["y"] = pa.array(xs), pa.array(ys)
    if id_column:
        columns[id_column] = pa.array(np.asarray(ids, dtype=np.int64))
    return pa.table(columns)


def _write(table, output: Path) -> None:
    from mlp_cli.files import write_atomic

    if output.name.lower().endswith(".csv"):
        import pyarrow.csv as pacsv

        def write(handle) -> None:
            # pyarrow quotes every header name; write the header as a person would, and let pyarrow write the rows.
            names = ('"' + n.replace('"', '""') + '"' if any(ch in n for ch in ',"\n') else n for n in table.column_names)
            handle.write((",".join(names) + "\n").encode())
            pacsv.write_csv(table, handle, pacsv.WriteOptions(include_header=False, quoting_style="needed"))

        write_atomic(output, write)
    else:
        import pyarrow.parquet as pq

        write_atomic(output, lambda handle: pq.write_table(table, handle))


# ---------------------------------------------------------------------------------------------- WKB


_WKB_TYPES = {1: "Point", 2: "LineString", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString", 6: "MultiPolygon"}


def parse_wkb(data: bytes) -> dict:
    """A GeoJSON-like dict from ISO or extended WKB (2-D, Z, M, ZM); rasterio burns and reprojects those dicts.

    A few lines instead of a dependency: shapely is not part of the geo extra and pyogrio hands back WKB.
    """
    geom, _ = _wkb_geometry(memoryview(data), 0)
    return geom


def _wkb_geometry(buf, offset: int):
    order = "<" if buf[offset] == 1 else ">"
    (code,) = struct.unpack_from(order + "I", buf, offset + 1)
    offset += 5
    dims = 2
    if code & 0x20000000:  # EWKB SRID follows
        offset += 4
    if code & 0x80000000 or code & 0x40000000:  # EWKB Z / M flags
        dims += bool(code & 0x80000000) + bool(code & 0x40000000)
        code &= 0x0FFFFFFF
    else:
        kind, base = divmod(code, 1000)
        dims += {0: 0, 1: 1, 2: 1, 3: 2}[kind]
        code = base
    name = _WKB_TYPES.get(code)
    if name is None:
        raise DataError(f"unsupported geometry type (WKB code {code}); labels are points, lines or polygons")

    def points(offset):
        (count,) = struct.unpack_from(order + "I", buf, offset)
        flat = np.frombuffer(buf, dtype=order + "f8", count=count * dims, offset=offset + 4).reshape(count, dims)
        return flat[:, :2].tolist(), offset + 4 + 8 * count * dims

    if name == "Point":
        xy = np.frombuffer(buf, dtype=order + "f8", count=dims, offset=offset)[:2].tolist()
        return {"type": name, "coordinates": xy}, offset + 8 * dims
    if name == "LineString":
        coords, offset = points(offset)
        return {"type": name, "coordinates": coords}, offset
    if name == "Polygon":
        (rings,) = struct.unpack_from(order + "I", buf, offset)
        offset += 4
        coords = []
        for _ in range(rings):
            ring, offset = points(offset)
            coords.append(ring)
        return {"type": name, "coordinates": coords}, offset
    (parts,) = struct.unpack_from(order + "I", buf, offset)
    offset += 4
    coords = []
    for _ in range(parts):
        part, offset = _wkb_geometry(buf, offset)
        coords.append(part["coordinates"])
    return {"type": name, "coordinates": coords}, offset
