"""Why the small shapes are not learnt: the fine-space question taken apart, on single frames.

The question "what shape is the small {colour} object?" asks the 224 px stream
to do two things at once: *find* the 12-pixel object of the named colour among
~50,000 positions, and *name its shape*. The QA loss reaches the backbone only
through a TokenLearner map that, at initialisation, weighs the object's cell
1/196th. This probe trains small parts of the model on that one question, on
single decoded frames (the 224 px stream's frame, as training decodes it), with
the colour given as a class index instead of text, so each variant isolates one
part:

- ``crop``: a 32x32 crop centred on the object (an oracle locator) through the
  tiny preset's 224 px backbone and a mean pool: can the backbone name the shape
  when it is told where to look?
- ``cell``: the whole frame through the backbone; the feature of the grid cell
  that holds the object's centre (oracle location, the model's own grid): do
  the backbone's grid features keep the shape?
- ``attend``: the whole frame, the colour-conditioned TokenLearner map over the
  grid (as the model does: ``MLP(LN(x) + b(colour))``, softmax over the
  positions, one token): the real problem.
- ``attend-...``: the same with one change (see ``VARIANTS``).
- ``set-max``: no question; every (colour, shape) pair of the frame as yes/no
  targets, the way a caption lists the objects, through a max over the grid.
- ``attend-max``: the conditioned map as sigmoid gates, the token the max over
  the gated cells (``StreamConfig.token_pool = "max"``).

``--save-backbone DIR`` writes a variant's trained backbone (and projection) as a
tiny checkpoint for ``train --init-backbone s3=DIR``; ``--init-backbone DIR``
starts a variant from one, e.g. the question's read after ``set-max-pool8``.

    python -m benchmarks.small_shape_probe --data data/synth6k --variants crop cell attend \
        --steps 1500 --out benchmarks/small_shape_probe.json

Clips come from the training split (examples: every small object of every
clip, 3 a clip); the last ``--holdout`` clips are held out. Frames are decoded
once into ``--cache`` (a .npy of ``[clips, 224, 224, 3]`` uint8).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from cotok_edge.data.synthetic import COLORS, FPS, SHAPES, make_clip_spec
from cotok_edge.data.video import load_streams
from cotok_edge.model.config import PIXEL_SKIP_CHANNELS, CoTokConfig, StreamConfig
from cotok_edge.model.streams import StreamBackbone
from cotok_edge.model.tokenlearner import gated_max
from cotok_edge.model.vqa import CoTokVQA

COLOR_NAMES = list(COLORS)
CROP = 32


@dataclass
class Examples:
    """Decoded frames and one row per small object.

    frames: uint8 ``[clips, 224, 224, 3]``; clip, colour, shape: int64 ``[E]``;
    cx, cy: float32 ``[E]`` (object centre, px).
    """

    frames: np.ndarray
    clip: np.ndarray
    color: np.ndarray
    shape: np.ndarray
    cx: np.ndarray
    cy: np.ndarray


def _labels(seed: int, index: int) -> list[tuple[int, int, float, float]]:
    """Clip ``index``'s small objects as (colour, shape, cx, cy), redrawn from its seed."""
    spec = make_clip_spec(np.random.default_rng([seed, index]))
    return [(COLOR_NAMES.index(o.color), SHAPES.index(o.shape), o.cx, o.cy) for o in spec.small]


def _decode_one(job: tuple[str, int, int]) -> np.ndarray:
    """One clip's 224 px stream: its first frame showing every small object, ``[224, 224, 3]``."""
    path, seed, index = job
    spec = make_clip_spec(np.random.default_rng([seed, index]))
    streams = load_streams(path, streams=[("s3", 8, 224)])
    source = np.round(streams.frame_times["s3"] * FPS).astype(int)
    t = next((j for j, f in enumerate(source) if f not in spec.blink_frames), 0)
    return streams.arrays["s3"][:, t].transpose(1, 2, 0)


