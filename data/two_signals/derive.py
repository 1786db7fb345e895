"""Generates the two-signal teaching table for `mlp explain` (run from the repository root; the output is fixed by the seed).

Eight input columns, of which only `b2` and `b5` decide the label; the rest, including the categorical `site`,
are noise the model should learn to ignore. `b2` enters linearly, so its signed attribution takes the sign of b2;
`b5` enters squared, so its attribution is positive whatever the sign of b5: a signed attribution says which way a
value pushed this row, not whether or how the column matters.
"""

import csv
from pathlib import Path

import numpy as np

ROWS, SEED = 2000, 7
SITES = ("north", "south", "east")


def table(rows: int = ROWS, seed: int = SEED) -> tuple[list[str], list[list]]:
    rng = np.random.default_rng(seed)
    bands = rng.normal(size=(rows, 7))  # b1..b7
    site = rng.choice(SITES, size=rows)
    signal = 1.5 * bands[:, 1] + bands[:, 4] ** 2 - 1.0  # b2 linear, b5 squared (its mean square is 1)
    label = signal + 0.3 * rng.normal(size=rows) > 0
    names = [f"b{j + 1}" for j in range(7)] + ["site", "label"]
    body = [[f"{v:.4f}" for v in bands[i]] + [site[i], "water" if label[i] else "land"] for i in range(rows)]
    return names, body


def write(path: Path) -> None:
    names, body = table()
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(body)


if __name__ == "__main__":
    write(Path(__file__).parent / "two_signals.csv")
