"""medgan: restore medical volumes with 3D generative adversarial networks.

The public API is imported lazily, so ``import medgan`` and ``medgan --help`` stay fast and do not load torch.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

__version__ = "0.1.0"

# A library configures no output: without this handler, Python would print medgan's warnings to stderr through
# its last-resort handler. Applications (the medgan CLI among them) attach their own handlers.
logging.getLogger(__name__).addHandler(logging.NullHandler())

_PUBLIC = {
    "Volume": "medgan.io",
    "read_volume": "medgan.io",
    "write_volume": "medgan.io",
    "Restorer": "medgan.inference.restorer",
    "load_model": "medgan.inference.restorer",
}

__all__ = [*_PUBLIC, "__version__"]


def __dir__() -> list[str]:
    return sorted(__all__)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'medgan' has no attribute {name!r}")
