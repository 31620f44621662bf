"""Give a trained model the max tokens of ``CoTokConfig.max_tokens``.

Every weight stays; ``video_pos`` (one row per video token slot) gains one row per
time slice of each stream, after the rows of the TokenLearner tokens. The new rows
start as a fresh model's do. The answers change (the layers attend to the new
tokens from the first step on), so the model is fine-tuned after this.
"""

from __future__ import annotations

import torch

from .config import CoTokConfig
from .vqa import CoTokVQA


def with_max_tokens(model: CoTokVQA) -> CoTokVQA:
    """A new model holding ``model``'s weights, with ``max_tokens`` on.

    Raises ``ValueError`` if ``model`` has them already or has no time slices.
    """
    if model.config.max_tokens:
        raise ValueError("with_max_tokens: the model has max tokens already")
    data = model.config.to_dict()
    data["max_tokens"] = True
    new = CoTokVQA(CoTokConfig.from_dict(data))  # refuses video_tokenizer="all"
    state = model.state_dict()
    fresh = new.state_dict()["cotokenizer.video_pos"]
    old_pos = state["cotokenizer.video_pos"]
    state["cotokenizer.video_pos"] = torch.cat([old_pos, fresh[old_pos.shape[0] :]])
    new.load_state_dict(state)
    return new.train(model.training)
