"""Train the co-tokenization model: caption pre-training or QA fine-tuning.

    python -m cotok_edge.train --data DIR --format msrvtt-qa --preset tiny --out runs/tiny
    torchrun --nproc_per_node 2 -m cotok_edge.train ...      (DistributedDataParallel)

AdamW with linear warm-up and cosine decay, gradient clipping, bf16 autocast
where the device supports it, a tqdm bar, an atomic resumable checkpoint every
``--checkpoint-every`` steps (``--resume`` continues exactly), periodic
validation per category into ``metrics.jsonl``, and at the end the final model
(``OUT/model``: config.json, model.safetensors, tokenizer.json) and a plot of
the learning curve per category (``OUT/learning_curve.png``).

Each step takes ``--clips`` clips and *all* their questions: the backbones run
once per clip, the question-dependent part once per question. With
``--stream-dropout P`` each stream of each clip is blanked with probability P
(:func:`drop_streams`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from .data.clips import ClipQuestions, StreamCache, grey_pixel, group_by_clip
from .data.datasets import FORMATS, load_split
from .data.text import (
    encode_answers,
    encode_questions,
    load_tokenizer,
    normalize_answer,
    save_tokenizer,
    train_tokenizer,
)
from .data.video import StreamSpec
from .evaluate import evaluate_clips
from .model import CoTokConfig, CoTokVQA
from .model.config import (
    PRESETS,
    STEMS,
    TOKEN_CONDITIONS,
    TOKEN_POOLS,
    VIDEO_TOKENIZERS,
    stage_strides,
)
from .model.max_tokens import with_max_tokens
from .model.pixel_skip import with_pixel_skip
from .model.reslice import reslice_time
from .model.token_condition import with_token_conditions
from .model.transplant import transplant_backbone
from .train_state import load_training_checkpoint, save_training_checkpoint

# The run's wall clock (a name of its own so that a test can drive --time-budget).
_clock = time.perf_counter
# The step cap of a --time-budget run given no --steps: far more steps than any budget buys.
UNCAPPED_STEPS = 10**12
# The learning curve's by-question panel shows this many of the commonest questions.
QUESTIONS_PLOTTED = 10

# Command-line flag -> CoTokConfig field it overrides.
OVERRIDES = {"cotok_steps": "steps", "time_groups": "time_groups",
             "tokens_per_stream": "tokens_per_stream",
             "video_tokenizer": "video_tokenizer"}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cotok_edge.train", description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="dataset folder")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--init", type=Path, help="start from this checkpoint (and its tokenizer)")
    p.add_argument(
        "--init-backbone", action="append", default=[], metavar="STREAM=CHECKPOINT",
        help="then take that stream's backbone from another checkpoint of the same "
        "architecture (e.g. s1=runs/count/model); repeatable",
    )  # fmt: skip
    p.add_argument(
        "--init-backbone-projection", action="store_true",
        help="with --init-backbone: take each such stream's projection W_v from the same "
        "checkpoint too (trained on those features; it needs the same pixel_skip)",
    )  # fmt: skip
    p.add_argument(
        "--freeze-backbone", action="append", default=[], metavar="STREAM",
        help="train everything but STREAM's backbone (fixed weights and BatchNorm statistics; "
        "no backward through it), e.g. a new fusion on trained features; 'all' for every "
        "stream; repeatable",
    )  # fmt: skip
    p.add_argument("--streams", help="comma-separated subset of the preset's streams")
    p.add_argument("--cotok-steps", type=int, help="override K, the co-tokenization steps")
    p.add_argument("--time-groups", type=int, help="override G, time slices per stream")
    p.add_argument(
        "--tokens-per-stream", type=int, help="override S, tokens per stream and time slice"
    )
    p.add_argument(
        "--video-tokenizer", choices=VIDEO_TOKENIZERS,
        help="override how video becomes tokens (mean: the mean-pooling control)",
    )  # fmt: skip
    p.add_argument(
        "--stream-time-groups", action="append", default=[], metavar="STREAM=G",
        help="cut STREAM's time axis into G slices (e.g. s1=32: one per frame); with --init "
        "the checkpoint's weights carry over (cotok_edge.model.reslice); repeatable",
    )  # fmt: skip
    p.add_argument(
        "--pixel-skip", action="store_true",
        help="give every stream's tokens its frames average-pooled to the feature grid "
        "(CoTokConfig.pixel_skip); with --init the checkpoint is carried over unchanged in "
        "output (cotok_edge.model.pixel_skip)",
    )  # fmt: skip
    p.add_argument(
        "--max-tokens", action="store_true",
        help="add per stream and time slice a max-pooled token (CoTokConfig.max_tokens); "
        "with --init the checkpoint's weights carry over (cotok_edge.model.max_tokens)",
    )  # fmt: skip
    p.add_argument(
        "--stream-stem-stride", action="append", default=[], metavar="STREAM=S",
        help="give STREAM's stem spatial stride S, its stages making up the rest so that "
        "its output grid stays (e.g. s3=2: the 224 px stream's first stage at 112 px, "
        "four times its work); fresh models only; repeatable",
    )  # fmt: skip
    p.add_argument(
        "--stream-token-pool", action="append", default=[], metavar="STREAM=POOL",
        help="how STREAM's TokenLearner pools: softmax (V1.1) or max (sigmoid gates, the max "
        "over the gated positions; StreamConfig.token_pool); with --init the weights carry "
        "over; repeatable",
    )  # fmt: skip
    p.add_argument(
        "--stream-token-condition", action="append", default=[], metavar="STREAM=COND",
        help="what conditions STREAM's TokenLearner maps: state (c_{k-1}, the paper's) or "
        "words (the mean of the question's word embeddings, projected; "
        "StreamConfig.token_condition); with --init a fresh projection is added; repeatable",
    )  # fmt: skip
    p.add_argument(
        "--stream-stem", action="append", default=[], metavar="STREAM=KIND",
        help="STREAM's stem: conv (the backbone's own) or pool (3x3 convolutions at full "
        "resolution with 2x2 max-pools, for objects a few pixels wide; StreamConfig.stem); "
        "fresh models only; repeatable",
    )  # fmt: skip
    p.add_argument(
        "--stream-stem-channels", action="append", default=[], metavar="STREAM=C",
        help="STREAM's stem width C; fresh models only; repeatable",
    )  # fmt: skip
    p.add_argument(
        "--steps", type=int,
        help="optimizer steps (default 1000; with --time-budget, no cap: the budget ends the run)",
    )  # fmt: skip
    p.add_argument("--clips", type=int, default=8, help="clips per step (all their questions)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--fraction", type=float, default=1.0, help="use this share of the clips")
    p.add_argument("--vocab-size", type=int, default=1024, help="tokenizer size when trained")
    p.add_argument(
        "--tokenizer", type=Path,
        help="use this tokenizer.json instead of training one (e.g. a QA run's, so caption "
        "pre-training and QA fine-tuning share one vocabulary)",
    )  # fmt: skip
    p.add_argument(
        "--max-answer-tokens", type=int,
        help="longest target in tokens with [EOS] (default: the preset's or --init's, 8); "
        "captions need about 48",
    )  # fmt: skip
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--eval-split", default="val")
    p.add_argument("--eval-clips", type=int, default=200, help="validation clips per evaluation")
    p.add_argument(
        "--eval-by-question", action="store_true",
        help="record validation accuracy per question text too (for templated benchmarks: "
        "one curve per question)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--zero-init-residual", action="store_true",
        help="start every backbone block as its shortcut (last BatchNorm scale 0)",
    )  # fmt: skip
    p.add_argument(
        "--stream-dropout", type=float, default=0.0, metavar="P",
        help="blank each stream of each clip with probability P (never all of a clip's "
        "streams), so that no stream can leave the others unlearnt",
    )  # fmt: skip
    p.add_argument(
        "--question-weight", action="append", default=[], metavar="REGEX=W",
        help="weigh the loss of every training question whose text matches REGEX "
        "(case-insensitive search) by W >= 0 instead of 1; repeatable, the first match wins",
    )  # fmt: skip
    p.add_argument(
        "--bf16", choices=("auto", "on", "off"), default="auto",
        help="bf16 autocast (auto: on for bf16 CUDA devices; on: also on a CPU, fast with AMX)",
    )  # fmt: skip
    p.add_argument("--cache-dir", type=Path, help="decoded-clip cache (default OUT/.stream-cache)")
    p.add_argument(
        "--decode-workers", type=int, default=1,
        help="processes that decode the clips into the cache when it is not built yet",
    )  # fmt: skip
    p.add_argument(
        "--cache-on-device", action="store_true",
        help="hold every decoded clip in the training device's memory (on a GPU: no host "
        "copy per step; needs clips x 2.2 MB for the three-stream presets)",
    )  # fmt: skip
    p.add_argument(
        "--time-budget", type=float, metavar="SECONDS",
        help="train for this many seconds of wall clock (from the first step, warm-up "
        "included) instead of to --steps: the cosine decay spans what is left of the budget "
        "after the warm-up, and the run ends, saving its model, at the first step past the "
        "budget or at --steps if given, whichever comes first",
    )  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoint exactly")
    p.add_argument(
        "--stop-at", type=int, help="stop after this step, keeping the schedule of --steps"
    )
    p.add_argument("--force", action="store_true", help="start over in an existing OUT")
    args = p.parse_args(argv)
    if args.steps is None:
        # A budgeted run without a step cap: the training loop's range never runs out first.
        args.steps = 1000 if args.time_budget is None else UNCAPPED_STEPS
    for name in ("steps", "clips", "checkpoint_every", "eval_every", "decode_workers"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("cotok_steps", "time_groups", "tokens_per_stream"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.time_budget is not None and not args.time_budget > 0:
        p.error(f"--time-budget must be a positive number of seconds, got {args.time_budget}")
    if args.time_budget is not None and (args.resume or args.stop_at is not None):
        p.error("--time-budget: a run on a wall-clock schedule cannot be resumed or stopped early")
    if not 0.0 <= args.stream_dropout < 1.0:
        p.error(f"--stream-dropout must be in [0, 1), got {args.stream_dropout}")
    try:
        args.question_weight = [parse_question_weight(w) for w in args.question_weight]
    except ValueError as e:
        p.error(str(e))
    if not 0.0 < args.fraction <= 1.0:
        p.error("--fraction must be in (0, 1]")
    if not args.data.is_dir():
        p.error(f"--data {args.data}: no such folder")
    if args.init is not None and not (args.init / "config.json").is_file():
        p.error(f"--init {args.init}: not a checkpoint folder (no config.json)")
    if args.init is not None:
        given = [
            f"--{n.replace('_', '-')}"
            for n in (
                "streams",
                "zero_init_residual",
                "stream_stem_stride",
                "stream_stem",
                "stream_stem_channels",
                *OVERRIDES,
            )  # fmt: skip
            if getattr(args, n)
        ]
        if given:
            p.error(f"--init {args.init}: the checkpoint fixes the model; drop {', '.join(given)}")
    if args.init_backbone_projection and not args.init_backbone:
        p.error("--init-backbone-projection needs --init-backbone STREAM=CHECKPOINT")
    backbones: dict[str, Path] = {}
    for item in args.init_backbone:
        stream, sep, folder = item.partition("=")
        if not sep or not stream or not folder:
            p.error(f"--init-backbone {item!r}: expected STREAM=CHECKPOINT, e.g. s1=runs/a/model")
        if not (Path(folder) / "config.json").is_file():
            p.error(f"--init-backbone {item!r}: {folder} is not a checkpoint (no config.json)")
        backbones[stream] = Path(folder)
    args.init_backbone = backbones
    args.stream_time_groups = _per_stream(p, "--stream-time-groups", args.stream_time_groups,
                                          "G", "s1=32")  # fmt: skip
    args.stream_stem_stride = _per_stream(p, "--stream-stem-stride", args.stream_stem_stride,
                                          "S", "s3=2")  # fmt: skip
    args.stream_stem_channels = _per_stream(p, "--stream-stem-channels",
                                            args.stream_stem_channels, "C", "s3=16")  # fmt: skip
    args.stream_stem = _per_stream_choice(p, "--stream-stem", args.stream_stem, "KIND", STEMS)
    args.stream_token_pool = _per_stream_choice(
        p, "--stream-token-pool", args.stream_token_pool, "POOL", TOKEN_POOLS
    )
    args.stream_token_condition = _per_stream_choice(
        p, "--stream-token-condition", args.stream_token_condition, "COND", TOKEN_CONDITIONS
    )
    if args.tokenizer is not None and not args.tokenizer.is_file():
        p.error(f"--tokenizer {args.tokenizer}: no such file")
    if args.max_answer_tokens is not None and args.max_answer_tokens < 2:
        p.error("--max-answer-tokens must be at least 2 (one token and [EOS])")
    if (args.out / "checkpoint").exists() and not (args.resume or args.force):
        p.error(f"--out {args.out} already holds a run: pass --resume or --force")
    if args.resume and not (args.out / "checkpoint").exists():
        p.error(f"--resume: {args.out}/checkpoint does not exist")
    return args


def _per_stream(
    p: argparse.ArgumentParser, flag: str, items: list[str], letter: str, example: str
) -> dict[str, int]:
    """``STREAM=N`` items (N >= 1) as ``{stream: N}``; a malformed one is a usage error."""
    out: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not value.isdigit() or int(value) < 1:
            p.error(f"{flag} {item!r}: expected STREAM={letter} with {letter} >= 1, e.g. {example}")
        out[name] = int(value)
    return out


def _per_stream_choice(
    p: argparse.ArgumentParser, flag: str, items: list[str], letter: str, choices: tuple[str, ...]
) -> dict[str, str]:
    """``STREAM=CHOICE`` items as ``{stream: choice}``; a malformed one is a usage error."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or value not in choices:
            p.error(f"{flag} {item!r}: expected STREAM={letter} with {letter} one of {choices}")
        out[name] = value
    return out


