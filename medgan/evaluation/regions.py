"""Uniform regions of a CT slice, found automatically, for noise and HU-bias measurements."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Region:
    """An axis-aligned box ``array[i0:i1, j0:j1, k0:k1]`` of an ``(i, j, k)`` volume."""

    i0: int
    i1: int
    j0: int
    j1: int
    k0: int
    k1: int

    def take(self, array: np.ndarray) -> np.ndarray:
        return array[self.i0:self.i1, self.j0:self.j1, self.k0:self.k1]


def find_uniform_region(reference_hu: np.ndarray, size: int = 11, hu_range: tuple[float, float] = (-200.0, 200.0),
                        stride: int = 2) -> Region:
    """Return the ``size`` x ``size`` in-plane box (all slices) whose reference values vary least.

    Only boxes whose mean lies in ``hu_range`` (soft tissue by default) and whose values all lie within
    ``hu_range`` widened by 300 HU are considered, so air, bone and their edges are avoided.

    Raises:
        ValueError: if no box qualifies.
    """
    # The stable sort in find_uniform_regions keeps the first box in scan order among equally uniform ones.
    return find_uniform_regions(reference_hu, count=1, size=size, hu_range=hu_range, stride=stride)[0]


def find_uniform_regions(reference_hu: np.ndarray, count: int = 3, size: int = 11,
                         hu_range: tuple[float, float] = (-200.0, 200.0), stride: int = 2) -> list[Region]:
    """Return up to ``count`` non-overlapping ``size`` x ``size`` in-plane boxes (all slices), most uniform first.

    Boxes qualify as in `find_uniform_region`. The boxes are chosen greedily: the one whose values vary least,
    then the least varying box that does not overlap any chosen box, and so on. Fewer than ``count`` boxes are
    returned when no more qualify.

    Raises:
        ValueError: if ``count`` or ``size`` is not positive, or no box qualifies.
    """
    if count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}.")
    if size < 1 or stride < 1:
        raise ValueError(f"size and stride must be positive integers, got size={size!r}, stride={stride!r}.")
    if reference_hu.ndim != 3:
        raise ValueError(f"reference_hu must be an (i, j, k) array, got shape {reference_hu.shape}.")
    low, high = hu_range
    candidates: list[tuple[float, Region]] = []
    n_i, n_j, n_k = reference_hu.shape
    for i0 in range(0, n_i - size + 1, stride):
        for j0 in range(0, n_j - size + 1, stride):
            box = reference_hu[i0:i0 + size, j0:j0 + size, :]
            mean = float(box.mean())
            if not low <= mean <= high or box.min() < low - 300 or box.max() > high + 300:
                continue
            candidates.append((float(box.std()), Region(i0, i0 + size, j0, j0 + size, 0, n_k)))
    if not candidates:
        raise ValueError(f"No {size} x {size} box with mean HU in {hu_range} was found; pass another hu_range.")
    candidates.sort(key=lambda item: item[0])
    chosen: list[Region] = []
    for _, region in candidates:
        if any(_overlap(region, other) for other in chosen):
            continue
        chosen.append(region)
        if len(chosen) == count:
            break
    return chosen


def _overlap(a: Region, b: Region) -> bool:
    return a.i0 < b.i1 and b.i0 < a.i1 and a.j0 < b.j1 and b.j0 < a.j1 and a.k0 < b.k1 and b.k0 < a.k1
