"""Change what conditions a trained model's TokenLearners (``StreamConfig.token_condition``).

Every weight stays; the word projection ``W_w`` is added, fresh, when the first
stream takes ``words``, and dropped when the last one leaves it. The answers change
(the changed streams' maps see another conditioning vector), so the model is
fine-tuned after this.
"""

from __future__ import annotations

from collections.abc import Mapping

from .config import CoTokConfig
from .vqa import CoTokVQA


def with_token_conditions(model: CoTokVQA, conditions: Mapping[str, str]) -> CoTokVQA:
    """A new model holding ``model``'s weights, with ``{stream: condition}`` applied.

    Raises ``ValueError`` for a stream the model does not have or a condition not in
    :data:`~cotok_edge.model.config.TOKEN_CONDITIONS` (the config's own check).
    """
    data = model.config.to_dict()
    names = [s["name"] for s in data["streams"]]
    for stream, condition in conditions.items():
        if stream not in names:
            raise ValueError(f"with_token_conditions: no stream {stream!r}; streams: {names}")
        data["streams"][names.index(stream)]["token_condition"] = condition
    new = CoTokVQA(CoTokConfig.from_dict(data))
    old = model.state_dict()
    state = {k: old.get(k, fresh) for k, fresh in new.state_dict().items()}
    new.load_state_dict(state)
    return new.train(model.training)
