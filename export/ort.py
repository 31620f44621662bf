"""Run the two exported graphs with ONNX Runtime, chained, and measure parity with PyTorch.

``OrtChain`` runs ``video_encoder`` once per clip and ``question_decoder`` per batch of
questions. ``parity`` compares, on given inputs:

- the chained graphs' ``answer_ids`` with ``CoTokVQA.generate`` (padded to ``A`` tokens
  with ``pad_id``): answers must be identical;
- ``answer_logits`` (the logits each greedy step chose from) with the same unrolled
  decoding run eagerly in PyTorch (:class:`~cotok_edge.export.onnx.QuestionDecoderGraph`),
  on the deployed decoder graph itself: the bar for FP32 is ``max |diff| <= 1e-4``;
- the video features and the answer scores (reported, not gated).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cotok_edge.contract import ANSWER_IDS, ANSWER_LOGITS, ANSWER_SCORES, feature_name
from cotok_edge.model.vqa import CoTokVQA
from cotok_edge.runtime.backends.onnxruntime import OnnxRuntimeBackend

from .onnx import QuestionDecoderGraph, VideoEncoderGraph, eval_no_grad

LOGIT_BAR_FP32 = 1e-4


def pad_question(
    ids: np.ndarray | Tensor, mask: np.ndarray | Tensor, length: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pad ``ids [B, L]`` / ``mask [B, L]`` on the right to the graph's fixed ``length``.

    Padded positions get ``pad_id`` and mask False; a question longer than ``length``
    raises ``ValueError`` (the graph cannot take it; truncating would change the question).
    """
    ids = np.asarray(ids, dtype=np.int64)
    mask = np.asarray(mask, dtype=bool)
    if ids.ndim != 2 or mask.shape != ids.shape:
        raise ValueError(
            f"question_ids/question_mask: expected two [B, L] arrays of one shape, got "
            f"{list(ids.shape)} and {list(mask.shape)}"
        )
    if ids.shape[1] > length:
        raise ValueError(
            f"question_ids: {ids.shape[1]} tokens, the exported graph takes at most {length}"
        )
    extra = length - ids.shape[1]
    if extra:
        ids = np.concatenate([ids, np.full((ids.shape[0], extra), pad_id, np.int64)], axis=1)
        mask = np.concatenate([mask, np.zeros((mask.shape[0], extra), bool)], axis=1)
    return ids, mask


class OrtChain:
    """``video_encoder`` then ``question_decoder`` with ONNX Runtime, for parity checks.

    A thin view of the runtime's own ONNX Runtime backend
    (:class:`~cotok_edge.runtime.backends.onnxruntime.OnnxRuntimeBackend`, which owns
    the sessions), so the build measures parity through the code that answers. It adds
    what parity needs: every decoder output by name (``answer_logits`` too) and
    questions padded to the graph's length.

    Args:
        video_encoder, question_decoder: paths of the exported (plain or explain) graphs.
        providers: ONNX Runtime execution providers, CPU by default.
        threads: intra-op threads (None: ONNX Runtime's default).
    """

    def __init__(
        self,
        video_encoder: str | Path,
        question_decoder: str | Path,
        *,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int | None = None,
    ):
        self.backend = OnnxRuntimeBackend(
            None, video_encoder, question_decoder, providers=providers, threads=threads
        )
        self.stream_names = self.backend.stream_names
        self.decoder_inputs = self.backend.decoder_inputs
        self.decoder_outputs = self.backend.decoder_outputs
        self.question_tokens = self.backend.question_tokens

    def encode(self, streams: Mapping[str, np.ndarray | Tensor]) -> dict[str, np.ndarray]:
        """uint8 streams ``{s: [B, 3, T, H, W]}`` -> ``{"v_s": [B, N_s, d]}``."""
        return self.backend.encode({s: np.asarray(streams[s]) for s in self.stream_names})

    def decode(
        self,
        video: Mapping[str, np.ndarray],
        question_ids: np.ndarray | Tensor,
        question_mask: np.ndarray | Tensor,
        pad_id: int = 0,
    ) -> dict[str, np.ndarray]:
        """Features from :meth:`encode` + question -> the decoder's outputs by name.

        Questions shorter than the graph's length are padded with ``pad_id``.
        """
        ids, mask = pad_question(question_ids, question_mask, self.question_tokens, pad_id)
        return self.backend.run_decoder(video, ids, mask)

    def __call__(
        self,
        streams: Mapping[str, np.ndarray | Tensor],
        question_ids: np.ndarray | Tensor,
        question_mask: np.ndarray | Tensor,
        pad_id: int = 0,
    ) -> dict[str, np.ndarray]:
        """Both graphs; returns the video features and the decoder outputs by name."""
        video = self.encode(streams)
        return {**video, **self.decode(video, question_ids, question_mask, pad_id)}


