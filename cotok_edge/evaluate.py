"""Evaluate a checkpoint on a QA split: accuracy overall and per category.

    python -m cotok_edge.evaluate [--checkpoint DIR] --data DIR --format msrvtt-qa --split test
        [--by-question] [--blank-stream s1]

Prints JSON: ``accuracy`` (exact match of the normalised answer; for iVQA the
mean of min(1, matching annotators / 2)), ``per_category`` ``{id: {accuracy,
count}}`` and ``count``; with ``--by-question``, ``per_question`` ``{question
text: {accuracy, count}}``. ``--blank-stream NAME`` (repeatable) replaces that
stream's frames with uniform grey at the model's normalisation mean: what the
model answers without it (a test-time deletion, not a model trained without
the stream). Without ``--checkpoint`` the shipped default model is used.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .data.clips import ClipQuestions, StreamCache, grey_pixel, group_by_clip
from .data.datasets import FORMATS, QARecord, accuracy, load_split
from .data.text import decode_answer, encode_questions, load_tokenizer
from .data.video import StreamSpec
from .model import CoTokVQA
from .model.vqa import DEFAULT_CHECKPOINT


@torch.no_grad()
def predict_clips(
    model: CoTokVQA,
    tokenizer: object,
    clips: Sequence[ClipQuestions],
    cache: StreamCache | BlankedStreams,
    clips_per_batch: int = 8,
    show_progress: bool = False,
) -> list[list[str]]:
    """Greedy answers, ``[clip][question]``, one backbone pass per clip."""
    model.eval()
    device = next(model.parameters()).device
    max_len = model.config.text.max_question_tokens
    out: list[list[str]] = []
    starts = range(0, len(clips), clips_per_batch)
    for start in tqdm(starts, desc="answering", disable=not show_progress, unit="batch"):
        idx = list(range(start, min(start + clips_per_batch, len(clips))))
        streams = {k: torch.from_numpy(v).to(device) for k, v in cache.batch(idx).items()}
        questions = [q for i in idx for q in clips[i].questions]
        clip_index = torch.tensor([j for j, i in enumerate(idx) for _ in clips[i].questions])
        ids, mask = encode_questions(tokenizer, questions, max_len, truncate=True)
        answer_ids = model.generate(
            question_ids=ids.to(device), question_mask=mask.to(device),
            clip_index=clip_index.to(device), **streams,
        )  # fmt: skip
        texts = [decode_answer(tokenizer, row.tolist()) for row in answer_ids.cpu()]
        pos = 0
        for i in idx:
            n = len(clips[i].questions)
            out.append(texts[pos : pos + n])
            pos += n
    return out


def score(
    clips: Sequence[ClipQuestions], predictions: Sequence[Sequence[str]], metric: str = "exact"
) -> dict[str, object]:
    """Accuracy overall and per category (:func:`cotok_edge.data.datasets.accuracy`)."""
    return accuracy(_records(clips), _flat(predictions), metric)


def _records(clips: Sequence[ClipQuestions]) -> list[QARecord]:
    return [
        QARecord(Path(c.video_path), q, a, rid, cat, c.start, c.end)
        for c in clips
        for q, a, cat, rid in zip(c.questions, c.answers, c.category_ids, c.record_ids, strict=True)
    ]


def _flat(predictions: Sequence[Sequence[str]]) -> list[str]:
    return [p for preds in predictions for p in preds]


class BlankedStreams:
    """A :class:`StreamCache` view whose named streams are uniform grey ``fill [3]`` (uint8)."""

    def __init__(self, cache: StreamCache, names: Sequence[str], fill: Sequence[int]):
        self.cache, self.names, self.fill = cache, list(names), np.asarray(fill, np.uint8)

    def batch(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        out = self.cache.batch(indices)
        for name in self.names:
            out[name][:] = self.fill[None, :, None, None, None]
        return out


def per_question(
    clips: Sequence[ClipQuestions], predictions: Sequence[Sequence[str]], metric: str = "exact"
) -> dict[str, dict[str, float]]:
    """Accuracy ``{question text: {accuracy, count}}`` by ``metric``, commonest question first."""
    groups: dict[str, tuple[list[QARecord], list[str]]] = {}
    for r, p in zip(_records(clips), _flat(predictions), strict=True):
        records, preds = groups.setdefault(r.question, ([], []))
        records.append(r)
        preds.append(p)
    ordered = sorted(groups.items(), key=lambda kv: -len(kv[1][0]))
    out = {}
    for q, (records, preds) in ordered:
        result = accuracy(records, preds, metric)
        out[q] = {"accuracy": result["accuracy"], "count": result["count"]}
    return out


def evaluate_clips(
    model: CoTokVQA,
    tokenizer: object,
    clips: Sequence[ClipQuestions],
    cache_root: Path,
    metric: str = "exact",
    show_progress: bool = False,
    blank_streams: Sequence[str] = (),
    by_question: bool = False,
) -> dict[str, object]:
    specs = [StreamSpec(s.name, s.frames, s.size) for s in model.config.streams]
    cache = StreamCache(clips, specs, cache_root, show_progress=show_progress)
    frames: StreamCache | BlankedStreams = cache
    if blank_streams:
        frames = BlankedStreams(cache, blank_streams, grey_pixel(model.config.mean))
    preds = predict_clips(model, tokenizer, clips, frames, show_progress=show_progress)
    result = score(clips, preds, metric)
    if by_question:
        result["per_question"] = per_question(clips, preds, metric)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cotok_edge.evaluate", description=__doc__)
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped model")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, help="evaluate only the first N clips")
    p.add_argument("--cache-dir", type=Path, help="decoded-clip cache (default DATA/.stream-cache)")
    p.add_argument("--by-question", action="store_true", help="accuracy per question text too")
    p.add_argument(
        "--device", default="cpu",
        help="torch device to answer on (cpu, cuda, cuda:1; auto: cuda when there is one)",
    )  # fmt: skip
    p.add_argument(
        "--blank-stream", action="append", default=[], metavar="NAME",
        help="answer with this stream's frames replaced by grey (repeatable)",
    )  # fmt: skip
    args = p.parse_args(argv)
    ckpt = args.checkpoint or DEFAULT_CHECKPOINT
    tok_file = ckpt / "tokenizer.json"
    if not tok_file.is_file():
        p.error(f"--checkpoint {ckpt}: no tokenizer.json beside the weights")
    try:
        model = CoTokVQA.from_pretrained(ckpt)
    except (FileNotFoundError, ValueError) as e:
        p.error(f"--checkpoint: {e}")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as e:
        p.error(f"--device {args.device}: {e}")
    tokenizer = load_tokenizer(tok_file)
    unknown = sorted(set(args.blank_stream) - set(model.stream_names))
    if unknown:
        p.error(
            f"--blank-stream {', '.join(unknown)}: the model's streams are {model.stream_names}"
        )
    clips = group_by_clip(load_split(args.format, args.data, args.split))
    if args.limit:
        clips = clips[: args.limit]
    metric = "ivqa" if args.format == "ivqa" else "exact"
    cache_root = args.cache_dir or args.data / ".stream-cache"
    result = evaluate_clips(
        model, tokenizer, clips, cache_root, metric, show_progress=True,
        blank_streams=args.blank_stream, by_question=args.by_question,
    )  # fmt: skip
    result.update({"checkpoint": str(ckpt), "split": args.split, "format": args.format})
    if args.blank_stream:
        result["blank_streams"] = args.blank_stream
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
