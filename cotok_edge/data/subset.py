"""A one-question training set cut from an MSRVTT-QA-format dataset (a curriculum phase).

    python -m cotok_edge.data.subset --data data/synth6k \\
        --question "what shape is the big object?" --holdout 300 --out data/probe_shape
    python -m cotok_edge.data.subset --data data/synth6k --category 0 --out data/probe_space

Keeps the training questions whose text is exactly ``--question`` (or, with
``--category``, whose ``category_id`` is that number: one kind of question asked in
several wordings), in their order; the last ``--holdout`` of them become the
validation split, so the source's own validation and test splits stay untouched (the
test split is written empty). ``videos`` is a link to the source's videos folder:
nothing is copied. Used for the shape-only phase of the shipped model
(``cotok_edge/assets/README.md``) and the one-question probes of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from .datasets import _read_json_list

SPLIT_FILE = "{}_qa.json"


def select(
    records: list[dict], question: str | None, holdout: int, category: int | None = None
) -> tuple[list[dict], list[dict]]:
    """``(train, val)``: the records asking ``question`` (or of ``category``), the last
    ``holdout`` as val.

    Raises:
        ValueError: no record asks it (the message lists the questions or categories
            there are), or ``holdout`` leaves no training record.
    """
    if (question is None) == (category is None):
        raise ValueError("select: give exactly one of question and category")
    if question is not None:
        chosen = [r for r in records if r.get("question") == question]
        if not chosen:
            asked = sorted({str(r.get("question")) for r in records})
            raise ValueError(f"--question {question!r}: no training record asks it; asked: {asked}")
    else:
        chosen = [r for r in records if r.get("category_id") == category]
        if not chosen:
            there = sorted({str(r.get("category_id")) for r in records})
            raise ValueError(
                f"--category {category}: no training record has it; category ids: {there}"
            )
    if not 0 <= holdout < len(chosen):
        raise ValueError(
            f"--holdout {holdout}: must be >= 0 and leave training records ({len(chosen)} ask it)"
        )
    cut = len(chosen) - holdout
    return chosen[:cut], chosen[cut:]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cotok_edge.data.subset", description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="source dataset (msrvtt-qa format)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--question", help="the exact question text to keep")
    what.add_argument("--category", type=int, help="keep the questions of this category_id")
    p.add_argument("--holdout", type=int, default=300, help="last N records -> validation")
    p.add_argument("--out", type=Path, required=True, help="folder to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = p.parse_args(argv)

    source = args.data / SPLIT_FILE.format("train")
    if not source.is_file():
        p.error(f"--data {args.data}: no {source.name} (an msrvtt-qa format dataset)")
    if not (args.data / "videos").is_dir():
        p.error(f"--data {args.data}: no videos folder")
    if args.out.exists() and not args.force:
        p.error(f"--out {args.out} exists: pass --force to replace it")
    try:
        train, val = select(_read_json_list(source), args.question, args.holdout, args.category)
    except ValueError as e:
        p.error(str(e))

    # Written beside --out and renamed into place: no half-written dataset on failure.
    tmp = args.out.with_name(f".{args.out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for split, rows in (("train", train), ("val", val), ("test", [])):
        (tmp / SPLIT_FILE.format(split)).write_text(json.dumps(rows))
    os.symlink(os.path.abspath(args.data / "videos"), tmp / "videos")
    if args.out.is_dir() and not args.out.is_symlink():
        shutil.rmtree(args.out)
    elif args.out.exists() or args.out.is_symlink():
        args.out.unlink()
    tmp.rename(args.out)
    kept = repr(args.question) if args.question is not None else f"category {args.category}"
    print(f"{args.out}: {len(train)} training and {len(val)} validation records of {kept}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
