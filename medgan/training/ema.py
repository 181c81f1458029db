"""Exponential moving average of a network's weights, used for validation and export."""

from __future__ import annotations

import copy

import torch


class ModelEMA:
    """Keep ``average = d * average + (1 - d) * weights`` after every optimizer step.

    The decay ramps up as ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` earlier updates, so the untrained
    initial weights fade out within the first few dozen steps instead of lingering for ``1 / (1 - decay)``
    steps. Buffers are copied rather than averaged. With ``decay == 0`` the average is the current network.

    Args:
        network: the trained network; the average starts as a frozen copy of it.
        decay: weight of the old average per update, in ``[0, 1)``.
    """

    def __init__(self, network: torch.nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}.")
        self.decay = decay
        self.average = copy.deepcopy(network).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, network: torch.nn.Module, n_updates: int) -> None:
        """Fold ``network``'s weights into the average; ``n_updates`` counts the earlier updates."""
        decay = min(self.decay, (1.0 + n_updates) / (10.0 + n_updates))
        for average, current in zip(self.average.parameters(), network.parameters()):
            average.lerp_(current.detach(), 1.0 - decay)
        for average, current in zip(self.average.buffers(), network.buffers()):
            average.copy_(current)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.average.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.average.load_state_dict(state)
