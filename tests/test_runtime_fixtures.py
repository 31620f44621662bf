"""Shared, built-once data for the runtime tests (no tests here).

``shared_bundle()`` exports the shipped model into a temporary FP32 bundle once per test
session (the export takes several seconds); ``shared_clips()`` writes a few synthetic
clips. Both are cached at module level so every runtime test module reuses them.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@functools.lru_cache(maxsize=1)
def _workdir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="cotok-runtime-tests-"))
    atexit.register(shutil.rmtree, d, True)
    return d


def shipped_model():
    """The shipped model (``CoTokVQA.from_pretrained()``)."""
    from cotok_edge.model.vqa import CoTokVQA

    return CoTokVQA.from_pretrained()


@functools.lru_cache(maxsize=1)
def shared_bundle() -> Path:
    """An FP32 CPU bundle of the shipped model (graphs, explain graph, tokenizer, checkpoint)."""
    import torch

    from cotok_edge.runtime.devbundle import write_dev_bundle

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = _workdir() / "bundle"
        write_dev_bundle(shipped_model(), out)
    finally:
        torch.set_num_threads(threads)
    return out


@dataclass
class Clip:
    path: Path
    frames: np.ndarray  # uint8 [T, H, W, 3]
    questions: list[str]


@functools.lru_cache(maxsize=1)
def shared_clips() -> tuple[Clip, ...]:
    """Three synthetic clips (mp4 files and their frames) with their four questions each."""
    from cotok_edge.data import synthetic as syn

    out = []
    for i in range(3):
        spec = syn.make_clip_spec(np.random.default_rng([7, i]))
        frames = syn.draw_clip(spec)
        path = _workdir() / f"clip{i}.mp4"
        syn.write_video(path, frames)
        out.append(Clip(path, frames, [q for _, q, _ in syn.clip_questions(spec)]))
    return tuple(out)