def _stream_index(flag: str, name: str, value: object, names: list[str]) -> int:
    """Where stream ``name`` is in ``names``; a flag naming no stream of the model exits."""
    if name not in names:
        raise SystemExit(f"{flag} {name}={value}: no stream {name!r} in {names}")
    return names.index(name)


def parse_question_weight(text: str) -> tuple[re.Pattern[str], float]:
    """``"REGEX=W"`` -> (compiled case-insensitive pattern, W); ``ValueError`` if malformed."""
    pattern, sep, value = text.rpartition("=")
    if not sep or not pattern:
        raise ValueError(f"--question-weight {text!r}: expected REGEX=W, e.g. 'how many=2'")
    try:
        weight = float(value)
    except ValueError:
        raise ValueError(f"--question-weight {text!r}: W={value!r} is not a number") from None
    if not (math.isfinite(weight) and weight >= 0.0):
        raise ValueError(f"--question-weight {text!r}: W must be finite and >= 0, got {weight}")
    try:
        return re.compile(pattern, re.IGNORECASE), weight
    except re.error as e:
        raise ValueError(f"--question-weight {text!r}: bad regular expression ({e})") from None


def question_weights(
    clips: list[ClipQuestions], rules: list[tuple[re.Pattern[str], float]]
) -> list[torch.Tensor]:
    """Per clip, the loss weight of each of its questions ``[Q_c]`` (1 where no rule matches).

    Raises ``ValueError`` for a rule that matches no training question (a typo
    would otherwise silently weigh nothing).
    """
    used = [0] * len(rules)
    out = []
    for clip in clips:
        row = []
        for question in clip.questions:
            weight = 1.0
            for j, (pattern, w) in enumerate(rules):
                if pattern.search(question):
                    weight, used[j] = w, used[j] + 1
                    break
            row.append(weight)
        out.append(torch.tensor(row, dtype=torch.float32))
    for (pattern, _), n in zip(rules, used, strict=True):
        if n == 0:
            raise ValueError(f"--question-weight {pattern.pattern!r}: matches no training question")
    return out


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on the weight matrices and kernels only.

    Biases, norm scales, embeddings and position tables are left undecayed:
    decay pulls a row of an embedding that a batch does not use towards zero
    at every step, and shrinking a norm's scale or a position table only
    fights what they are there to learn.
    """
    decay, keep = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        undecayed = p.dim() < 2 or "embed" in name or "pos" in name.split(".")[-1]
        (keep if undecayed else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": keep, "weight_decay": 0.0},
    ]


def lr_at(step: int, args: argparse.Namespace, time_progress: float | None = None) -> float:
    """Linear warm-up to ``--lr``, then cosine decay to 0 at ``--steps``.

    With ``--time-budget`` the decay follows the wall clock instead:
    ``time_progress`` is the share of the post-warm-up budget spent (0 to 1).
    """
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    if time_progress is not None:
        progress = max(progress, time_progress)
    return args.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def training_answer(answers: list[str]) -> str:
    """The target among several annotators' answers: the most frequent, first on ties."""
    norm = [normalize_answer(a) for a in answers]
    return max(norm, key=lambda a: (norm.count(a), -norm.index(a)))


