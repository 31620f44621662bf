"""Answers and logits of each backend on real clips, and how they compare.

The build runs the same batches (:func:`cotok_edge.export.calibration.qa_batches`)
through PyTorch and through each exported variant with ONNX Runtime, and reports per
variant: accuracy (overall and per category), answer agreement with PyTorch FP32 (on
every question, and on those FP32 answers with a clear margin), and the max and mean
absolute error of ``answer_logits`` against it.

Both paths run the video backbones once per clip and gather the features per question
(``clip_index``), as the runtime does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from cotok_edge.contract import ANSWER_IDS, ANSWER_LOGITS
from cotok_edge.data.clips import ClipQuestions
from cotok_edge.data.text import decode_answer
from cotok_edge.evaluate import score as score_clips
from cotok_edge.model.vqa import CoTokVQA

from .onnx import QuestionDecoderGraph, VideoEncoderGraph, eval_no_grad
from .ort import OrtChain


@dataclass
class Predictions:
    """One backend's output on a list of batches, questions in batch order.

    ids: ``[Q, A]`` int64 greedy answers, ``pad_id`` after EOS.
    logits: ``[Q, A, V]`` float32, the logits each greedy step chose from.
    """

    ids: np.ndarray
    logits: np.ndarray


def _pad_ids(ids: np.ndarray, length: int, pad_id: int) -> np.ndarray:
    if ids.shape[1] >= length:
        return ids[:, :length]
    pad = np.full((ids.shape[0], length - ids.shape[1]), pad_id, ids.dtype)
    return np.concatenate([ids, pad], axis=1)


def torch_predictions(
    model: CoTokVQA, batches: Sequence[dict[str, Tensor]], check_generate: int = 1
) -> Predictions:
    """The exported graphs' computation run eagerly in PyTorch: video features once per
    clip (:class:`VideoEncoderGraph`), then the unrolled greedy decoder per question
    (:class:`QuestionDecoderGraph`, ids and logits in one pass).

    The unrolled decoder is ``generate`` step for step; the first ``check_generate``
    batches are also run through ``generate`` and must give the same answers (raises
    otherwise), so the cheaper path stands for the model's own decoding.
    """
    t = model.config.text
    names = model.stream_names
    ids_out, logits_out = [], []
    with eval_no_grad(model):
        for k, b in enumerate(batches):
            streams = {s: b[s] for s in names}
            q_ids, q_mask, clip = b["question_ids"], b["question_mask"], b["clip_index"]
            video = [v[clip] for v in VideoEncoderGraph(model)(*(streams[s] for s in names))]
            ids, _, logits = QuestionDecoderGraph(model)(*video, q_ids, q_mask)[:3]
            if k < check_generate:
                gen = model.generate(**streams, question_ids=q_ids, question_mask=q_mask,
                                     clip_index=clip)  # fmt: skip
                gen = _pad_ids(gen.numpy(), t.max_answer_tokens, t.pad_id)
                if not np.array_equal(gen, ids.numpy()):
                    raise RuntimeError(
                        "the unrolled decoder and generate disagree on batch "
                        f"{k}: {gen.tolist()} vs {ids.tolist()}"
                    )
            ids_out.append(ids.numpy())
            logits_out.append(logits.float().numpy())
    return Predictions(np.concatenate(ids_out), np.concatenate(logits_out))


def ort_predictions(
    chain: OrtChain, batches: Sequence[dict[str, Tensor]], pad_id: int
) -> Predictions:
    """The two graphs with ONNX Runtime (the runtime's backend, through ``chain``): encoder
    once per clip, decoder per question."""
    ids_out, logits_out = [], []
    for b in batches:
        clip = b["clip_index"].numpy()
        feats = chain.encode({s: b[s].numpy() for s in chain.stream_names})
        feats = {k: np.ascontiguousarray(v[clip]) for k, v in feats.items()}
        out = chain.decode(feats, b["question_ids"].numpy(), b["question_mask"].numpy(), pad_id)
        ids_out.append(out[ANSWER_IDS])
        logits_out.append(out[ANSWER_LOGITS].astype(np.float32))
    return Predictions(np.concatenate(ids_out), np.concatenate(logits_out))


def texts(pred: Predictions, tokenizer: object) -> list[str]:
    return [decode_answer(tokenizer, row) for row in pred.ids]


def score(pred: Predictions, clips: Sequence[ClipQuestions], tokenizer: object) -> dict[str, Any]:
    """Accuracy overall and per category; ``clips`` in the batches' order (as ``qa_batches``
    made them), every question of a clip in turn."""
    flat = texts(pred, tokenizer)
    grouped, pos = [], 0
    for c in clips:
        grouped.append(flat[pos : pos + len(c.questions)])
        pos += len(c.questions)
    if pos != len(flat):
        raise ValueError(f"score: {len(flat)} answers for {pos} questions")
    return score_clips(clips, grouped)


#: A reference answer whose first token leads the runner-up by at least this many logits
#: (odds of e^2, about 7 to 1) counts as one the reference is sure of. Where it is not,
#: INT8 noise of a logit or so may flip the answer without the graph being wrong.
SURE_MARGIN = 2.0


def first_token_margin(logits: np.ndarray) -> np.ndarray:
    """``[Q, A, V]`` logits -> ``[Q]``: top-1 minus top-2 logit at the first answer step."""
    top2 = np.partition(logits[:, 0], -2, axis=-1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def compare(ref: Predictions, got: Predictions) -> dict[str, float | None]:
    """Answer agreement and logit errors of ``got`` against ``ref``.

    Besides the agreement on every question, ``sure_agreement`` is the agreement on the
    questions whose reference margin (:func:`first_token_margin`) is at least
    :data:`SURE_MARGIN` (None when there is none), and ``sure_share`` their share.
    """
    if ref.ids.shape != got.ids.shape:
        raise ValueError(f"compare: answer shapes differ, {ref.ids.shape} vs {got.ids.shape}")
    same = np.all(ref.ids == got.ids, axis=1)
    sure = first_token_margin(ref.logits) >= SURE_MARGIN
    err = np.abs(ref.logits - got.logits)
    return {
        "agreement": float(np.mean(same)),
        "sure_agreement": float(np.mean(same[sure])) if sure.any() else None,
        "sure_share": float(np.mean(sure)),
        "max_logit_error": float(err.max()),
        "mean_logit_error": float(err.mean()),
    }


__all__ = [
    "Predictions",
    "SURE_MARGIN",
    "compare",
    "first_token_margin",
    "ort_predictions",
    "score",
    "texts",
    "torch_predictions",
]
