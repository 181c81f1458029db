"""Build networks by name from a declarative spec, so model files never need pickled code."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

_NETWORKS: dict[str, type[nn.Module]] = {}


def register_network(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Register a network class under ``name`` (a class decorator)."""

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _NETWORKS and _NETWORKS[name] is not cls:
            raise ValueError(f"A network named {name!r} is already registered ({_NETWORKS[name].__name__}).")
        _NETWORKS[name] = cls
        return cls

    return decorator


def network_names() -> list[str]:
    """Names of every registered network, sorted."""
    return sorted(_NETWORKS)


def build_network(name: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Build the network registered as ``name`` with keyword arguments ``kwargs``.

    Raises:
        ValueError: if ``name`` is unknown or ``kwargs`` contains an argument the network does not take.
    """
    if name not in _NETWORKS:
        raise ValueError(f"Unknown network {name!r}. Registered networks: {', '.join(network_names())}.")
    cls = _NETWORKS[name]
    kwargs = dict(kwargs or {})
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(
            f"Network {name!r} got unknown argument(s) {', '.join(unknown)}; it accepts: {', '.join(sorted(accepted))}."
        )
    return cls(**kwargs)
