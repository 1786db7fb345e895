"""Grouped splits: whole groups (e.g. the polygon a pixel came from) on one side, stratified by class as far as groups allow."""

from __future__ import annotations

import numpy as np

from mlp_cli.errors import DataError


def group_split_indices(
    groups: np.ndarray, strata: np.ndarray | None, fraction: float, seed: int, stream: int, origin: str = "data"
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) row positions with every group entirely on one side.

    Each group is counted for the class most of its rows carry; per class, whole groups are held out, in a seeded
    random order, until the held-out rows come closest to `fraction` of that class's rows. A class whose rows all lie
    in one group stays on the kept side (a split cannot cut a group). Neighbouring pixels of one polygon are nearly
    copies of each other, so a pixel-level split would measure memory, not generalisation.
    """
    n = len(groups)
    if fraction <= 0:
        return np.arange(n), np.array([], dtype=np.int64)
    names, inverse = np.unique(groups, return_inverse=True)
    n_groups = len(names)
    if n_groups < 2:
        raise DataError(f"{origin}: data.group holds a single group ({names[0]!r}); holding out whole groups needs at least two")
    size = np.bincount(inverse, minlength=n_groups)
    if strata is None:
        dominant = np.zeros(n_groups, dtype=np.int64)
    else:
        classes, codes = np.unique(strata, return_inverse=True)
        counts = np.zeros((n_groups, len(classes)), dtype=np.int64)
        np.add.at(counts, (inverse, codes), 1)
        dominant = counts.argmax(axis=1)
    rng = np.random.default_rng([seed, stream])
    held: list[np.ndarray] = []
    for value in np.unique(dominant):
        members = np.flatnonzero(dominant == value)
        if len(members) < 2:
            continue
        rng.shuffle(members)
        cumulative = np.cumsum(size[members])
        want = fraction * cumulative[-1]
        k = int(np.searchsorted(cumulative, want))  # first k+1 groups reach want; k or k+1, whichever is closer
        if k < len(members) and abs(cumulative[k] - want) < abs((cumulative[k - 1] if k else 0) - want):
            k += 1
        held.append(members[: min(k, len(members) - 1)])
    chosen = np.concatenate(held) if held else np.array([], dtype=np.int64)
    if not len(chosen):
        # Rounding per class gave nothing; a split that was asked for gets at least one group (the smallest).
        chosen = np.array([int(np.argmin(size + rng.random(n_groups) * 1e-3))])
    held_mask = np.isin(inverse, chosen)
    return np.flatnonzero(~held_mask), np.flatnonzero(held_mask)


def feature_columns(names: list[str], target: str | None, group: str | None, exclude: list[str]) -> list[str]:
    """The default feature set: every column but the target, the group column and data.exclude."""
    dropped = {target, group, *exclude}
    return [n for n in names if n not in dropped]
