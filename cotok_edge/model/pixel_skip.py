"""Give a trained model the pooled pixels of ``CoTokConfig.pixel_skip``, its answers unchanged.

The only weights the pixel skip touches are the video projections ``W_v``,
which gain 3 input columns (the pooled RGB). They start at zero, so the new
model computes exactly what the old one did until training finds a use for
the colour of each cell.
"""

from __future__ import annotations

import torch

from .config import PIXEL_SKIP_CHANNELS, CoTokConfig
from .vqa import CoTokVQA


def with_pixel_skip(model: CoTokVQA) -> CoTokVQA:
    """A new model equal to ``model`` in every output, with ``pixel_skip`` on.

    Raises ``ValueError`` if ``model`` has it already.
    """
    if model.config.pixel_skip:
        raise ValueError("with_pixel_skip: the model has the pixel skip already")
    data = model.config.to_dict()
    data["pixel_skip"] = True
    new = CoTokVQA(CoTokConfig.from_dict(data))
    state = model.state_dict()
    for name in model.stream_names:
        key = f"cotokenizer.video_proj.{name}.weight"
        w = state[key]  # [d, C]
        state[key] = torch.cat([w, w.new_zeros(w.shape[0], PIXEL_SKIP_CHANNELS)], dim=1)
    new.load_state_dict(state)
    return new.train(model.training)
