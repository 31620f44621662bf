"""Clips and questions for INT8 calibration, QAT and the build's parity checks.

A build needs real clips: calibration ranges come from them, QAT trains on them and
parity is measured on them. ``--calib-data DIR`` names a QA dataset (any format of
:mod:`cotok_edge.data.datasets`); without it the build uses the synthetic benchmark the
shipped model was trained on (seed 0, ``--train 1200 --val 150 --test 300``), of which it
generates only the clips it needs (the first ``calib_clips`` training clips and the
first ``test_clips`` test clips: :func:`cotok_edge.build.parity.synthetic_subset`), once,
into a cache folder. Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from cotok_edge.data.clips import ClipQuestions, StreamCache, group_by_clip
from cotok_edge.data.datasets import load_split
from cotok_edge.data.text import encode_answers, encode_questions, normalize_answer
from cotok_edge.data.video import StreamSpec
from cotok_edge.model.config import CoTokConfig


@dataclass
class QASet:
    """Clips of one split, decoded once (``cache``), with their questions."""

    clips: list[ClipQuestions]
    cache: StreamCache

    @property
    def questions(self) -> int:
        return sum(len(c.questions) for c in self.clips)


def load_qa(
    data: Path,
    fmt: str,
    split: str,
    config: CoTokConfig,
    limit: int | None,
    cache_root: Path,
    progress: bool = True,
) -> QASet:
    """The first ``limit`` clips of ``split`` with every clip's streams decoded into a cache."""
    clips = group_by_clip(load_split(fmt, data, split))
    if limit is not None:
        clips = clips[:limit]
    if not clips:
        raise ValueError(f"{data}: the {split} split has no clips")
    specs = [StreamSpec(s.name, s.frames, s.size) for s in config.streams]
    return QASet(clips, StreamCache(clips, specs, cache_root / "streams", show_progress=progress))


def qa_batches(
    qa: QASet, tokenizer: object, config: CoTokConfig, clips_per_batch: int = 8
) -> list[dict[str, Tensor]]:
    """Batches of ``clips_per_batch`` clips and all their questions.

    Each batch: streams ``{s: [C, 3, T, S, S]}`` uint8, ``question_ids``/``question_mask``
    ``[Q, L]`` at the graph's fixed ``L``, ``answer_ids [Q, A]`` (the first reference
    answer), ``clip_index [Q]`` and ``category_ids [Q]`` (-1 where a dataset has none).
    """
    t = config.text
    out = []
    for start in range(0, len(qa.clips), clips_per_batch):
        idx = list(range(start, min(start + clips_per_batch, len(qa.clips))))
        streams = {k: torch.from_numpy(v) for k, v in qa.cache.batch(idx).items()}
        rows = [(j, q) for j, i in enumerate(idx) for q in range(len(qa.clips[i].questions))]
        questions = [qa.clips[idx[j]].questions[q] for j, q in rows]
        answers = [normalize_answer(qa.clips[idx[j]].answers[q][0]) for j, q in rows]
        cats = [qa.clips[idx[j]].category_ids[q] for j, q in rows]
        ids, mask = encode_questions(tokenizer, questions, t.max_question_tokens, truncate=True)
        out.append(
            {
                **streams,
                "question_ids": ids,
                "question_mask": mask,
                "answer_ids": encode_answers(tokenizer, answers, t.max_answer_tokens, True),
                "clip_index": torch.tensor([j for j, _ in rows]),
                "category_ids": torch.tensor([-1 if c is None else int(c) for c in cats]),
            }
        )
    return out
