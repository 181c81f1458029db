"""Receptive fields of convolutional networks, computed by interval arithmetic along one axis.

A network is described as a list of paths from its input to its output, each path a list of `Layer` steps.
For one output voxel, each step maps the interval of voxels it reads back to the interval of its input, and
the receptive field is the widest union over all paths. Strided and upsampling steps make the result depend
on the output position, so `receptive_field` takes the maximum over one period of positions.
Padding at the volume's edges only clamps positions, so it never widens the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import lcm, prod
from typing import Sequence


def _ceil_div(numerator: int, denominator: int) -> int:
    return -((-numerator) // denominator)


@dataclass(frozen=True)
class Layer:
    """One step of a path along one axis.

    Kinds:
        ``"same"``: stride-1 convolution padded to keep the size; output ``x`` reads ``x - k // 2 .. x + k // 2``.
        ``"valid"``: unpadded convolution with ``stride``; output ``x`` reads ``stride * x .. stride * x + k - 1``.
        ``"transposed"``: unpadded transposed convolution with ``stride``; output ``x`` reads every input ``q``
            with ``stride * q <= x <= stride * q + k - 1``.
        ``"repeat"``: upsampling by ``stride`` that copies each voxel (nearest neighbour, pixel shuffle);
            output ``x`` reads ``x // stride``.
        ``"linear"``: linear upsampling by ``stride`` with ``align_corners=False``; output ``x`` reads the two
            input voxels around ``(x + 0.5) / stride - 0.5`` (one when it falls on a voxel centre).
    """

    kind: str
    kernel_size: int = 1
    stride: int = 1

    def input_interval(self, low: int, high: int) -> tuple[int, int]:
        """Return the input interval read by the output interval ``[low, high]`` (both inclusive)."""
        k, s = self.kernel_size, self.stride
        if self.kind == "same":
            return low - k // 2, high + k // 2
        if self.kind == "valid":
            return s * low, s * high + k - 1
        if self.kind == "transposed":
            return _ceil_div(low - k + 1, s), high // s
        if self.kind == "repeat":
            return low // s, high // s
        if self.kind == "linear":
            # Source coordinate (x + 0.5) / s - 0.5 written as (2x + 1 - s) / (2s), in exact integer arithmetic.
            return (2 * low + 1 - s) // (2 * s), _ceil_div(2 * high + 1 - s, 2 * s)
        raise ValueError(f"Unknown layer kind {self.kind!r}; expected same, valid, transposed, repeat or linear.")


def receptive_field(paths: Sequence[Sequence[Layer]]) -> int:
    """Return the receptive field in input voxels: the widest span that one output voxel reads over all paths.

    Each path lists its layers from input to output. All paths must end on the same output grid.
    """
    if not paths:
        raise ValueError("paths must contain at least one path.")
    # Shifting the output by the product of a path's strides shifts its input interval without changing its
    # width, so the positions of one common period cover every case.
    period = 1
    for path in paths:
        period = lcm(period, prod(layer.stride for layer in path))
    base = 1000 * period
    widest = 1
    for offset in range(period):
        position = base + offset
        lows, highs = [], []
        for path in paths:
            low, high = position, position
            for layer in reversed(path):
                low, high = layer.input_interval(low, high)
            lows.append(low)
            highs.append(high)
        widest = max(widest, max(highs) - min(lows) + 1)
    return widest
