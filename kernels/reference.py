"""The PyTorch definition every fused TokenLearner kernel is checked against.

This re-exports :mod:`cotok_edge.model.tokenlearner` rather than copying it, so
there is exactly one place where the math lives; the kernels and their tests
import it from here.
"""

from cotok_edge.model.tokenlearner import (
    LN_EPS,
    TokenLearnerWeights,
    tokenlearner_logits,
    tokenlearner_reference,
)

__all__ = ["LN_EPS", "TokenLearnerWeights", "tokenlearner_logits", "tokenlearner_reference"]