@dataclass
class ParityReport:
    """ONNX Runtime vs PyTorch on a set of inputs (goes into the bundle report).

    answers_identical: fraction of questions whose ``answer_ids`` match ``generate``.
    max_logit_diff: max ``|ONNX - PyTorch|`` over ``answer_logits``.
    """

    questions: int
    answers_identical: float
    max_logit_diff: float
    max_feature_diff: float
    max_score_diff: float
    logit_bar: float
    mismatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.answers_identical == 1.0 and self.max_logit_diff <= self.logit_bar

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def _padded_generate(model: CoTokVQA, inputs: Mapping[str, Tensor]) -> np.ndarray:
    t = model.config.text
    ids = model.generate(**inputs).numpy()
    if ids.shape[1] < t.max_answer_tokens:
        pad = np.full((ids.shape[0], t.max_answer_tokens - ids.shape[1]), t.pad_id, ids.dtype)
        ids = np.concatenate([ids, pad], axis=1)
    return ids


def parity(
    model: CoTokVQA,
    chain: OrtChain,
    batches: Iterable[Mapping[str, Tensor]],
    *,
    logit_bar: float = LOGIT_BAR_FP32,
) -> ParityReport:
    """Compare the ONNX Runtime chain with the PyTorch model on ``batches``.

    Each batch is a dict of model inputs (streams by name, ``question_ids`` and
    ``question_mask`` at the graph's question length, as ``example_inputs`` makes them).
    The chain's decoder must have the ``answer_logits`` output.
    """
    if ANSWER_LOGITS not in chain.decoder_outputs:
        raise ValueError(
            "parity needs a question_decoder exported with answer_logits (logits=True)"
        )
    names = list(model.stream_names)
    total = same = 0
    max_logit = max_feat = max_score = 0.0
    mismatches: list[dict[str, Any]] = []
    with eval_no_grad(model):
        for b, inputs in enumerate(batches):
            streams = {s: inputs[s] for s in names}
            ids, mask = inputs["question_ids"], inputs["question_mask"]
            if ids.shape[1] != chain.question_tokens:
                raise ValueError(
                    f"batch {b}: question length {ids.shape[1]}; pad questions to "
                    f"{chain.question_tokens} (the graph's length) before comparing"
                )
            got = chain(streams, ids, mask, model.config.text.pad_id)
            video = VideoEncoderGraph(model)(*(streams[s] for s in names))
            ref_ids, ref_scores, ref_logits = QuestionDecoderGraph(model)(*video, ids, mask)[:3]
            gen = _padded_generate(model, inputs)
            for s, v in zip(names, video, strict=True):
                max_feat = max(max_feat, float(np.abs(got[feature_name(s)] - v.numpy()).max()))
            max_logit = max(max_logit, float(np.abs(got[ANSWER_LOGITS] - ref_logits.numpy()).max()))
            max_score = max(max_score, float(np.abs(got[ANSWER_SCORES] - ref_scores.numpy()).max()))
            for i in range(gen.shape[0]):
                total += 1
                if np.array_equal(got[ANSWER_IDS][i], gen[i]):
                    same += 1
                else:
                    mismatches.append(
                        {
                            "batch": b,
                            "row": i,
                            "onnx": got[ANSWER_IDS][i].tolist(),
                            "torch": gen[i].tolist(),
                            "torch_unrolled": ref_ids[i].tolist(),
                        }
                    )
    if total == 0:
        raise ValueError("parity: no inputs given")
    return ParityReport(
        questions=total,
        answers_identical=same / total,
        max_logit_diff=max_logit,
        max_feature_diff=max_feat,
        max_score_diff=max_score,
        logit_bar=logit_bar,
        mismatches=mismatches[:20],
    )


def random_batches(
    model: CoTokVQA, count: int, batch_size: int = 1, seed: int = 0
) -> list[dict[str, Tensor]]:
    """``count`` random input batches at the graph's question length, some questions padded.

    For tests and smoke checks; real parity runs use the synthetic test set.
    """
    t = model.config.text
    out = []
    g = torch.Generator().manual_seed(seed)
    for k in range(count):
        inputs = model.example_inputs(batch_size, question_len=t.max_question_tokens, seed=seed + k)
        lengths = torch.randint(1, t.max_question_tokens + 1, (batch_size,), generator=g)
        pos = torch.arange(t.max_question_tokens)[None, :]
        mask = pos < lengths[:, None]
        inputs["question_mask"] = mask
        inputs["question_ids"] = inputs["question_ids"].masked_fill(~mask, t.pad_id)
        out.append(inputs)
    return out