def load_examples(data: Path, seed: int, clips: int, cache: Path, workers: int) -> Examples:
    """Decode (or read from ``cache``) the first ``clips`` training clips of ``data``."""
    meta = json.loads((data / "meta.json").read_text())
    if meta.get("seed", seed) != seed:
        raise SystemExit(f"--seed {seed} does not match {data / 'meta.json'} (seed {meta['seed']})")
    jobs = [(str(data / "videos" / f"video{i}.mp4"), seed, i) for i in _train_indices(data, clips)]
    if len(jobs) < clips:
        raise SystemExit(f"--data {data}: {len(jobs)} training clips, --clips asks {clips}")
    frames = np.load(cache, mmap_mode="r") if cache.exists() else None
    if frames is None or frames.shape[0] != clips:
        frames = np.zeros((clips, 224, 224, 3), np.uint8)
        with ProcessPoolExecutor(workers) as pool:
            done = pool.map(_decode_one, jobs, chunksize=16)
            for i, frame in enumerate(tqdm(done, total=clips, desc="decode")):
                frames[i] = frame
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, frames)
        tmp.rename(cache)
    rows = [(i, *r) for i, (_, s, index) in enumerate(jobs) for r in _labels(s, index)]
    arr = np.array(rows, dtype=np.float64)
    return Examples(
        np.asarray(frames),
        arr[:, 0].astype(np.int64),
        arr[:, 1].astype(np.int64),
        arr[:, 2].astype(np.int64),
        arr[:, 3].astype(np.float32),
        arr[:, 4].astype(np.float32),
    )


def _train_indices(data: Path, clips: int) -> list[int]:
    """Video indices of the training split, in order (the extra clips come after the test ones)."""
    qa = json.loads((data / "train_qa.json").read_text())
    seen: dict[int, None] = {}
    for r in qa:
        seen.setdefault(int(str(r["video_id"]).removeprefix("video")), None)
    return sorted(seen)[:clips]


