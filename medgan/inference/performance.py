"""Speed settings of the inference engine: numeric precision, memory format and optional ``torch.compile``."""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, ContextManager

import torch

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> str:
    """Return ``precision`` when it is one of `PRECISIONS`.

    Raises:
        ValueError: naming the value and the accepted ones.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    return precision


def autocast_context(precision: str, device: torch.device) -> ContextManager:
    """Return the context that runs the network at ``precision``: autocast for bf16 and fp16, nothing for fp32.

    Autocast runs convolutions and matrix products in the reduced type and keeps reductions in float32. The
    engine still reads and stitches the outputs in float32 or float64.
    """
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])


def _contains(network: object, module_type: type[torch.nn.Module]) -> bool:
    """Return True when ``network`` is a module that contains a ``module_type``."""
    if not isinstance(network, torch.nn.Module):
        return False
    return any(isinstance(module, module_type) for module in network.modules())


def has_conv3d(network: object) -> bool:
    """Return True when ``network`` is a module that contains a ``torch.nn.Conv3d``."""
    return _contains(network, torch.nn.Conv3d)


def prefers_channels_last(network: object, device: torch.device) -> bool:
    """Return whether to run ``network`` on ``device`` in ``torch.channels_last_3d`` memory format.

    On CPU it is chosen for networks with 3D convolutions and no 2D ones (a 2D weight cannot take the 3D
    format, as in `medgan.adaptation.refine.RefinedSuperResolution`). oneDNN ran them 1.4 to 1.9 times faster in
    channels-last on the shipped ldct-default network (windows of 17 x 64 x 64 voxels, batches of 1 and 4,
    torch 2.13 on a 2-core x86_64 CPU). ``scripts/bench_infer.py`` measures it again.
    """
    # NOTE: on CUDA channels-last has not been measured for these networks, so it stays off there.
    return device.type == "cpu" and has_conv3d(network) and not _contains(network, torch.nn.Conv2d)


class CompiledNetwork:
    """``torch.compile`` of a network that falls back to the eager network when compiling fails.

    Compiling happens at the first call, so a missing C++ compiler or an unsupported operator shows up only
    then. Any exception from the compiled call is logged as a warning, and the same input is run again by the
    eager network, which is used from then on. An error that the eager network raises too still reaches the
    caller.

    Args:
        network: the module to compile; the wrapper exposes its ``receptive_field`` attribute.
    """

    def __init__(self, network: torch.nn.Module) -> None:
        self.network = network
        self.receptive_field = getattr(network, "receptive_field", None)
        self.compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        compile_function = getattr(torch, "compile", None)
        if compile_function is None:
            logger.warning("torch %s has no torch.compile; running the network without compiling.",
                           torch.__version__)
            return
        try:
            # dynamic=False: the engine calls the network with one window shape, so one static graph suffices.
            self.compiled = compile_function(network, dynamic=False)
        except Exception as error:  # noqa: BLE001 - any failure of the optional compiler must leave eager mode
            logger.warning("torch.compile failed (%s: %s); running the network without compiling.",
                           type(error).__name__, error)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self.compiled is None:
            return self.network(batch)
        try:
            return self.compiled(batch)
        except Exception as error:  # noqa: BLE001 - inductor raises many types; the eager run below re-raises real errors
            logger.warning("The compiled network failed (%s: %s); running it without compiling from now on.",
                           type(error).__name__, error)
            self.compiled = None
            return self.network(batch)

    @property
    def is_compiled(self) -> bool:
        """Whether calls still go through the compiled network."""
        return self.compiled is not None
