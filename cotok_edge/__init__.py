"""cotok-edge: iterative video-text co-tokenization for VideoQA, packaged for edge GPUs."""

from .model import CoTokConfig, CoTokVQA

__version__ = "0.1.0"
__all__ = ["CoTokConfig", "CoTokVQA", "__version__"]
