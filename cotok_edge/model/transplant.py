"""One stream's backbone taken from another checkpoint of the same architecture.

Two trained models can each hold what the other lacks: measured at stop 10, tiny-v4
reads the blink count from stream s1 alone (grey frames on s1 put it at chance) and
never learnt the big object's shape, while a curriculum model answers every coarse
question from stream s2 and cannot count. ``transplant_backbone`` copies one stream's
backbone (its 3D CNN, ``backbones.<stream>.*``) into a model; everything after it (the
projection into the shared width, the TokenLearner, the transformer, the decoder) stays
the receiving model's and is fine-tuned to read the new features. In those two models it
did not learn to within 600 steps (records, stop 10): what each lacked was after the
backbones.

The donor's backbone may be built differently (another stem, other widths inside) as long
as it takes the same input and gives what the receiving model reads: the same frames and
size in, the same width and feature grid out. The model then adopts the donor's backbone
configuration for that stream (its time slicing and token pooling stay its own).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .config import StreamConfig
from .streams import StreamBackbone
from .vqa import CoTokVQA


def _interface(s: StreamConfig) -> tuple:
    """What the rest of the model sees of a backbone: input geometry, output width and grid."""
    return s.frames, s.size, s.out_channels, s.feature_grid


def transplant_backbone(
    model: CoTokVQA, stream: str, source: str | Path, projection: bool = False
) -> int:
    """Replace ``model``'s backbone of ``stream`` by the one in checkpoint ``source``.

    Args:
        model: the receiving model; changed in place.
        stream: a stream name of both models (``s1``, ``s2``, ``s3``).
        source: a checkpoint folder (``config.json`` + ``model.safetensors``), read with
            safetensors (nothing is unpickled).
        projection: take the donor's projection of that stream (``W_v``,
            ``cotokenizer.video_proj.<stream>``) too: the linear map trained to read
            the donor's features, where the receiver's was trained on its old ones.

    Returns:
        The number of tensors copied.

    Raises:
        ValueError: ``stream`` is not in one of the models, the two backbones differ in
            input or output (frames, size, width, grid), the projections differ in shape
            (one model has ``pixel_skip``, the other not; or another width d), or
            ``source`` is not a readable checkpoint.
    """
    src = Path(source)
    try:  # the loader's own checks: files present, config valid, weights matching it
        donor = CoTokVQA.from_pretrained(src)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"backbone source: {e}") from None
    ours = {s.name: s for s in model.config.streams}
    theirs = {s.name: s for s in donor.config.streams}
    if stream not in ours or stream not in theirs:
        raise ValueError(
            f"backbone {stream!r} from {src}: streams here {sorted(ours)}, there {sorted(theirs)}"
        )
    mine, given = ours[stream], theirs[stream]
    if _interface(mine) != _interface(given):
        raise ValueError(
            f"backbone {stream!r} from {src}: its input or output differs from this model's "
            f"(frames, size, width, grid {_interface(given)} against {_interface(mine)})"
        )
    donor_proj = donor.cotokenizer.video_proj[stream].state_dict()
    ours_proj = model.cotokenizer.video_proj[stream]
    if projection and donor_proj["weight"].shape != ours_proj.weight.shape:
        raise ValueError(
            f"projection {stream!r} from {src}: shape {tuple(donor_proj['weight'].shape)} "
            f"against this model's {tuple(ours_proj.weight.shape)} (pixel_skip there "
            f"{donor.config.pixel_skip}, here {model.config.pixel_skip})"
        )
    adopted = dataclasses.replace(given, time_groups=mine.time_groups, token_pool=mine.token_pool)
    if adopted != mine:
        old = model.backbones[stream]
        ref = next(old.parameters())
        model.config.streams[model.stream_names.index(stream)] = adopted
        model.backbones[stream] = (
            StreamBackbone(adopted).to(ref.device, ref.dtype).train(old.training)
        )
    weights = donor.backbones[stream].state_dict()
    model.backbones[stream].load_state_dict(weights)
    if projection:
        ours_proj.load_state_dict(donor_proj)
        return len(weights) + len(donor_proj)
    return len(weights)