class ClipBatches:
    """Deterministic clip order: epoch e is a permutation seeded by (seed, e).

    Step ``s`` always sees the same clips, so a resumed run replays exactly.
    Under DDP each rank takes every ``world``-th clip of the step's batch.
    """

    def __init__(self, num_clips: int, clips_per_step: int, seed: int, rank: int, world: int):
        self.n, self.per_step, self.seed = num_clips, clips_per_step, seed
        self.rank, self.world = rank, world
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:  # a step spans at most two epochs: keep only those
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch]

    def __call__(self, step: int) -> list[int]:
        start = step * self.per_step
        out = []
        for pos in range(start, start + self.per_step):
            epoch, i = divmod(pos, self.n)
            out.append(int(self._perm(epoch)[i]))
        return out[self.rank :: self.world]


def make_batch(
    cache: StreamCache | DeviceStreams,
    clips: list[ClipQuestions],
    indices: list[int],
    question_ids: list[torch.Tensor],
    question_mask: list[torch.Tensor],
    answer_ids: list[torch.Tensor],
    loss_weight: list[torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Streams of ``indices`` ``[C, 3, T, S, S]`` and all their questions ``[B, L]``.

    With ``loss_weight`` (per clip ``[Q_c]``) the batch also holds ``loss_weight [B]``.
    """
    # as_tensor: a memmap's numpy copy is wrapped without copying, a device tensor kept.
    streams = {k: torch.as_tensor(v) for k, v in cache.batch(indices).items()}
    rows = [(j, q) for j, i in enumerate(indices) for q in range(len(clips[i].questions))]
    batch = {
        **streams,
        "question_ids": torch.stack([question_ids[indices[j]][q] for j, q in rows]),
        "question_mask": torch.stack([question_mask[indices[j]][q] for j, q in rows]),
        "answer_ids": torch.stack([answer_ids[indices[j]][q] for j, q in rows]),
        "clip_index": torch.tensor([j for j, _ in rows]),
    }
    if loss_weight is not None:
        batch["loss_weight"] = torch.stack([loss_weight[indices[j]][q] for j, q in rows])
    return batch


class DeviceStreams:
    """A :class:`StreamCache` copied whole into ``device`` memory (uint8 ``[N, 3, T, S, S]``).

    On a GPU this removes the per-step gather and host-to-device copy of the
    clips (70 MB a step for 32 clips), which would otherwise cost more than the
    tiny preset's whole step.
    """

    def __init__(self, cache: StreamCache, device: torch.device):
        self.device = device
        self.arrays = {}
        for name, arr in cache.arrays.items():
            held = torch.empty(arr.shape, dtype=torch.uint8, device=device)
            for i in range(0, arr.shape[0], 256):  # no second whole copy in host memory
                held[i : i + 256] = torch.from_numpy(np.array(arr[i : i + 256]))
            self.arrays[name] = held

    def batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """name -> uint8 ``[len(indices), 3, T, S, S]`` on the device."""
        idx = torch.tensor(indices, device=self.device)
        return {name: arr.index_select(0, idx) for name, arr in self.arrays.items()}


def drop_streams(
    streams: dict[str, torch.Tensor], p: float, fill: Sequence[int], rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """Stream dropout: each clip's stream ``[C, 3, T, S, S]`` turns grey with probability ``p``.

    ``fill [3]`` is the grey (uint8, the model's normalisation mean, so a blank
    stream normalises to zeros, as ``evaluate --blank-stream`` makes it). A clip
    always keeps at least one stream: where the draw blanks all of them, one
    chosen at random stays. Blanks in place and returns ``streams``.
    """
    names = sorted(streams)
    if p <= 0.0 or len(names) < 2:
        return streams
    drop = rng.random((streams[names[0]].shape[0], len(names))) < p
    for c in np.flatnonzero(drop.all(axis=1)):
        drop[c, rng.integers(len(names))] = False
    grey = torch.tensor(list(fill), dtype=streams[names[0]].dtype)[:, None, None, None]
    for j, name in enumerate(names):
        streams[name][torch.from_numpy(drop[:, j])] = grey
    return streams


def _setup_distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank = dist.get_rank()
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def use_bf16(flag: str, device: torch.device) -> bool:
    """Whether to train under bf16 autocast: ``--bf16 on/off``, or ``auto``.

    ``auto`` turns it on for CUDA devices that support bf16 only. On CPUs with AMX
    tiles ``--bf16 on`` makes the tiny preset's step 15-25% faster, but the CI
    learning test's run learnt less under it in one of two tries (54% against 79-82%
    in fp32; ``benchmarks/RESULTS.md``), so it stays a choice, not the default.
    """
    if flag != "auto":
        return flag == "on"
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def build_config(args: argparse.Namespace, vocab_size: int) -> CoTokConfig:
    """The preset with the command line's overrides, validated again as a whole."""
    cfg = CoTokConfig.preset(args.preset)
    if args.streams:
        try:
            cfg = cfg.with_streams([s.strip() for s in args.streams.split(",")])
        except ValueError as e:
            raise SystemExit(f"--streams {args.streams}: {e}") from e
    data = cfg.to_dict()
    data["text"]["vocab_size"] = vocab_size
    for flag, key in OVERRIDES.items():
        if getattr(args, flag) is not None:
            data[key] = getattr(args, flag)
    if args.max_answer_tokens is not None:
        data["text"]["max_answer_tokens"] = args.max_answer_tokens
    data["pixel_skip"] = args.pixel_skip or data["pixel_skip"]
    data["max_tokens"] = args.max_tokens or data["max_tokens"]
    names = [s["name"] for s in data["streams"]]
    for name, stem in args.stream_stem_stride.items():
        stream = data["streams"][_stream_index("--stream-stem-stride", name, stem, names)]
        total = stream["stem_stride"] * math.prod(stream["spatial_strides"])
        try:
            stream["spatial_strides"] = list(
                stage_strides(total, stem, len(stream["spatial_strides"]))
            )
        except ValueError as e:
            raise SystemExit(f"--stream-stem-stride {name}={stem}: {e}") from None
        stream["stem_stride"] = stem
    for flag, key, values in (
        ("--stream-time-groups", "time_groups", args.stream_time_groups),
        ("--stream-stem", "stem", args.stream_stem),
        ("--stream-stem-channels", "stem_channels", args.stream_stem_channels),
        ("--stream-token-pool", "token_pool", args.stream_token_pool),
        ("--stream-token-condition", "token_condition", args.stream_token_condition),
    ):
        for name, value in values.items():
            data["streams"][_stream_index(flag, name, value, names)][key] = value
    try:
        return CoTokConfig.from_dict(data)
    except ValueError as e:
        raise SystemExit(f"--preset {args.preset} with the given overrides: {e}") from e


def _edit_loaded_config(cfg: CoTokConfig, args: argparse.Namespace) -> None:
    """What ``--init`` may change: fields no weight's shape depends on."""
    if args.max_answer_tokens is not None:
        cfg.text.max_answer_tokens = args.max_answer_tokens
    names = [s.name for s in cfg.streams]
    for name, pool in args.stream_token_pool.items():
        cfg.streams[_stream_index("--stream-token-pool", name, pool, names)].token_pool = pool


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank, world, device = _setup_distributed()
    main_process = rank == 0
    torch.manual_seed(args.seed)
    if main_process:
        if args.force and args.out.exists() and not args.resume:
            shutil.rmtree(args.out)
        args.out.mkdir(parents=True, exist_ok=True)

    records = load_split(args.format, args.data, "train")
    tok_file = args.out / "tokenizer.json"
    given_tokenizer = args.tokenizer
    if given_tokenizer is None and args.init is not None:
        given_tokenizer = args.init / "tokenizer.json"
    if given_tokenizer is not None and given_tokenizer.is_file() and not args.resume:
        tokenizer = load_tokenizer(given_tokenizer)
        if main_process:
            shutil.copyfile(given_tokenizer, tok_file)
    elif args.resume:
        tokenizer = load_tokenizer(args.out / "checkpoint" / "tokenizer.json")
    else:
        texts = [r.question for r in records] + [a for r in records for a in r.answers]
        tokenizer = train_tokenizer(texts, args.vocab_size)
        if main_process:
            save_tokenizer(tokenizer, tok_file)

    if args.init is not None:
        model = CoTokVQA.from_pretrained(
            args.init, edit_config=lambda cfg: _edit_loaded_config(cfg, args)
        )
        if args.stream_time_groups:
            try:
                model = reslice_time(model, args.stream_time_groups)
            except ValueError as e:
                raise SystemExit(f"--stream-time-groups: {e}") from None
        if args.pixel_skip and not model.config.pixel_skip:
            model = with_pixel_skip(model)
        if args.max_tokens and not model.config.max_tokens:
            model = with_max_tokens(model)
        if args.stream_token_condition:
            try:
                model = with_token_conditions(model, args.stream_token_condition)
            except ValueError as e:
                raise SystemExit(f"--stream-token-condition: {e}") from None
        if model.config.text.vocab_size < tokenizer.get_vocab_size():
            raise SystemExit(f"--init {args.init}: its vocabulary is smaller than the tokenizer's")
    else:
        model = CoTokVQA(build_config(args, tokenizer.get_vocab_size()))
        if args.zero_init_residual:
            for backbone in model.backbones.values():
                backbone.zero_init_residual()
    for stream, folder in args.init_backbone.items():
        try:
            transplant_backbone(model, stream, folder, args.init_backbone_projection)
        except ValueError as e:
            raise SystemExit(f"--init-backbone: {e}") from None
    frozen = model.stream_names if "all" in args.freeze_backbone else args.freeze_backbone
    try:
        model.freeze_backbones(frozen)
    except ValueError as e:
        raise SystemExit(f"--freeze-backbone: {e}") from None
    cfg = model.config
    model.to(device).train()

    clips = group_by_clip(records)
    if args.fraction < 1.0:
        keep = np.random.default_rng(args.seed).permutation(len(clips))
        clips = [clips[i] for i in sorted(keep[: max(1, round(args.fraction * len(clips)))])]
    specs = [StreamSpec(s.name, s.frames, s.size) for s in cfg.streams]
    cache_root = args.cache_dir or args.out / ".stream-cache"
    if world > 1 and not main_process:
        dist.barrier()  # let rank 0 decode the clips once
    cache = StreamCache(
        clips, specs, cache_root, show_progress=main_process, workers=args.decode_workers
    )
    if world > 1 and main_process:
        dist.barrier()
    source: StreamCache | DeviceStreams = (
        DeviceStreams(cache, device) if args.cache_on_device else cache
    )

    t = cfg.text
    _check_answer_lengths(clips, tokenizer, t.max_answer_tokens)
    q_ids, q_mask, a_ids = [], [], []
    for c in clips:
        ids, mask = encode_questions(tokenizer, c.questions, t.max_question_tokens, truncate=True)
        q_ids.append(ids)
        q_mask.append(mask)
        answers = [training_answer(a) for a in c.answers]
        a_ids.append(encode_answers(tokenizer, answers, t.max_answer_tokens))

    try:
        weights = question_weights(clips, args.question_weight) if args.question_weight else None
    except ValueError as e:
        raise SystemExit(str(e)) from None
    grey = grey_pixel(cfg.mean)
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr)
    start_step = 0
    if args.resume:
        state = load_training_checkpoint(args.out / "checkpoint", model, opt)
        start_step = state["step"]
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=None) if world > 1 else model
    batches = ClipBatches(len(clips), args.clips, args.seed, rank, world)
    bf16 = use_bf16(args.bf16, device)
    eval_clips = _eval_clips(args, cfg) if main_process else []
    metrics_file = args.out / "metrics.jsonl"

    bar = tqdm(
        # An iterator, not the range: tqdm would take an uncapped run's huge len() as its total.
        iter(range(start_step, args.steps)), initial=start_step,
        total=None if args.steps == UNCAPPED_STEPS else args.steps,
        desc="train", disable=not main_process,
    )  # fmt: skip
    t0 = _clock()
    deadline = None if args.time_budget is None else t0 + args.time_budget
    t_warm: float | None = None  # when the warm-up ended: the timed decay starts there
    done = start_step
    for step in bar:
        if args.stop_at is not None and step >= args.stop_at:
            break
        now = _clock()
        time_progress = None
        if deadline is not None and step >= args.warmup:
            t_warm = now if t_warm is None else t_warm
            time_progress = (now - t_warm) / max(deadline - t_warm, 1e-9)
        lr = lr_at(step, args, time_progress)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = make_batch(source, clips, batches(step), q_ids, q_mask, a_ids, weights)
        if args.stream_dropout > 0.0:
            # Seeded by (seed, step, rank) so that a resumed run replays the same blanks.
            rng = np.random.default_rng([args.seed, step, rank, 1])
            streams = {s.name: batch[s.name] for s in cfg.streams}
            drop_streams(streams, args.stream_dropout, grey, rng)
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = ddp(**batch).loss
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
        opt.step()
        opt.zero_grad(set_to_none=True)
        done = step + 1
        seconds = _clock() - t0
        # The budget ends the run after this step: evaluated and checkpointed like a last step.
        out_of_time = deadline is not None and t0 + seconds >= deadline
        if main_process:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
            record = {"step": done, "loss": loss.item(), "grad_norm": float(grad_norm)}
            record["seconds"] = seconds
            record["lr"] = lr
            if out_of_time:
                record["budget_end"] = True
                bar.write(f"time budget of {args.time_budget:g} s spent after {done} steps")
            if done % args.eval_every == 0 or done == args.steps or out_of_time:
                if eval_clips:
                    model.eval()
                    record["eval"] = evaluate_clips(
                        model, tokenizer, eval_clips, cache_root, by_question=args.eval_by_question
                    )
                    model.train()
                    bar.write(f"step {done}: {json.dumps(record['eval'])}")
            with open(metrics_file, "a") as f:
                f.write(json.dumps(record) + "\n")
            last = done in (args.steps, args.stop_at) or out_of_time
            if done % args.checkpoint_every == 0 or last:
                state = {"step": done, "seed": args.seed, "args": _jsonable(args)}
                save_training_checkpoint(args.out / "checkpoint", model, opt, state, tok_file)
        if out_of_time:
            break
    finished = args.stop_at is None or args.stop_at >= args.steps
    if main_process and finished:
        final = args.out / "model"
        save_training_checkpoint(final, model, opt, {"step": done}, tok_file)
        for extra in ("optimizer.safetensors", "rng.safetensors", "train_state.json"):
            (final / extra).unlink()
        _plot_learning_curve(metrics_file, args.out / "learning_curve.png")
        print(f"model: {final}")
    if world > 1:
        dist.destroy_process_group()
    return 0


