"""The best fine-time accuracy each stream's frames allow on the synthetic benchmark.

    python -m benchmarks.stream_ceiling [--clips 200000] [--seed 0]

A single-stream model sees only its stream's frames: the 16-frame stream every
other frame of a synthetic clip, the 8-frame stream every fourth (the frames
``cotok_edge.data.video.sample_times`` picks). The lamps blink and flash for one
or two frames, so some of the events the fine-time questions ask about fall
between the frames a stream sees. However well a model perceives them, what it
can answer is bounded by what those frames show; this script measures that bound.

It draws clips from the generator's own distribution
(:func:`cotok_edge.data.synthetic.make_clip_spec`, nothing rendered), writes down
what a perfect observer of each stream's frames sees of the lamps (for each frame:
which lamps are lit, and their colour), and answers each question with the
commonest answer among the clips that looked the same: the Bayes-optimal rule.
Scored on the clips it was fitted on, it is an upper estimate of the bound (a
look seen once is answered right); fitted on one half and scored on the other, a
lower one (a look not seen in the first half gets the commonest answer). Where
the looks are few, as for the 8-frame stream, the two agree. Lamp corners are
random per clip and carry no answer, so the observation keeps colours and frames
only.

The bound is for perception that never errs: a trained model sits at or below it.
A three-stream model can reach the 32-frame stream's bound (100%), so the gap
between a stream's bound and a three-stream model's measured accuracy is a gap
no single-stream model of that stream can close, at any training budget.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence

import numpy as np
from tqdm import tqdm

from cotok_edge.data.synthetic import FPS, FRAMES, make_clip_spec
from cotok_edge.data.video import sample_times

#: The tiny and paper presets' streams: name -> frames sampled from the clip.
STREAM_FRAMES = {"s1": 32, "s2": 16, "s3": 8}


def seen_frames(frames: int) -> list[int]:
    """Indices of the clip frames a stream of ``frames`` frames decodes (1 s, 32 fps)."""
    clip_seconds = FRAMES / FPS
    return [int(t * FPS) for t in sample_times(0.0, clip_seconds, frames)]


def lamp_observation(lamps: Sequence[dict], frames: Sequence[int]) -> tuple[Hashable, ...]:
    """What a perfect observer of ``frames`` sees of the lamps: per frame, the lit colours."""
    return tuple(tuple(sorted(lp["color"] for lp in lamps if f in lp["on_frames"])) for f in frames)


def fine_time_answer(lamps: Sequence[dict], mode: str) -> str:
    """The fine-time question's answer: the blink count, or the colour that flashes first."""
    if mode == "count":
        return str(lamps[0]["blinks"])
    return min(lamps, key=lambda lp: lp["on_frames"][0])["color"]


def ceilings(clips: int, seed: int, progress: bool = True) -> dict[str, dict[str, float]]:
    """``{stream: {question: accuracy}}``, questions ``count``, ``order`` and ``fine time``
    (both together) scored on the fitting clips, and ``held-out count``, ``held-out
    order``, ``held-out fine time`` scored on the other half."""
    rng = np.random.default_rng(seed)
    views = {name: seen_frames(n) for name, n in STREAM_FRAMES.items()}
    # (stream, question mode) -> [(observation, answer)] for the fitting and scoring halves.
    halves: list[dict[tuple[str, str], list[tuple[Hashable, str]]]] = [
        defaultdict(list),
        defaultdict(list),
    ]
    for i in tqdm(range(clips), desc="clips", disable=not progress):
        spec = make_clip_spec(rng)
        answer = fine_time_answer(spec.lamps, spec.lamp_mode)
        for name, frames in views.items():
            obs = lamp_observation(spec.lamps, frames)
            halves[i % 2][(name, spec.lamp_mode)].append((obs, answer))
    out: dict[str, dict[str, float]] = {}
    for name in views:
        rules = {mode: _bayes_rule(halves[0][(name, mode)]) for mode in ("count", "order")}
        out[name] = {}
        for prefix, scored in (("", halves[0]), ("held-out ", halves[1])):
            right, total = 0, 0
            for mode, answer_for in rules.items():
                pairs = scored[(name, mode)]
                hits = sum(answer_for(obs) == answer for obs, answer in pairs)
                out[name][prefix + mode] = hits / len(pairs)
                right, total = right + hits, total + len(pairs)
            out[name][prefix + "fine time"] = right / total
    return out


def _bayes_rule(pairs: list[tuple[Hashable, str]]) -> Callable[[Hashable], str]:
    """The commonest answer of each observation in ``pairs``; the commonest overall for
    an observation they do not hold."""
    votes: dict[Hashable, Counter] = defaultdict(Counter)
    for obs, answer in pairs:
        votes[obs][answer] += 1
    best = {obs: c.most_common(1)[0][0] for obs, c in votes.items()}
    prior = Counter(answer for _, answer in pairs).most_common(1)[0][0]
    return lambda obs: best.get(obs, prior)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stream_ceiling", description=__doc__)
    p.add_argument("--clips", type=int, default=200_000, help="clips drawn (half fit, half score)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.clips < 2:
        p.error(f"--clips must be at least 2, got {args.clips}")
    result = ceilings(args.clips, args.seed)
    print(
        f"Best fine-time accuracy from each stream's frames ({args.clips:,} clips drawn, "
        f"seed {args.seed}; scored on the half fitted, the other half in brackets):\n"
    )
    print("| stream | frames seen | blink count | which flashes first | fine time |")
    print("|---|---|---:|---:|---:|")
    for name, r in result.items():
        frames = seen_frames(STREAM_FRAMES[name])
        shown = "all 32" if len(frames) == FRAMES else ", ".join(map(str, frames[:4])) + ", ..."
        cells = [
            f"{100 * r[q]:.1f}% (held out {100 * r['held-out ' + q]:.1f}%)"
            for q in ("count", "order", "fine time")
        ]
        print(f"| {name} ({STREAM_FRAMES[name]} frames) | {shown} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