class PlainCNN(nn.Module):
    """A reference 2D CNN: ``[B, 3, 1, S, S]`` -> ``[B, 64, 1, S/8, S/8]``.

    What the benchmark's shape measurement used (see ``cotok_edge.data.synthetic``):
    no early striding, so a 12-pixel object keeps its full detail into the first layer.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for cout in widths:
            layers += [
                nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x[:, :, 0])[:, :, None]


class Probe(nn.Module):
    """Backbone + (oracle or learnt) pooling + linear head -> shape logits ``[B, 4]``."""

    def __init__(
        self,
        stream: StreamConfig,
        mode: str,
        dim: int,
        tokens: int,
        sharp: float,
        plain: tuple[int, ...] | None,
        zero_init: bool,
    ):
        super().__init__()
        self.mode, self.sharp = mode, sharp
        if plain:
            self.backbone: nn.Module = PlainCNN(plain)
            c = self.backbone.out_channels + PIXEL_SKIP_CHANNELS
        else:
            self.backbone = StreamBackbone(stream)
            if zero_init:
                self.backbone.zero_init_residual()
            c = stream.out_channels + PIXEL_SKIP_CHANNELS
        self.proj = nn.Linear(c, dim)
        self.color = nn.Embedding(len(COLOR_NAMES), dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 64)
        self.fc2 = nn.Linear(64, tokens)
        self.key = nn.Linear(dim, dim * tokens)
        self.head = nn.Sequential(nn.Linear(dim * tokens + dim, dim), nn.GELU(), nn.Linear(dim, 4))
        # "set" modes: which (colour, shape) pairs the frame holds, as a caption lists them.
        self.set_head = nn.Linear(dim, len(COLOR_NAMES) * 4)

    def forward(self, video: Tensor, color: Tensor, cell: Tensor) -> Tensor:
        """``video [B, 3, 1, S, S]`` normalised, ``color [B]``, ``cell [B]`` (flat grid index)."""
        f = self.backbone(video)  # [B, C, 1, h, w]
        pix = F.adaptive_avg_pool3d(video, f.shape[2:])  # pooled pixels, as pixel_skip
        x = self.proj(torch.cat([f, pix], 1).flatten(2).transpose(1, 2))  # [B, N, d]
        q = self.color(color)  # [B, d]
        if self.mode == "set":
            return self.set_head(x.mean(1))  # [B, 24]: (colour, shape) logits
        if self.mode == "set-max":
            return self.set_head(x.amax(1))
        if self.mode == "crop":
            z = x.mean(1, keepdim=True)
        elif self.mode == "max":
            # The question does not choose where to look: every channel's strongest cell.
            z = x.amax(1, keepdim=True)
        elif self.mode == "cell":
            z = x.gather(1, cell[:, None, None].expand(-1, 1, x.shape[2]))
        elif self.mode == "attend-max":
            # The map gates each cell (a sigmoid, as TokenLearner V1) and the token is the
            # max over the gated cells: at a uniform start it is the max read, and the map
            # gets its gradient at the cell the max picked, i.e. at an object.
            logits = self.fc2(F.gelu(self.fc1(self.norm(x) + q[:, None])))  # [B, N, S]
            z, _ = gated_max(logits.transpose(1, 2), x)  # [B, S, d]
        elif self.mode == "dot":
            # Query-key attention: the colour meets each cell in a product, not a sum.
            k = self.key(self.norm(x)).unflatten(2, (-1, x.shape[2]))  # [B, N, S, d]
            logits = torch.einsum("bnsd,bd->bsn", k, q) * x.shape[2] ** -0.5
            z = torch.softmax(logits * self.sharp, -1) @ x  # [B, S, d]
        else:
            logits = self.fc2(F.gelu(self.fc1(self.norm(x) + q[:, None]))).transpose(1, 2)
            z = torch.softmax(logits * self.sharp, -1) @ x  # [B, S, d]
        return self.head(torch.cat([z.flatten(1), q], 1))


# plain8's three 3x3 convolution + max-pool levels as the stem, then residual stages to
# tiny's s3 width (80) and grid (14x14), so its weights can go into a tiny model.
POOL8 = {
    "stem": "pool",
    "stem_stride": 8,
    "stem_channels": 32,
    "channels": (32, 48, 64, 80),
    "spatial_strides": (1, 1, 2, 1),
}

# name -> (mode, changes to the tiny preset's s3 stream, tokens, logit scale)
VARIANTS: dict[str, tuple[str, dict, int, float]] = {
    "crop": ("crop", {}, 1, 1.0),
    "cell": ("cell", {}, 1, 1.0),
    "attend": ("attend", {}, 1, 1.0),
    "attend-tokens8": ("attend", {}, 8, 1.0),
    "attend-grid28": ("attend", {"spatial_strides": (1, 2, 1, 1)}, 1, 1.0),
    "cell-grid28": ("cell", {"spatial_strides": (1, 2, 1, 1)}, 1, 1.0),
    "attend-wide": ("attend", {"stem_channels": 16, "channels": (16, 32, 64, 96)}, 1, 1.0),
    "cell-wide": ("cell", {"stem_channels": 16, "channels": (16, 32, 64, 96)}, 1, 1.0),
    "crop-stem2": ("crop", {"stem_stride": 2, "spatial_strides": (2, 2, 2, 1)}, 1, 1.0),
    "crop-wide": ("crop", {"stem_channels": 16, "channels": (16, 32, 64, 96)}, 1, 1.0),
    "crop-stem16": ("crop", {"stem_channels": 16}, 1, 1.0),
    "crop-stem24": ("crop", {"stem_channels": 24, "channels": (24, 24, 40, 80)}, 1, 1.0),
    "crop-wide-stem2": (
        "crop",
        {
            "stem_stride": 2,
            "stem_channels": 16,
            "channels": (16, 32, 64, 96),
            "spatial_strides": (2, 2, 2, 1),
        },
        1,
        1.0,
    ),
    "crop-plain": ("crop", {"plain": True}, 1, 1.0),
    "crop-poolstem": ("crop", {"stem": "pool", "stem_channels": 16}, 1, 1.0),
    "cell-poolstem": ("cell", {"stem": "pool", "stem_channels": 16}, 1, 1.0),
    "attend-poolstem": ("attend", {"stem": "pool", "stem_channels": 16}, 1, 1.0),
    "crop-nozero": ("crop", {"zero_init": False}, 1, 1.0),
    "cell-plain": ("cell", {"plain": True}, 1, 1.0),
    "attend-plain": ("attend", {"plain": True}, 1, 1.0),
    "cell-plain8": ("cell", {"plain": (8, 16, 32)}, 1, 1.0),
    "attend-plain8": ("attend", {"plain": (8, 16, 32)}, 1, 1.0),
    "dot-plain8": ("dot", {"plain": (8, 16, 32)}, 1, 1.0),
    "dot-plain8-tokens4": ("dot", {"plain": (8, 16, 32)}, 4, 1.0),
    "set-plain8": ("set", {"plain": (8, 16, 32)}, 1, 1.0),
    "max-plain8": ("max", {"plain": (8, 16, 32)}, 1, 1.0),
    "max-poolstem": ("max", {"stem": "pool", "stem_channels": 16}, 1, 1.0),
    "max": ("max", {}, 1, 1.0),
    "max-plain8-after-set-max": ("max", {"plain": (8, 16, 32), "after": "set-max-plain8"}, 1, 1.0),
    "set-max-plain8": ("set-max", {"plain": (8, 16, 32)}, 1, 1.0),
    "set-max-poolstem": ("set-max", {"stem": "pool", "stem_channels": 16}, 1, 1.0),
    # The pool stem down to stride 8 (plain8's three levels), then residual stages.
    "set-max-pool8": ("set-max", POOL8, 1, 1.0),
    "set-max-pool8-grid28": ("set-max", {**POOL8, "spatial_strides": (1, 1, 1, 1)}, 1, 1.0),
    "attend-plain8-after-set-max": (
        "attend",
        {"plain": (8, 16, 32), "after": "set-max-plain8"},
        1,
        1.0,
    ),
    # From `--init-backbone` (a set-max-pool8 checkpoint): the question's read of it.
    "max-pool8": ("max", POOL8, 1, 1.0),
    "attend-pool8": ("attend", POOL8, 1, 1.0),
    "attend-max-pool8": ("attend-max", POOL8, 1, 1.0),
    "attend-plain8-after-cell": ("attend", {"plain": (8, 16, 32), "after": "cell-plain8"}, 1, 1.0),
}


def _batch(
    ex: Examples,
    idx: np.ndarray,
    mode: str,
    grid: int,
    mean: Tensor,
    std: Tensor,
    rng: np.random.Generator | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    frames = torch.from_numpy(np.ascontiguousarray(ex.frames[ex.clip[idx]]))  # [B, S, S, 3]
    cx, cy = ex.cx[idx], ex.cy[idx]
    if mode == "crop":
        # Random shift of up to 4 px: the oracle centre need not be exact.
        jx = rng.integers(-4, 5, len(idx)) if rng is not None else np.zeros(len(idx), int)
        jy = rng.integers(-4, 5, len(idx)) if rng is not None else np.zeros(len(idx), int)
        x0 = np.clip(np.round(cx).astype(int) - CROP // 2 + jx, 0, 224 - CROP)
        y0 = np.clip(np.round(cy).astype(int) - CROP // 2 + jy, 0, 224 - CROP)
        frames = torch.stack(
            [f[y : y + CROP, x : x + CROP] for f, x, y in zip(frames, x0, y0, strict=True)]
        )
    video = frames.permute(0, 3, 1, 2)[:, :, None].float() / 255.0  # [B, 3, 1, S, S]
    video = (video - mean) / std
    cell = torch.from_numpy(
        np.clip(cy * grid / 224, 0, grid - 1).astype(int) * grid
        + np.clip(cx * grid / 224, 0, grid - 1).astype(int)
    )
    return video, torch.from_numpy(ex.color[idx]), torch.from_numpy(ex.shape[idx]), cell


def _set_targets(ex: Examples) -> Tensor:
    """``[clips, 24]``: 1 where the clip holds a small object of that (colour, shape)."""
    t = torch.zeros(int(ex.clip.max()) + 1, len(COLOR_NAMES) * 4)
    t[torch.from_numpy(ex.clip), torch.from_numpy(ex.color * 4 + ex.shape)] = 1.0
    return t


def _predict(out: Tensor, mode: str, color: Tensor) -> Tensor:
    """Shape answer ``[B]``: the model's logits, or in set modes its named colour's 4 logits."""
    if mode.startswith("set"):
        return out.unflatten(1, (-1, 4))[torch.arange(len(color)), color].argmax(1)
    return out.argmax(1)


def run_variant(
    name: str, ex: Examples, train: np.ndarray, held: np.ndarray, steps: int, batch: int,
    lr: float, seed: int, eval_every: int, keep: nn.Module | None = None,
    save: Path | None = None, init: Path | None = None,
) -> dict:  # fmt: skip
    """Train one variant from scratch; held-out accuracy every ``eval_every`` steps.

    ``keep``: a probe that receives this one's trained backbone and projection at the end
    (the first phase of an ``after`` variant). ``save``: write the trained backbone there
    as a checkpoint (:func:`save_backbone`). ``init``: start the backbone and projection
    from such a checkpoint.
    """
    mode, changes, tokens, sharp = VARIANTS[name]
    changes = dict(changes)
    plain = changes.pop("plain", None)
    plain = (16, 32, 64) if plain is True else plain
    zero_init = bool(changes.pop("zero_init", True))
    after = changes.pop("after", None)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = CoTokConfig.preset("tiny")
    s3 = next(s for s in cfg.streams if s.name == "s3")
    data = {**s3.__dict__, **changes, "frames": 1}
    if mode == "crop":
        data["size"] = CROP
    stream = StreamConfig(**data)
    grid = stream.size // 8 if plain else stream.feature_grid[1]
    model = Probe(stream, mode, cfg.dim, tokens, sharp, plain, zero_init)
    if init is not None:
        src = CoTokVQA.from_pretrained(init)
        model.backbone.load_state_dict(src.backbones["s3"].state_dict())
        model.proj.load_state_dict(src.cotokenizer.video_proj["s3"].state_dict())
    first = None
    if after is not None:
        # Phase 1 (another variant) trains the backbone and projection; this one goes on from them.
        first = run_variant(after, ex, train, held, steps, batch, lr, seed, eval_every, keep=model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)),
    )
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1, 1)
    targets = _set_targets(ex)
    curve, losses, t0 = [], [], time.perf_counter()
    for step in tqdm(range(1, steps + 1), desc=name, leave=False):
        model.train()
        idx = rng.choice(train, batch, replace=False)
        video, color, shape, cell = _batch(ex, idx, mode, grid, mean, std, rng)
        out = model(video, color, cell)
        if mode.startswith("set"):
            loss = F.binary_cross_entropy_with_logits(out, targets[torch.from_numpy(ex.clip[idx])])
        else:
            loss = F.cross_entropy(out, shape)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % eval_every == 0 or step == steps:
            model.eval()
            right = 0
            with torch.no_grad():
                for i in range(0, len(held), 128):
                    v, c, s, ce = _batch(ex, held[i : i + 128], mode, grid, mean, std, None)
                    right += int((_predict(model(v, c, ce), mode, c) == s).sum())
            curve.append(
                {"step": step, "examples": step * batch, "held_out": 100.0 * right / len(held),
                 "train_loss": float(np.mean(losses[-eval_every:]))}
            )  # fmt: skip
            tqdm.write(
                f"{name} step {step}: held out {curve[-1]['held_out']:.1f}% "
                f"loss {curve[-1]['train_loss']:.3f}"
            )
    if keep is not None:
        keep.backbone.load_state_dict(model.backbone.state_dict())
        keep.proj.load_state_dict(model.proj.state_dict())
    if save is not None:
        save_backbone(model, stream, save)
        tqdm.write(f"{name}: backbone written to {save}")
    return {
        "variant": name, "seed": seed, "steps": steps, "batch": batch, "lr": lr,
        "grid": grid, "s_per_step": (time.perf_counter() - t0) / steps, "curve": curve,
        "after": first,
    }  # fmt: skip


def save_backbone(probe: Probe, stream: StreamConfig, out: Path) -> Path:
    """Write a tiny checkpoint whose s3 backbone and projection are ``probe``'s.

    For ``train --init-backbone s3=DIR`` (with ``--init-backbone-projection``: the
    projection ``W_v`` is what turns the backbone's features into the directions a max
    over the grid reads, so it goes along). Only ``backbones.s3`` and
    ``cotokenizer.video_proj.s3`` are trained; the rest is a fresh tiny model (pooled
    pixels on, as in the probe) that ``transplant_backbone`` ignores. The probe saw single
    frames, so every temporal convolution saw only its padding beside the centre tap:
    the side taps are zeroed and the backbone starts, at the stream's 8 frames, as the
    same CNN on each frame.
    """
    if not isinstance(probe.backbone, StreamBackbone):
        raise SystemExit("--save-backbone: only a StreamBackbone variant can go into the model")
    cfg = CoTokConfig.preset("tiny")
    cfg.streams = [
        StreamConfig(**{**stream.__dict__, "frames": s.frames, "time_groups": s.time_groups})
        if s.name == "s3"
        else s
        for s in cfg.streams
    ]
    cfg.pixel_skip = True
    model = CoTokVQA(cfg)
    model.cotokenizer.video_proj["s3"].load_state_dict(probe.proj.state_dict())
    weights = probe.backbone.state_dict()
    for m_name, m in probe.backbone.named_modules():
        if isinstance(m, nn.Conv3d) and m.kernel_size[0] > 1:
            w = weights[f"{m_name}.weight"].clone()  # [C_out, C_in, k_t, 1, 1]
            centre = w.shape[2] // 2
            w[:, :, :centre] = 0
            w[:, :, centre + 1 :] = 0
            weights[f"{m_name}.weight"] = w
    model.backbones["s3"].load_state_dict(weights)
    return model.save_pretrained(out)


def plot(results: dict, png: Path) -> None:
    """Held-out accuracy against examples seen: the backbone told where to look (left), the
    object to be found (right); a second phase starts where its first phase ended."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    colors = iter(__import__("matplotlib").colormaps["tab20"].colors)
    for key, r in sorted(results.items()):
        located = VARIANTS[r["variant"]][0] in ("crop", "cell")
        ax = axes[0] if located else axes[1]
        color = next(colors)
        start = 0
        if r.get("after"):
            first = r["after"]
            xs = [0] + [c["examples"] for c in first["curve"]]
            ys = [25.0] + [c["held_out"] for c in first["curve"]]
            ax.plot(xs, ys, ":", marker="o", ms=2, color=color, label=f"{key}: its first phase")
            start = xs[-1]
        xs = [start] + [start + c["examples"] for c in r["curve"]]
        ys = [25.0] + [c["held_out"] for c in r["curve"]]  # a second phase starts a new head
        ax.plot(xs, ys, "-", marker="o", ms=3, color=color, label=key)
    for ax, title in zip(
        axes, ("the location given (crop, cell)", "the object to be found"), strict=True
    ):
        ax.axhline(25, color="grey", lw=0.8)
        ax.set_xlabel("training examples seen (one frame, one object each)")
        ax.set_ylim(0, 100)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=6)
    axes[0].set_ylabel("held-out shape accuracy (%)")
    fig.suptitle("Naming a small object's shape (chance 25%)")
    tmp = png.with_name(png.name + ".tmp.png")
    fig.savefig(tmp)
    tmp.replace(png)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.small_shape_probe", description=__doc__.split("\n")[0]
    )
    p.add_argument("--data", type=Path, required=True, help="synthetic benchmark folder")
    p.add_argument(
        "--seed", type=int, default=0, help="the benchmark's seed (labels are redrawn from it)"
    )
    p.add_argument("--clips", type=int, default=2300, help="training clips to use")
    p.add_argument("--holdout", type=int, default=300, help="last N of them held out")
    p.add_argument("--cache", type=Path, default=None, help="decoded frames (.npy)")
    p.add_argument(
        "--variants", nargs="+", default=["crop", "cell", "attend"], choices=list(VARIANTS)
    )
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, required=True, help="JSON results (appended by variant)")
    p.add_argument("--png", type=Path, help="plot every result in --out here")
    p.add_argument(
        "--init-backbone", type=Path, metavar="DIR",
        help="start every variant's backbone and projection from a --save-backbone folder "
        "(the variant must build the same backbone)",
    )  # fmt: skip
    p.add_argument(
        "--save-backbone", type=Path, metavar="DIR",
        help="with one variant: write its trained 224 px backbone as a tiny checkpoint "
        "for `train --init-backbone s3=DIR`",
    )  # fmt: skip
    p.add_argument("--plot-only", action="store_true", help="only draw --png from --out")
    args = p.parse_args(argv)
    if args.plot_only:
        if args.png is None or not args.out.is_file():
            raise SystemExit("--plot-only needs --png and an existing --out")
        plot(json.loads(args.out.read_text()), args.png)
        return
    if args.init_backbone is not None and not (args.init_backbone / "config.json").is_file():
        raise SystemExit(f"--init-backbone {args.init_backbone}: not a checkpoint folder")
    if args.save_backbone is not None and len(args.variants) != 1:
        raise SystemExit("--save-backbone needs exactly one --variants")
    if args.save_backbone is not None and args.save_backbone.exists():
        raise SystemExit(f"--save-backbone {args.save_backbone}: exists; choose a new folder")
    if args.holdout >= args.clips:
        raise SystemExit(f"--holdout {args.holdout} must be smaller than --clips {args.clips}")
    cache = args.cache or args.data / f"small_shape_frames_{args.clips}.npy"
    ex = load_examples(args.data, args.seed, args.clips, cache, args.workers)
    split = args.clips - args.holdout
    train = np.flatnonzero(ex.clip < split)
    held = np.flatnonzero(ex.clip >= split)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name in args.variants:
        r = run_variant(
            name, ex, train, held, args.steps, args.batch, args.lr, args.train_seed,
            args.eval_every, save=args.save_backbone, init=args.init_backbone,
        )  # fmt: skip
        results[f"{name}/seed{args.train_seed}"] = r
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.rename(args.out)
        print(
            f"{name}: held out {r['curve'][-1]['held_out']:.1f}% after {args.steps} steps "
            f"({r['s_per_step']:.3f} s a step)"
        )
    if args.png is not None:
        plot(results, args.png)


if __name__ == "__main__":
    main()
