"""Multiply-add (MAC) counting per model component.

Convention: "GFLOPs" in the video papers this method compares with (X3D,
fvcore-era) are billions of multiply-adds. We count MACs with torch's
``FlopCounterMode`` (which reports 2 FLOPs per MAC for matmuls and
convolutions) and print both MACs and FLOPs = 2 x MACs. Element-wise work
(normalisation, activations, softmax, residual adds) is not counted, as in
fvcore.

torch's counter has no formula for the CPU flash-attention kernel that
``scaled_dot_product_attention`` dispatches to on the CPU, so attention would
silently count as zero; :data:`ATTENTION_FORMULAS` adds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .model import CoTokVQA

aten = torch.ops.aten


def _cpu_flash_attention_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kw):  # noqa: ANN001, ANN002, ANN003, ANN201 - torch's formula signature
    return sdpa_flop_count(query_shape, key_shape, value_shape)


ATTENTION_FORMULAS = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flop}


def count_macs(fn: Callable[[], object]) -> int:
    """Multiply-adds of running ``fn()`` once (no gradients)."""
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=ATTENTION_FORMULAS) as fc:
        fn()
    return fc.get_total_flops() // 2


@dataclass
class Budget:
    """MACs per component of one clip + one question + an 8-token answer."""

    preset: str
    components: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.components.values())


def model_budget(model: CoTokVQA, question_len: int = 16, answer_len: int | None = None) -> Budget:
    """Count each component of ``model`` at batch 1.

    Components: ``backbone:<stream>`` (with its input normalisation and
    the pooled pixels of ``pixel_skip``),
    ``video projection`` (the W_v layers), ``text encoder`` (with W_t),
    ``co-tokenization step k``, and ``decoder`` over ``answer_len`` positions
    (default ``max_answer_tokens`` = 8). One decoder pass over 8 positions is
    what greedy generation of 8 tokens costs with a key/value cache; the
    reference ``generate`` re-runs the prefix instead, which costs more.
    """
    model = model.eval()
    cfg = model.config
    answer_len = answer_len or cfg.text.max_answer_tokens
    inputs = model.example_inputs(1, question_len)
    streams = {n: inputs[n] for n in model.stream_names}
    ids, mask = inputs["question_ids"], inputs["question_mask"]
    comps: dict[str, int] = {}
    feats: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name in model.stream_names:

            def run_backbone(name: str = name) -> None:
                feats[name] = model.stream_features(name, streams[name])

            comps[f"backbone:{name}"] = count_macs(run_backbone)
        video = model.cotokenizer.project_video(feats)
        comps["video projection"] = count_macs(lambda: model.cotokenizer.project_video(feats))
        q = model.encode_question(ids, mask)
        comps["text encoder"] = count_macs(
            lambda: model.cotokenizer.start(
                model.encode_question(ids, mask), mask, model.question_words(ids)
            )
        )
        state = model.cotokenizer.start(q, mask, model.question_words(ids))
        for k in range(cfg.steps):
            comps[f"co-tokenization step {k + 1}"] = count_macs(
                lambda k=k, state=state: model.cotokenizer.step(k, video, state, question_len)
            )
            state, _ = model.cotokenizer.step(k, video, state, question_len)
        prefix = torch.full((1, answer_len), cfg.text.bos_id)
        comps["decoder (8 tokens)"] = count_macs(lambda: model.answer_logits(prefix, state))
    return Budget(cfg.name, comps)