def _check_answer_lengths(clips: list[ClipQuestions], tokenizer: Any, limit: int) -> None:
    """Exit with the longest target named when one does not fit ``limit`` tokens."""
    longest, text = 0, ""
    for c in clips:
        for answers in c.answers:
            target = training_answer(answers)
            n = len(tokenizer.encode(target).ids)  # the tokenizer appends [EOS]
            if n > longest:
                longest, text = n, target
    if longest > limit:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise SystemExit(
            f"training targets are up to {longest} tokens with [EOS] ({shown!r}), more than "
            f"the model's max_answer_tokens={limit}: pass --max-answer-tokens {longest}"
        )


def _eval_clips(args: argparse.Namespace, cfg: CoTokConfig) -> list[ClipQuestions]:
    if args.format == "captions":
        # A caption model has seen no question yet: QA accuracy would say nothing.
        print("caption pre-training: no validation (fine-tune on QA to evaluate)", file=sys.stderr)
        return []
    try:
        records = load_split(args.format, args.data, args.eval_split)
    except FileNotFoundError:
        print(f"no {args.eval_split} split in {args.data}: training without validation",
              file=sys.stderr)  # fmt: skip
        return []
    return group_by_clip(records)[: args.eval_clips]


def _jsonable(args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
    }
    out["question_weight"] = [f"{p.pattern}={w}" for p, w in args.question_weight]
    out["init_backbone"] = {k: str(v) for k, v in args.init_backbone.items()}
    return out


