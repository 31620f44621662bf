"""Explanations: where each stream's TokenLearners looked, and how much each stream gave.

Pure numpy except :func:`render`, which imports matplotlib (object API, Agg canvas: no
pyplot, no global backend switch) when it is called.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..model.config import StreamConfig

__all__ = ["Explanation", "contributions", "feature_grid", "fold_maps", "render"]

#: At most this many frames per stream in the picture (evenly spaced over the clip).
MAX_COLUMNS = 16


@dataclass
class Explanation:
    """What :meth:`VideoQA.explain` returns.

    answer: the answer (as :meth:`VideoQA.answer` gives it).
    contributions: ``{stream: share}``, shares summing to 1 (see :func:`contributions`).
    maps: ``{stream: float32 [T_s, H_s, W_s]}`` the TokenLearner maps averaged over steps
        and tokens (each sums to 1 over the grid).
    path: the PNG written.
    """

    answer: Any
    contributions: dict[str, float]
    maps: dict[str, np.ndarray] = field(repr=False)
    path: Path


def feature_grid(stream: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(T_s, H_s, W_s)`` of a stream's backbone output, from its config dict.

    The config's own :attr:`StreamConfig.feature_grid` (no torch is imported).
    """
    return StreamConfig(**stream).feature_grid


def fold_maps(maps: np.ndarray, grid: tuple[int, int, int], pool: str = "softmax") -> np.ndarray:
    """One question's maps ``[K, S, N_s]`` -> their mean over steps and tokens as
    ``[T_s, H_s, W_s]`` (positions are flattened in (T, H, W) order).

    A max-pooling stream's maps are sigmoid gates, not distributions: their mean is
    divided by its sum, so every stream's picture sums to 1 over its positions.
    """
    k, s, n = maps.shape
    if n != grid[0] * grid[1] * grid[2]:
        raise ValueError(f"maps have {n} positions, the feature grid {grid} has {np.prod(grid)}")
    folded = maps.reshape(k * s, n).mean(0)
    if pool == "max":
        folded = folded / max(float(folded.sum()), 1e-12)
    return folded.reshape(grid).astype(np.float32)


def contributions(
    maps: Mapping[str, np.ndarray],
    features: Mapping[str, np.ndarray],
    pools: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Share of each stream in the video tokens the co-tokenizer built, for one question.

    Measure: each step ``k`` and token ``j`` of stream ``s`` gives the transformer the
    token ``z = a_{k,j} @ V_s`` (the map times the stream's projected features, exactly
    what the TokenLearner computes). A stream's contribution is the summed L2 norm of
    its ``K * S`` tokens, divided by the total over streams. Every stream gets the same
    number of tokens and every map sums to 1, so attention mass alone cannot tell the
    streams apart; the token norms say how much signal each stream put into the joint
    tokens (a map spread over uninformative positions averages features out and gives
    a small norm, a map focused on salient positions a large one).

    Args:
        maps: ``{stream: [K, S, N_s]}`` for one question.
        features: ``{stream: [N_s, d]}`` the clip's projected features (``v_<stream>``).
        pools: ``{stream: "softmax" | "max"}`` (``StreamConfig.token_pool``; softmax if
            absent). A max-pooling stream's token is ``max_n a[n] V[n]`` over the
            positions of its time slice (where its map, zero elsewhere, is positive).
    """
    norms = {}
    for s, a in maps.items():
        a64, v = a.astype(np.float64), features[s].astype(np.float64)
        if (pools or {}).get(s, "softmax") == "max":
            # One step at a time: [S, N, d] per step instead of [K, S, N, d].
            z = np.stack([
                np.where(ak[:, :, None] > 0, ak[:, :, None] * v[None], -np.inf).max(1)
                for ak in a64
            ])  # fmt: skip
        else:
            z = np.einsum("ksn,nd->ksd", a64, v)
        norms[s] = float(np.linalg.norm(z, axis=-1).sum())
    total = sum(norms.values()) or 1.0
    return {s: v / total for s, v in norms.items()}


def _columns(frames: int, grid_t: int) -> list[tuple[int, int]]:
    """(stream frame, feature time step) pairs for the picture: at most MAX_COLUMNS,
    evenly spaced; each feature step shows the stream frame at the centre of its bin."""
    cols = np.unique(np.linspace(0, grid_t - 1, min(grid_t, MAX_COLUMNS)).round().astype(int))
    return [(min(frames - 1, int((t + 0.5) * frames / grid_t)), int(t)) for t in cols]


def render(
    out_png: str | Path,
    streams: Mapping[str, np.ndarray],
    maps: Mapping[str, np.ndarray],
    shares: Mapping[str, float],
    title: str,
    order: Sequence[str] | None = None,
) -> Path:
    """Write the explanation picture.

    One strip per stream: its sampled frames (``streams[s]`` uint8 ``[3, T, S, S]``) with
    the folded map (``maps[s]`` ``[T_s, H_s, W_s]``) overlaid, scaled from the stream's
    least- to its most-attended position, at most :data:`MAX_COLUMNS` frames; then a bar
    chart of ``shares``.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ValueError("explanations need matplotlib (pip install matplotlib)") from e
    names = list(order or maps)
    ncols = max(len(_columns(streams[s].shape[1], maps[s].shape[0])) for s in names)
    fig = Figure(figsize=(1.1 * ncols + 1.5, 1.25 * len(names) + 2.2), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(names) + 1, ncols, height_ratios=[1] * len(names) + [1.3])
    for r, s in enumerate(names):
        frames = streams[s]  # [3, T, S, S]
        m = maps[s]
        # Contrast within the stream: its least-attended position dark, its most bright.
        lo, hi = float(m.min()), float(m.max())
        shown = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
        size = frames.shape[-1]
        for c, (fi, ti) in enumerate(_columns(frames.shape[1], m.shape[0])):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(frames[:, fi].transpose(1, 2, 0), extent=(0, size, size, 0))
            ax.imshow(
                shown[ti], cmap="inferno", alpha=0.55, vmin=0.0, vmax=1.0,
                extent=(0, size, size, 0), interpolation="bilinear",
            )  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                t, h, w = m.shape
                ax.set_ylabel(f"{s}\n{frames.shape[1]}x{size}²\ngrid {t}x{h}x{w}", fontsize=7)
            ax.set_title(f"frame {fi}", fontsize=6, pad=2)
    bar = fig.add_subplot(grid[len(names), :])
    vals = [100.0 * shares[s] for s in names]
    bar.barh(names, vals, color="tab:orange")
    for i, v in enumerate(vals):
        bar.text(v, i, f" {v:.1f} %", va="center", fontsize=8)
    bar.set_xlim(0, 115.0)
    bar.invert_yaxis()
    bar.set_xlabel("stream contribution: share of the L2 norm of the tokens it gave (%)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out_png)
    if out.parent and not out.parent.exists():
        raise ValueError(f"explanation picture {out}: folder {out.parent} does not exist")
    fig.savefig(out, format="png")
    return out
