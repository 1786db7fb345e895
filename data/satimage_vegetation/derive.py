"""Derives the binary vegetation example from the official satimage split (run from the repository root)."""

import csv
from pathlib import Path

# Cotton crop (2) and soil with vegetation stubble (5) carry vegetation; the other four classes are bare soil.
VEGETATED = {"2", "5"}


def derive(source: Path, target: Path) -> None:
    with source.open(newline="") as src, target.open("w", newline="") as dst:
        reader = csv.DictReader(src)
        fields = [name for name in reader.fieldnames if name != "label"] + ["vegetated"]
        writer = csv.DictWriter(dst, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in reader:
            label = row.pop("label")
            writer.writerow({**row, "vegetated": "true" if label in VEGETATED else "false"})


if __name__ == "__main__":
    here = Path(__file__).parent
    for split in ("train", "test"):
        derive(here.parent / "satimage" / f"satimage_{split}.csv", here / f"vegetation_{split}.csv")