def _plot_learning_curve(metrics_file: Path, png: Path) -> None:
    """Loss and per-category validation accuracy against steps (skipped without matplotlib).

    With ``--eval-by-question`` a third panel follows the commonest questions.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line]
    evals = [r for r in rows if "eval" in r]
    asked: dict[str, int] = {}
    for r in evals:
        for q, v in r["eval"].get("per_question", {}).items():
            asked[q] = max(asked.get(q, 0), v["count"])
    questions = sorted(asked, key=lambda q: -asked[q])[:QUESTIONS_PLOTTED]
    fig, axes = plt.subplots(1, 3 if questions else 2, figsize=(16.5 if questions else 11, 4))
    ax_loss, ax_acc = axes[:2]
    ax_loss.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=0.8)
    ax_loss.set(xlabel="step", ylabel="training loss", yscale="log", title="loss")
    if evals:
        steps = [r["step"] for r in evals]
        ax_acc.plot(steps, [r["eval"]["accuracy"] for r in evals], "k-o", label="overall", ms=3)
        for cat in sorted({c for r in evals for c in r["eval"].get("per_category", {})}):
            acc = [r["eval"]["per_category"].get(cat, {}).get("accuracy") for r in evals]
            ax_acc.plot(steps, acc, "-o", ms=3, label=f"category {cat}")
        ax_acc.legend(fontsize=8)
    ax_acc.set(xlabel="step", ylabel="accuracy", ylim=(0, 1), title="validation accuracy")
    if questions:
        ax_q = axes[2]
        for q in questions:
            points = [(r["step"], r["eval"]["per_question"][q]["accuracy"])
                      for r in evals if q in r["eval"].get("per_question", {})]  # fmt: skip
            ax_q.plot(*zip(*points, strict=True), "-o", ms=3, label=q)
        ax_q.legend(fontsize=6)
        ax_q.set(xlabel="step", ylabel="accuracy", ylim=(0, 1), title="by question")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
