"""Model configuration: one dataclass tree, JSON round trip, named presets.

Presets:
- ``paper``: paper-scale three-stream model, 55-67 GMACs per clip and question.
- ``edge``: the same structure, narrower, at most 20 GMACs (Jetson Orin Nano).
- ``tiny``: trains on a 2-core CPU; the shipped demonstration model.
- ``baseline-3dresnet``: one 32x224x224 stream through a 3D-ResNet-50, every
  video position a token in the transformer, no TokenLearner (the paper's
  360-GFLOP comparison).
- ``baseline-x3d``: one X3D stream at 32x224x224, same text side and token
  handling as the 3D-ResNet baseline (the paper's "more than twice X3D").
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BACKBONES = ("r2plus1d", "resnet3d", "x3d")
STEMS = ("conv", "pool")
TOKEN_POOLS = ("softmax", "max")
TOKEN_CONDITIONS = ("state", "words")
VIDEO_TOKENIZERS = ("tokenlearner", "mean", "all")
# Channels ``pixel_skip`` adds to each stream's features: the pooled RGB.
PIXEL_SKIP_CHANNELS = 3


@dataclass
class StreamConfig:
    """One video stream and its backbone.

    The stream is ``[B, 3, frames, size, size]``. The backbone is a stem
    (spatial stride ``stem_stride``) followed by stages; stage ``i`` has
    ``blocks[i]`` residual blocks of width ``channels[i]``, the first of which
    strides by ``spatial_strides[i]`` in H and W and ``temporal_strides[i]``
    in T.

    backbone:
        ``r2plus1d``: basic residual blocks of dense (2+1)D convolutions
        (1x3x3 then 3x1x1), the default; ``resnet3d``: bottleneck blocks with
        a 3x3x3 middle convolution (3D-ResNet-50); ``x3d``: X3D bottlenecks
        (1x1x1, depthwise 3x3x3, squeeze-excite, 1x1x1) with ``expansion``.

    time_groups:
        this stream's G (see :class:`CoTokConfig`); ``None`` takes the model's.
        E.g. 32 slices (one per frame) for the 32-frame stream while the
        others keep the model's G.

    stem:
        ``conv``: the backbone's own stem (for ``r2plus1d`` one 7x7 convolution
        strided by ``stem_stride``); ``pool``: 3x3 convolutions at full
        resolution, each followed by a 2x2 max-pool, until ``stem_stride``
        (a power of two), widths doubling up to ``stem_channels``. A one-step
        7x7 stride-4 stem of 8 channels leaves a 12-pixel object 3x3 positions
        of 8 numbers: the tiny 224 px backbone, trained to name such an
        object's shape from the feature of the grid cell that holds it, stays
        at chance with that stem and reaches 69% with this one
        (``benchmarks/small_shape_probe.py``, RESULTS.md stop 13).

    token_pool:
        how this stream's TokenLearner pools (see ``model.tokenlearner``):
        ``softmax`` (TokenLearner V1.1: a softmax map over the slice's positions,
        the token its weighted average; the fused kernels and the TensorRT
        plugin) or ``max`` (a sigmoid gate per position, the token the max over
        the gated positions: a 12-pixel object counts at full strength before
        the map has found it, and the map learns at the cell the max picked;
        stop 14's probe: 70.6% after 250 steps where the softmax map stays at
        chance). Reference implementation only.

    token_condition:
        what conditions this stream's TokenLearner maps: ``state`` (the paper's
        ``c_{k-1}``, the mean of the previous step's tokens; ``c_0`` the mean of
        the encoded question) or ``words`` (a learned projection of the mean of
        the question's word embeddings, the same at every step). A trained text
        encoder can drown a word that no question has needed yet: in tiny-v6 the
        six colour words' embeddings differ by 11.1 (their norm), their encoded
        tokens by 0.33 of 11.7, and a map conditioned on ``c_0`` cannot find the
        named colour's object (``benchmarks/condition_probe.py``, stop 15: chance
        from ``c_0``, 79.7% after 300 steps from the word embeddings).
    """

    name: str
    frames: int
    size: int
    backbone: str = "r2plus1d"
    stem_channels: int = 32
    stem_stride: int = 2
    channels: tuple[int, ...] = (32, 64, 128, 256)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    spatial_strides: tuple[int, ...] = (1, 2, 2, 2)
    temporal_strides: tuple[int, ...] = (1, 1, 1, 1)
    expansion: float = 4.0
    time_groups: int | None = None
    stem: str = "conv"
    token_pool: str = "softmax"
    token_condition: str = "state"

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        self.blocks = tuple(self.blocks)
        self.spatial_strides = tuple(self.spatial_strides)
        self.temporal_strides = tuple(self.temporal_strides)
        n = len(self.channels)
        if not (len(self.blocks) == len(self.spatial_strides) == len(self.temporal_strides) == n):
            raise ValueError(
                f"stream {self.name!r}: channels, blocks, spatial_strides and temporal_strides "
                f"need one entry per stage; got lengths {len(self.channels)}, "
                f"{len(self.blocks)}, {len(self.spatial_strides)}, {len(self.temporal_strides)}"
            )
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"stream {self.name!r}: backbone {self.backbone!r} is not one of {BACKBONES}"
            )
        if self.stem not in STEMS:
            raise ValueError(f"stream {self.name!r}: stem {self.stem!r} is not one of {STEMS}")
        if self.token_pool not in TOKEN_POOLS:
            raise ValueError(
                f"stream {self.name!r}: token_pool {self.token_pool!r} is not one of {TOKEN_POOLS}"
            )
        if self.token_condition not in TOKEN_CONDITIONS:
            raise ValueError(
                f"stream {self.name!r}: token_condition {self.token_condition!r} is not one of "
                f"{TOKEN_CONDITIONS}"
            )
        s = self.stem_stride
        if self.stem == "pool" and (s < 2 or s & (s - 1)):
            raise ValueError(
                f"stream {self.name!r}: the pool stem needs a stem_stride that is a power of "
                f"two (2, 4, 8, ...), got {s}"
            )

    @property
    def out_channels(self) -> int:
        return self.channels[-1]

    @property
    def feature_grid(self) -> tuple[int, int, int]:
        """(T, H, W) of the backbone's output feature map."""
        t, s = self.frames, -(-self.size // self.stem_stride)
        for ts, ss in zip(self.temporal_strides, self.spatial_strides, strict=True):
            t, s = -(-t // ts), -(-s // ss)
        return t, s, s


@dataclass
class TextConfig:
    """T5-style text encoder and answer decoder (pre-norm, RMSNorm, relative position bias).

    ``vocab_size`` is shared by the question and answer side (tied embedding).
    """

    vocab_size: int = 4096
    dim: int = 256
    heads: int = 4
    ff_dim: int = 1024
    encoder_layers: int = 2
    decoder_layers: int = 2
    max_question_tokens: int = 32
    max_answer_tokens: int = 8
    relative_buckets: int = 32
    relative_max_distance: int = 128
    dropout: float = 0.0
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2


@dataclass
class CoTokConfig:
    """The whole co-tokenization VideoQA model.

    Attributes:
        streams: the video streams, each with its own backbone.
        text: text encoder / decoder settings.
        dim: d, the unified width of video tokens, question tokens and the
            co-tokenization transformer.
        heads, ff_dim: co-tokenization transformer layer sizes.
        steps: K, iterative co-tokenization steps (one transformer layer each).
        tokens_per_stream: S, tokens a TokenLearner learns per time group of a
            stream per step.
        time_groups: G, how many consecutive slices the time axis of every
            stream's feature grid is cut into before tokenizing (1: one
            softmax over all T*H*W positions). Each slice gets its own S
            tokens, so a stream gives ``S * G`` tokens per step and time stays
            in the token set (as scenic's TokenLearner video models learn S
            tokens per time step); a token pooled over a whole clip could not
            say how often or in which order something happened. The feature
            grid's T must be divisible by G. A stream's own ``time_groups``
            overrides it for that stream.
        tokenlearner_hidden: hidden width of the TokenLearner MLP (64 in V1.1).
        video_tokenizer: ``tokenlearner`` (the method); ``mean`` (the
            mean-pooling control: each time slice of a stream becomes one
            token, its plain average, the same at every step and blind to the
            question, i.e. a TokenLearner whose maps stay uniform); or ``all``
            (baselines: every video position is a token, the K layers run
            over them).
        pixel_skip: each stream's features also carry its normalised frames
            average-pooled to the feature grid (3 more channels into ``W_v``):
            the colour and brightness of every cell in every frame, which a
            narrow backbone need not keep (the trained ``tiny`` 64 px stream,
            8 stem channels, keeps little of the colour of a one-frame flash:
            benchmarks/RESULTS.md, stop 11).
        max_tokens: each time slice of each stream also gives one token, the
            channel-wise max of its projected features over the slice's
            positions: blind to the question and the same at every step,
            appended after the TokenLearner tokens (``G`` more per stream). A
            softmax-weighted average sees a 12-pixel object at its share of
            the ~200 positions of a slice until its map has found it; a max
            sees it at full strength wherever it is (stop 13's probe: a
            caption-like objective learnt colour-shape pairs through a max
            over the grid and not through a mean).
        mean, std: per-channel RGB normalisation applied inside the model.
    """

    streams: list[StreamConfig]
    text: TextConfig = field(default_factory=TextConfig)
    dim: int = 256
    heads: int = 4
    ff_dim: int = 1024
    steps: int = 4
    tokens_per_stream: int = 8
    time_groups: int = 1
    tokenlearner_hidden: int = 64
    video_tokenizer: str = "tokenlearner"
    pixel_skip: bool = False
    max_tokens: bool = False
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    name: str = "custom"

    def __post_init__(self) -> None:
        self.streams = [
            s if isinstance(s, StreamConfig) else StreamConfig(**s) for s in self.streams
        ]
        if isinstance(self.text, dict):
            self.text = TextConfig(**self.text)
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        if not self.streams:
            raise ValueError("CoTokConfig.streams: at least one video stream is needed")
        names = [s.name for s in self.streams]
        if len(set(names)) != len(names):
            raise ValueError(f"CoTokConfig.streams: stream names must be unique, got {names}")
        if self.video_tokenizer not in VIDEO_TOKENIZERS:
            raise ValueError(
                f"CoTokConfig.video_tokenizer: {self.video_tokenizer!r} is not one of "
                f"{VIDEO_TOKENIZERS}"
            )
        if self.max_tokens and self.video_tokenizer == "all":
            raise ValueError(
                "CoTokConfig.max_tokens: needs time slices; video_tokenizer='all' has none"
            )
        if self.word_conditioned() and self.video_tokenizer != "tokenlearner":
            raise ValueError(
                "StreamConfig.token_condition 'words' conditions a TokenLearner; "
                f"video_tokenizer {self.video_tokenizer!r} has none"
            )
        if self.dim % self.heads or self.text.dim % self.text.heads:
            raise ValueError("CoTokConfig: dim and text.dim must be divisible by their heads")
        if self.steps < 1:
            raise ValueError(f"CoTokConfig.steps: need at least 1, got {self.steps}")
        if self.tokens_per_stream < 1 or min(self.time_groups_of(n) for n in names) < 1:
            raise ValueError(
                "CoTokConfig: tokens_per_stream and time_groups need at least 1, got "
                f"{self.tokens_per_stream} and {[self.time_groups_of(n) for n in names]}"
            )
        if self.video_tokenizer in ("tokenlearner", "mean"):
            for s in self.streams:
                t, g = s.feature_grid[0], self.time_groups_of(s.name)
                if t % g:
                    raise ValueError(
                        f"CoTokConfig.time_groups: {g} does not divide the "
                        f"{t} time steps of stream {s.name!r}'s feature grid"
                    )

    def time_groups_of(self, stream: str) -> int:
        """G of one stream: its own ``time_groups`` if set, else the model's."""
        for s in self.streams:
            if s.name == stream:
                return self.time_groups if s.time_groups is None else s.time_groups
        raise KeyError(f"no stream named {stream!r}; streams: {[s.name for s in self.streams]}")

    def video_tokens(self, stream: str) -> int:
        """Tokens one stream gives per co-tokenization step: S * G (``mean``: G)."""
        g = self.time_groups_of(stream)
        return g if self.video_tokenizer == "mean" else self.tokens_per_stream * g

    def word_conditioned(self) -> bool:
        """Whether a stream's TokenLearner is conditioned on the question's words."""
        return any(s.token_condition == "words" for s in self.streams)

    def max_video_tokens(self) -> int:
        """Max tokens per co-tokenization step, all streams: one per time slice (0 if off)."""
        return sum(self.time_groups_of(s.name) for s in self.streams) if self.max_tokens else 0

    # JSON round trip -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CoTokConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"CoTokConfig: unknown fields {sorted(unknown)}")
        if "streams" not in data:
            raise ValueError("CoTokConfig: no 'streams' (a config needs at least one stream)")
        try:
            return cls(**data)
        except TypeError as e:  # a stream or text entry with a missing or unknown field
            raise ValueError(f"CoTokConfig: {e}") from None

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> CoTokConfig:
        p = Path(text_or_path)
        text = (
            p.read_text() if not str(text_or_path).lstrip().startswith("{") else str(text_or_path)
        )
        return cls.from_dict(json.loads(text))

    # Presets -------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> CoTokConfig:
        """A named preset: one of :data:`PRESETS`."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        cfg = PRESETS[name]()
        cfg.name = name
        return cfg

    def with_streams(self, names: list[str]) -> CoTokConfig:
        """A copy keeping only the named streams (single-stream ablations)."""
        keep = [s for s in self.streams if s.name in names]
        if len(keep) != len(names):
            have = [s.name for s in self.streams]
            raise ValueError(f"with_streams: {names} not all in the config's streams {have}")
        data = self.to_dict()
        data["streams"] = [dataclasses.asdict(s) for s in keep]
        data["name"] = f"{self.name}[{'+'.join(names)}]"
        return CoTokConfig.from_dict(data)


def stage_strides(total: int, stem_stride: int, stages: int = 4) -> tuple[int, ...]:
    """Spatial strides of the stages that make up what the stem does not (``total`` in all).

    The first stage keeps the stem's resolution; each later one halves it while any
    stride is left, e.g. ``stage_strides(16, 4) == (1, 2, 2, 1)``.

    Raises:
        ValueError: ``stem_stride`` does not divide ``total``, or the stages cannot make
            up the rest by halving.
    """
    if stem_stride < 1 or total % stem_stride:
        raise ValueError(f"stem stride {stem_stride} does not divide the total stride {total}")
    left, out = total // stem_stride, []
    for _ in range(stages):
        out.append(2 if left > 1 and len(out) > 0 else 1)
        left //= out[-1]
    if left != 1:
        raise ValueError(
            f"stem stride {stem_stride}: {stages} stages cannot halve the rest of the total "
            f"stride {total}"
        )
    return tuple(out)


def _three_streams(
    width: float, blocks: tuple[int, ...], stem_stride: int = 2
) -> list[StreamConfig]:
    """The method's three streams with widths scaled by ``width``.

    No temporal striding anywhere (the 32-frame stream exists to see events a
    frame or two long). Whatever the stem's stride (2, or 4 where training
    cost matters: it quarters the work of the widest, first stage), every
    stream ends at the same grid: stride 16 on H and W, except the 64x64 one,
    which stops at stride 8 so its tokens keep an 8x8 grid; a 12-pixel object
    of the 224 stream still spans 3 stem positions at stride 4.
    """

    def ch(*cs: int) -> tuple[int, ...]:
        return tuple(max(8, int(round(c * width / 8)) * 8) for c in cs)

    def strides(total: int) -> tuple[int, ...]:
        return stage_strides(total, stem_stride)

    return [
        StreamConfig("s1", 32, 64, stem_channels=ch(32)[0], stem_stride=stem_stride,
                     channels=ch(32, 64, 128, 192), blocks=blocks, spatial_strides=strides(8)),
        StreamConfig("s2", 16, 112, stem_channels=ch(32)[0], stem_stride=stem_stride,
                     channels=ch(48, 96, 192, 256), blocks=blocks, spatial_strides=strides(16)),
        StreamConfig("s3", 8, 224, stem_channels=ch(32)[0], stem_stride=stem_stride,
                     channels=ch(40, 80, 160, 320), blocks=blocks, spatial_strides=strides(16)),
    ]  # fmt: skip


def _paper() -> CoTokConfig:
    return CoTokConfig(
        streams=_three_streams(1.0, (2, 2, 2, 2)),
        text=TextConfig(vocab_size=32128, dim=512, heads=8, ff_dim=2048, encoder_layers=6,
                        decoder_layers=6),
        dim=512, heads=8, ff_dim=2048, steps=4, tokens_per_stream=8,
    )  # fmt: skip


def _edge() -> CoTokConfig:
    return CoTokConfig(
        streams=_three_streams(0.5, (2, 2, 2, 2)),
        text=TextConfig(vocab_size=8192, dim=256, heads=4, ff_dim=1024, encoder_layers=4,
                        decoder_layers=4),
        dim=256, heads=4, ff_dim=1024, steps=4, tokens_per_stream=8,
    )  # fmt: skip


def _tiny() -> CoTokConfig:
    return CoTokConfig(
        streams=_three_streams(0.25, (1, 1, 1, 1), stem_stride=4),
        text=TextConfig(vocab_size=1024, dim=128, heads=4, ff_dim=512, encoder_layers=2,
                        decoder_layers=2),
        dim=128, heads=4, ff_dim=512, steps=4, tokens_per_stream=2, time_groups=8,
    )  # fmt: skip


def _baseline_3dresnet() -> CoTokConfig:
    cfg = _paper()
    cfg.streams = [
        StreamConfig("s3d", 32, 224, backbone="resnet3d", stem_channels=64, stem_stride=4,
                     channels=(256, 512, 1024, 2048), blocks=(3, 4, 6, 3),
                     spatial_strides=(1, 2, 2, 2), temporal_strides=(1, 1, 1, 1)),
    ]  # fmt: skip
    cfg.video_tokenizer = "all"
    return cfg


def _baseline_x3d() -> CoTokConfig:
    cfg = _paper()
    # X3D-L's stage widths and depths (Feichtenhofer 2020), at 32x224x224.
    cfg.streams = [
        StreamConfig("x3d", 32, 224, backbone="x3d", stem_channels=24, stem_stride=2,
                     channels=(24, 48, 96, 192), blocks=(5, 10, 25, 15),
                     spatial_strides=(2, 2, 2, 2), temporal_strides=(1, 1, 1, 1),
                     expansion=2.25),
    ]  # fmt: skip
    cfg.video_tokenizer = "all"
    return cfg


PRESETS = {
    "paper": _paper,
    "edge": _edge,
    "tiny": _tiny,
    "baseline-3dresnet": _baseline_3dresnet,
    "baseline-x3d": _baseline_x3d,
}
