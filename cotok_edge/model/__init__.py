"""The reference co-tokenization VideoQA model (PyTorch).

The configuration (:mod:`.config`) is pure Python: ``from cotok_edge.model.config
import CoTokConfig`` imports no torch, so the runtime and the video sampler on a
device read stream geometry from the one definition. The model classes load on
first use (module ``__getattr__``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import PRESETS, CoTokConfig, StreamConfig, TextConfig

__all__ = ["PRESETS", "CoTokConfig", "CoTokOutput", "CoTokVQA", "StreamConfig", "TextConfig"]

if TYPE_CHECKING:
    from .vqa import CoTokOutput, CoTokVQA


def __getattr__(name: str) -> Any:
    if name in ("CoTokOutput", "CoTokVQA"):
        from . import vqa

        value = getattr(vqa, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
