"""The reference co-tokenization VideoQA model (PyTorch)."""

from .config import PRESETS, CoTokConfig, StreamConfig, TextConfig
from .vqa import CoTokOutput, CoTokVQA

__all__ = ["PRESETS", "CoTokConfig", "CoTokOutput", "CoTokVQA", "StreamConfig", "TextConfig"]
