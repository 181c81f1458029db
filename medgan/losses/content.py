"""Voxel-wise content losses between a restored volume and its target."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CONTENT_LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}


def content_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Return the mean ``kind`` loss (``"l1"`` or ``"mse"``) between two tensors of the same shape, in float32.

    Raises:
        ValueError: if ``kind`` is unknown or the shapes differ.
    """
    if kind not in _CONTENT_LOSSES:
        raise ValueError(f"Unknown content loss {kind!r}; choose one of {', '.join(sorted(_CONTENT_LOSSES))}.")
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target must have the same shape, got {tuple(prediction.shape)} and {tuple(target.shape)}."
        )
    return _CONTENT_LOSSES[kind](prediction.float(), target.float())


class ContentLoss(torch.nn.Module):
    """`content_loss` as a module with the common loss call ``loss(prediction, target) -> scalar``."""

    def __init__(self, kind: str = "l1") -> None:
        super().__init__()
        if kind not in _CONTENT_LOSSES:
            raise ValueError(f"Unknown content loss {kind!r}; choose one of {', '.join(sorted(_CONTENT_LOSSES))}.")
        self.kind = kind

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return content_loss(prediction, target, self.kind)
