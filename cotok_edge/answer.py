"""Answer questions about a video with a bundle.

    python -m cotok_edge.answer --bundle DIR --video FILE --question "..." \\
        [--question "..."] [--backend auto|tensorrt|onnxruntime|torch] [--json] \\
        [--explain out.png]

Prints each answer's text alone on a line on stdout; with ``--json`` one JSON object
instead (``text``, ``score``, ``timings_ms``, ``backend``; with several questions,
``answers``: a list of those). ``--explain`` also writes the explanation picture of the
first question. Errors (bad bundle, video that does not decode, bad question, ...): one
line on stderr, exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from typing import Any

EXIT_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cotok_edge.answer",
        description="Answer questions about a video with a cotok-edge bundle.",
    )
    p.add_argument("--bundle", required=True, help="bundle folder (python -m cotok_edge.build)")
    p.add_argument("--video", required=True, help="video file")
    p.add_argument(
        "--question", required=True, action="append", help="a question (may be repeated)"
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "tensorrt", "onnxruntime", "torch"),
        help="inference backend (default: auto, the fastest that runs here)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of the text")
    p.add_argument("--explain", metavar="PNG", help="also write an explanation picture")
    return p


def _record(ans: Any, backend: str) -> dict[str, Any]:
    return {
        "question": ans.question,
        "text": ans.text,
        "score": ans.score,
        "timings_ms": {k: round(v, 3) for k, v in ans.timings_ms.items()},
        "backend": backend,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0, or 2 on an error, reported on stderr)."""
    args = _parser().parse_args(argv)
    try:
        from cotok_edge.runtime import load

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            qa = load(args.bundle, backend=args.backend, verbose=False)
            answers = qa.answer(args.video, list(args.question))
            explanation = None
            if args.explain:
                explanation = qa.explain(args.video, args.question[0], args.explain)
        for w in caught:
            if issubclass(w.category, UserWarning):
                print(f"warning: {w.message}", file=sys.stderr)
    except (ValueError, OSError) as e:  # every runtime input error is a ValueError
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # a bug, not bad input: still one line, no traceback
        msg = " ".join(str(e).split())
        print(f"error: internal error ({type(e).__name__}: {msg})", file=sys.stderr)
        return EXIT_ERROR
    assert isinstance(answers, list)
    if args.json:
        records = [_record(a, qa.backend) for a in answers]
        out: dict[str, Any] = dict(records[0]) if len(records) == 1 else {"answers": records}
        if len(records) > 1:
            out["backend"] = qa.backend
        if explanation is not None:
            out["explanation"] = {
                "png": str(explanation.path),
                "contributions": explanation.contributions,
            }
        print(json.dumps(out))
    else:
        for a in answers:
            print(a.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
