"""Decode a dataset's splits into the stream cache once, before training runs use it.

    python -m cotok_edge.data.prepare --data DIR --format msrvtt-qa --cache-dir DIR
        [--splits train val test] [--preset tiny] [--workers N]

Training and evaluation decode what the cache lacks themselves; this does it ahead,
with ``--workers`` processes, so that several runs started side by side (or a run
on a machine whose time is counted) find every clip decoded. The cache is keyed by
the clips and the preset's stream geometry: runs of any preset with the same
streams share it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..model.config import PRESETS, CoTokConfig
from .clips import StreamCache, group_by_clip
from .datasets import FORMATS, load_split
from .video import StreamSpec


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cotok_edge.data.prepare", description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="dataset folder")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--cache-dir", type=Path, required=True, help="the runs' --cache-dir")
    p.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="stream geometry")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        p.error(f"--data {args.data}: no such folder")
    if args.workers < 1:
        p.error(f"--workers must be at least 1, got {args.workers}")
    cfg = CoTokConfig.preset(args.preset)
    specs = [StreamSpec(s.name, s.frames, s.size) for s in cfg.streams]
    for split in args.splits:
        t0 = time.perf_counter()
        try:
            clips = group_by_clip(load_split(args.format, args.data, split))
            cache = StreamCache(clips, specs, args.cache_dir, workers=args.workers)
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            p.error(f"--splits {split}: {e}")
        print(
            f"{split}: {len(clips)} clips in {cache.folder} ({time.perf_counter() - t0:.1f} s)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
