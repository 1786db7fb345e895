"""Draw a land-use map written by `mlp predict` next to the scene's true colours, as one PNG for the README.

    python data/sentinel2/draw_map.py SCENE.tif MAP.tif OUT.png
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import rasterio
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch


def draw(scene: str, map_path: str, out: str) -> None:
    with rasterio.open(scene) as src:
        names = list(src.descriptions)
        rgb = src.read([names.index(b) + 1 for b in ("B04", "B03", "B02")]).astype(np.float64)
    low, high = np.percentile(rgb[rgb > 0], (2, 98))
    rgb = np.clip((rgb - low) / (high - low), 0, 1).transpose(1, 2, 0)
    with rasterio.open(map_path) as ds:
        classes = ds.read(1, masked=True)
        tags = ds.tags(1)
        labels = [tags[f"class_{i}"] for i in range(len(tags))]
        colours = [np.array(ds.colormap(1)[i][:3]) / 255 for i in range(len(labels))]
        confidence = ds.read(2, masked=True) if ds.count > 1 else None
    panels = 3 if confidence is not None else 2
    fig, axes = plt.subplots(panels, 1, figsize=(9, 4.6 * panels), constrained_layout=True)
    axes[0].imshow(rgb)
    axes[0].set_title("Sentinel-2 L1C T33UUU, 2017-02-16 (B04, B03, B02)")
    axes[1].imshow(classes, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(labels) - 0.5, interpolation="nearest")
    axes[1].set_title("mlp predict: land use (MLP 64-64 on 13 bands, trained on OSM polygons)")
    axes[1].legend(handles=[Patch(color=c, label=n) for c, n in zip(colours, labels, strict=True)], loc="lower left", ncol=4, fontsize=8)
    if confidence is not None:
        shown = axes[2].imshow(confidence, cmap="viridis", vmin=0, vmax=100)
        axes[2].set_title("--confidence: top class probability x 100")
        fig.colorbar(shown, ax=axes[2], shrink=0.7)
    for ax in axes:
        ax.set_axis_off()
    fig.savefig(out, dpi=60)


if __name__ == "__main__":
    draw(*sys.argv[1:4])
