"""Question-answer records grouped by clip, with every clip decoded once.

Training and evaluation run the stream backbones once per clip and the
question-dependent part once per question (``CoTokVQA(..., clip_index=...)``),
so records are grouped by their video and time window. Decoding is the
slowest part of a CPU epoch, so :class:`StreamCache` decodes each clip once
into uint8 memory-mapped arrays on disk and reuses them across epochs and
runs.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .video import StreamSpec, VideoFileNotFoundError, load_streams


@dataclass
class ClipQuestions:
    """One clip (a video and a window) and the questions asked about it."""

    video_path: str
    start: float | None = None
    end: float | None = None
    questions: list[str] = field(default_factory=list)
    answers: list[list[str]] = field(default_factory=list)
    category_ids: list[int | None] = field(default_factory=list)
    record_ids: list[object] = field(default_factory=list)


def group_by_clip(records: Sequence[object]) -> list[ClipQuestions]:
    """Group QA records (``video_path``, ``start``, ``end``, ``question``, ``answers``,
    ``category_id``, ``id`` attributes) by clip, keeping first-seen order."""
    clips: dict[tuple[str, float | None, float | None], ClipQuestions] = {}
    for r in records:
        key = (str(r.video_path), r.start, r.end)
        clip = clips.get(key)
        if clip is None:
            clip = clips[key] = ClipQuestions(str(r.video_path), r.start, r.end)
        clip.questions.append(r.question)
        clip.answers.append(list(r.answers))
        clip.category_ids.append(r.category_id)
        clip.record_ids.append(r.id)
    return list(clips.values())


class StreamCache:
    """Every clip's streams, decoded once, as uint8 memmaps ``[num_clips, 3, T, S, S]``.

    The cache folder is keyed by the clips' paths, windows, file sizes and
    modification times and by the stream specs, so a change of any of them
    decodes again instead of reading stale frames.
    """

    def __init__(
        self,
        clips: Sequence[ClipQuestions],
        specs: Sequence[StreamSpec],
        cache_root: Path,
        show_progress: bool = True,
        workers: int = 1,
    ):
        """``workers`` processes decode a cache that is not built yet (1: this one)."""
        if workers < 1:
            raise ValueError(f"StreamCache: workers must be at least 1, got {workers}")
        self.specs = list(specs)
        key = _cache_key(clips, self.specs)
        self.folder = Path(cache_root) / key
        if not (self.folder / "done").is_file():
            self._build(clips, show_progress, workers)
        self.arrays = {
            s.name: np.load(self.folder / f"{s.name}.npy", mmap_mode="r") for s in self.specs
        }

    def _build(self, clips: Sequence[ClipQuestions], show_progress: bool, workers: int) -> None:
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=self.folder.parent))
        try:
            for s in self.specs:
                shape = (len(clips), 3, s.frames, s.size, s.size)
                np.lib.format.open_memmap(tmp / f"{s.name}.npy", "w+", np.uint8, shape).flush()
            # Each task decodes a contiguous run of clips into the same memmaps (opened
            # r+ in every worker): no frames travel between processes.
            chunk = max(1, min(64, -(-len(clips) // (4 * workers))))
            tasks = [
                (tmp, self.specs, list(clips[i : i + chunk]), i)
                for i in range(0, len(clips), chunk)
            ]
            bar = tqdm(
                total=len(clips), desc="decoding clips", disable=not show_progress, unit="clip"
            )
            if workers == 1 or len(tasks) == 1:
                for task in tasks:
                    bar.update(_decode_into(task))
            else:
                # An executor, not a Pool: a worker that dies (e.g. spawned from a script
                # that cannot be re-imported, such as one read from stdin) is an error here,
                # where a Pool would replace it forever.
                ctx = mp.get_context("spawn")
                with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=ctx) as pool:
                    try:
                        for done in pool.map(_decode_into, tasks):
                            bar.update(done)
                    except BrokenProcessPool as e:
                        raise RuntimeError(
                            f"StreamCache: a decoding worker died ({e}); run with workers=1, "
                            "or from an importable module or script file"
                        ) from None
            bar.close()
            (tmp / "done").write_text("")
            if self.folder.exists():  # another process finished first
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, self.folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def __len__(self) -> int:
        return next(iter(self.arrays.values())).shape[0]

    def batch(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """name -> uint8 ``[len(indices), 3, T, S, S]`` (a copy, safe to hand to torch)."""
        idx = np.asarray(indices)
        return {name: np.ascontiguousarray(arr[idx]) for name, arr in self.arrays.items()}


def _decode_into(task: tuple[Path, list[StreamSpec], list[ClipQuestions], int]) -> int:
    """Decode ``clips`` into rows ``first..`` of the memmaps in ``folder``; returns the count."""
    folder, specs, clips, first = task
    out = {s.name: np.load(folder / f"{s.name}.npy", mmap_mode="r+") for s in specs}
    for i, clip in enumerate(clips, start=first):
        streams = load_streams(clip.video_path, start=clip.start, end=clip.end, streams=specs)
        for name, arr in out.items():
            arr[i] = streams.arrays[name]
    for arr in out.values():
        arr.flush()
    return len(clips)


def grey_pixel(mean: Sequence[float]) -> list[int]:
    """The uint8 RGB colour that normalising with ``mean`` turns into zeros: a blank frame."""
    return [round(255 * m) for m in mean]


def _cache_key(clips: Sequence[ClipQuestions], specs: Sequence[StreamSpec]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([[s.name, s.frames, s.size] for s in specs]).encode())
    for c in clips:
        if not os.path.isfile(c.video_path):
            raise VideoFileNotFoundError(c.video_path, "no such file (named by the dataset)")
        st = os.stat(c.video_path)
        h.update(json.dumps([c.video_path, c.start, c.end, st.st_size, st.st_mtime_ns]).encode())
    return h.hexdigest()[:16]
