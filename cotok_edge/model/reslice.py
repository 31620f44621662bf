"""Re-slice a trained model's time axis: the same weights, other time groups G per stream.

Nothing the TokenLearner or the transformer layers learn depends on G (a
slice is only a reshape of the batch); only ``video_pos`` (one row per video
token slot) has G * S rows per stream, and G more with max tokens. A new slot
takes the row of the old slice that holds the new slice's first time step, so a
model trained with 8 slices of a 32-frame stream starts per-frame training (32
slices) with each frame's tokens where its old slice's were.
"""

from __future__ import annotations

from .config import CoTokConfig
from .vqa import CoTokVQA


def reslice_time(model: CoTokVQA, groups: dict[str, int]) -> CoTokVQA:
    """A new model equal to ``model`` except that stream ``name`` has ``groups[name]`` slices.

    Raises ``ValueError`` for an unknown stream, a G that does not divide the
    stream's time steps, or a model without time slices (``video_tokenizer="all"``).
    """
    old = model.config
    if old.video_tokenizer == "all":
        raise ValueError("reslice_time: this model has no time slices (video_tokenizer='all')")
    names = [s.name for s in old.streams]
    unknown = sorted(set(groups) - set(names))
    if unknown:
        raise ValueError(f"reslice_time: no stream named {unknown}; streams: {names}")
    data = old.to_dict()
    for s in data["streams"]:
        if s["name"] in groups:
            s["time_groups"] = groups[s["name"]]
    cfg = CoTokConfig.from_dict(data)  # validates that each G divides its stream's T
    new = CoTokVQA(cfg)
    state = model.state_dict()
    old_pos = state["cotokenizer.video_pos"]  # [sum of G*S over streams, d]
    rows: list[int] = []
    offset = 0
    # The TokenLearner's S slots a slice (1 for the mean control), then, after every
    # stream's, the max tokens' one slot a slice.
    blocks = [lambda name: old.video_tokens(name) // old.time_groups_of(name)]
    if cfg.max_tokens:
        blocks.append(lambda name: 1)
    for per_slice_of in blocks:
        for s in cfg.streams:
            g_old, g_new = old.time_groups_of(s.name), cfg.time_groups_of(s.name)
            per_slice = per_slice_of(s.name)
            t = s.feature_grid[0]
            for j in range(g_new):
                i = (j * (t // g_new)) // (t // g_old)  # the old slice holding new slice j's start
                rows.extend(offset + i * per_slice + k for k in range(per_slice))
            offset += g_old * per_slice
    state["cotokenizer.video_pos"] = old_pos[rows].clone()
    new.load_state_dict(state)
    return new.train(model.training)
