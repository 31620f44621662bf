"""cotok-edge: iterative video-text co-tokenization for VideoQA, packaged for edge GPUs.

The model classes are loaded on first use (module ``__getattr__``), so ``import
cotok_edge.runtime`` on a device imports no torch, while ``from cotok_edge import
CoTokVQA, CoTokConfig`` works as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["CoTokConfig", "CoTokVQA", "__version__"]

_LAZY = {"CoTokConfig": ".model", "CoTokVQA": ".model"}

if TYPE_CHECKING:
    from .model import CoTokConfig, CoTokVQA


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
