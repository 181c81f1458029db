"""Data-parallel training over torch.distributed, as started by ``torchrun``.

Each rank draws its own patches and computes its own gradients. Before every optimizer step the gradients are
averaged over ranks with ``all_reduce``, so every rank applies the same update and the weights stay identical.
The gradient penalty needs a double backward pass through the critic, which ``DistributedDataParallel``'s
gradient hooks do not support, so the averaging is explicit instead of hidden in a wrapper.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init_from_environment(device: torch.device) -> bool:
    """Join the process group that ``torchrun`` describes in the environment; return whether one was joined.

    The backend is NCCL for CUDA devices and gloo otherwise. Without ``WORLD_SIZE`` > 1 nothing happens.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    logger.info("Joined process group: rank %d of %d, backend %s", rank(), world_size(), backend)
    return True


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not is_distributed():
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def average_gradients(module: torch.nn.Module) -> None:
    """Replace each parameter's gradient by its mean over ranks (missing gradients count as zero)."""
    if not is_distributed():
        return
    size = float(world_size())
    for parameter in module.parameters():
        if not parameter.requires_grad:
            continue
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
        parameter.grad.div_(size)


def average_scalar(value: float, device: torch.device) -> float:
    """Return the mean of a logged number over ranks."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item()) / world_size()
