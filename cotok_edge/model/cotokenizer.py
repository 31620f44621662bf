"""Iterative video-text co-tokenization.

The two learnable linear layers bring each stream's features (``W_v``, one per
stream since every backbone has its own width) and the question tokens
(``W_t``) to one width d. Then for k = 1..K::

    z_s = TokenLearner_s(V_s | c_{k-1})          [B, G*S, d] per stream
    X_k = Layer_k([z_1; z_2; z_3; m; Q_{k-1}])    Q_k = question part of X_k
    c_k = mean(X_k)

with ``c_0`` the masked mean of the projected question and ``m`` the max tokens
(``CoTokConfig.max_tokens``; none by default): per stream and time slice, the
channel-wise max over its positions. A stream with ``token_condition="words"``
conditions its maps on ``W_w mean(E[question])``, the mean of the question's
word embeddings, instead of ``c_{k-1}``. Every step tokenizes
the full stream features again, so each step can look somewhere else given
what the previous layer made of video and question together. With
``time_groups`` G > 1 each stream's time axis is cut into G slices, and the
TokenLearner learns S tokens in each slice (one softmax per slice), so the
layers see *when* things happen as well as what: a count of blinks or the
order of two flashes is spread over tokens instead of averaged into one.

Training asks several questions about each clip: ``clip_index [B]`` names each
question's clip, and the clip-only part of the TokenLearner runs once per clip
for all questions and steps (:meth:`TokenLearner.pool_questions`).

Each stream's projected features get a learned, factorised space-time
position embedding ``pos_t[t] + pos_h[h] + pos_w[w]`` before any pooling:
a TokenLearner token is a softmax-weighted sum over the T*H*W positions, so
without it a token could not tell *when* or *where* what it pooled happened
(which lamp flashed first, how many blinks, which way the big object moved).

With ``video_tokenizer="all"`` (the baselines) there is no TokenLearner: every
video position is a token and the K layers run over ``[V; Q]`` directly. With
``"mean"`` (a control for experiments) each time slice is replaced by its plain
average: what the TokenLearner gives before its maps learn anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import PIXEL_SKIP_CHANNELS, CoTokConfig
from .text import EncoderLayer, RMSNorm, attention_mask
from .tokenlearner import TokenLearner


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x [B, L, D]`` over positions where ``mask [B, L]`` is True -> ``[B, D]``."""
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp(min=1.0)


@dataclass
class CoTokState:
    """What one co-tokenization step hands to the next.

    tokens: ``X_k [B, M, d]`` with M = video tokens + question tokens.
    mask: ``[B, M]``, True for real tokens (the question's padding is False).
    cond: ``c_k [B, d]``, the conditioning vector for the next step.
    words: ``[B, d]``, the projected mean word embedding of the question for the
        streams with ``token_condition="words"`` (None when no stream has it).
    """

    tokens: Tensor
    mask: Tensor
    cond: Tensor
    words: Tensor | None = None


class CoTokenizer(nn.Module):
    """Video features and question tokens in, the joint memory ``X_K`` out."""

    def __init__(self, cfg: CoTokConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.stream_names = [s.name for s in cfg.streams]
        skip = PIXEL_SKIP_CHANNELS if cfg.pixel_skip else 0
        self.video_proj = nn.ModuleDict(
            {s.name: nn.Linear(s.out_channels + skip, d) for s in cfg.streams}
        )
        # Factorised space-time position embedding per stream (see the module docstring).
        self.stream_pos = nn.ModuleDict(
            {s.name: SpaceTimePosition(s.feature_grid, d) for s in cfg.streams}
        )
        self.text_proj = nn.Linear(cfg.text.dim, d)
        # Only built when a stream uses it, so older checkpoints load unchanged.
        self.word_proj = nn.Linear(cfg.text.dim, d) if cfg.word_conditioned() else None
        self.tokenlearners = None
        if cfg.video_tokenizer == "tokenlearner":
            self.tokenlearners = nn.ModuleDict(
                {
                    s.name: TokenLearner(
                        d, cfg.tokens_per_stream, cfg.tokenlearner_hidden, d, s.token_pool
                    )
                    for s in cfg.streams
                }
            )
        if cfg.video_tokenizer == "all":
            num_video = sum(_positions(s.feature_grid) for s in cfg.streams)
        else:
            num_video = sum(cfg.video_tokens(s.name) for s in cfg.streams)
            num_video += cfg.max_video_tokens()
        # Tells the layers which stream and slot a token came from; attention alone cannot.
        self.video_pos = nn.Parameter(torch.randn(num_video, d) * 0.02)
        self.layers = nn.ModuleList(
            EncoderLayer(d, cfg.heads, cfg.ff_dim, cfg.text.dropout) for _ in range(cfg.steps)
        )
        self.norm = RMSNorm(d)

    def project_video(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """``{stream: [B, C_s, T_s, H_s, W_s]}`` -> ``{stream: [B, N_s, d]}``, N_s = T_s*H_s*W_s.

        C_s is the backbone's width, plus the pooled RGB with ``pixel_skip``
        (:meth:`CoTokVQA.stream_features`).
        """
        return {
            name: self.stream_pos[name](
                self.video_proj[name](features[name].flatten(2).transpose(1, 2))
            )
            for name in self.stream_names
        }

    def start(
        self, question: Tensor, question_mask: Tensor, words: Tensor | None = None
    ) -> CoTokState:
        """Project the encoded question ``[B, L, D_text]``: ``Q_0 [B, L, d]`` and ``c_0``.

        ``words [B, L, D_text]``: the question's word embeddings (before the text
        encoder), needed when a stream has ``token_condition="words"``.
        """
        q = self.text_proj(question)
        projected_words = None
        if self.word_proj is not None:
            if words is None:
                raise ValueError(
                    "CoTokenizer: a stream has token_condition='words'; pass the question's "
                    "word embeddings (words [B, L, D_text])"
                )
            projected_words = self.word_proj(masked_mean(words, question_mask))
        return CoTokState(q, question_mask, masked_mean(q, question_mask), projected_words)

    def clip_hidden(self, video: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per stream, the TokenLearner's clip-only part ``[C, G, N_s/G, hidden]``.

        ``video``: ``{stream: [C, N_s, d]}``, one row per clip; computed once and
        shared by every question and step (:meth:`step`'s ``hidden``).
        """
        assert self.tokenlearners is not None
        return {
            name: self.tokenlearners[name].clip_hidden(self.time_slices(name, video[name]))
            for name in self.stream_names
        }

    def time_slices(self, name: str, x: Tensor) -> Tensor:
        """Stream ``name``'s ``[C, N, d]``, N in (T, H, W) order -> ``[C, G, N/G, d]``: G slices."""
        g = self.cfg.time_groups_of(name)
        return x.reshape(x.shape[0], g, x.shape[1] // g, x.shape[2])

    def max_tokens(self, video: dict[str, Tensor], batch: int) -> Tensor:
        """``[B, sum of G_s, d]``: per stream and time slice, the max over its positions.

        ``video``: ``{stream: [C, N_s, d]}``; with C < B (one row per clip) each
        clip's tokens serve its B/C consecutive questions.
        """
        m = torch.cat([self.time_slices(n, video[n]).amax(2) for n in self.stream_names], 1)
        return m.repeat_interleave(batch // m.shape[0], dim=0) if m.shape[0] != batch else m

    def _stream_tokens(
        self, name: str, x: Tensor, cond: Tensor, hidden: Tensor | None, return_maps: bool
    ) -> tuple[Tensor, Tensor | None]:
        """One stream's tokens ``[B, G*S, d]`` and maps ``[B, G*S, N]`` (zero outside their slice).

        ``x [C, N, d]``: per question (C = B), or per clip with ``hidden`` from
        :meth:`clip_hidden`, the B questions then being B/C consecutive ones per clip.
        """
        assert self.tokenlearners is not None
        g, n, batch, dim = self.cfg.time_groups_of(name), x.shape[1], cond.shape[0], x.shape[2]
        xs = self.time_slices(name, x)  # [C, G, n, d]
        if hidden is None:
            cond_g = cond.repeat_interleave(g, dim=0) if g > 1 else cond  # row b*G+j: question b
            z, a = self.tokenlearners[name](xs.flatten(0, 1), cond_g, return_maps)
        else:
            cond_q = cond.reshape(x.shape[0], batch // x.shape[0], -1)  # [C, Q, d]
            z, a = self.tokenlearners[name].pool_questions(xs, hidden, cond_q, return_maps)
        z = z.reshape(batch, -1, dim)  # [B, G*S, d], slice-major
        if a is None:
            return z, None
        a = a.reshape(batch, g, -1, n // g)  # [B, G, S, N/G]
        eye = torch.eye(g, dtype=a.dtype, device=a.device)
        return z, torch.einsum("bgsn,gh->bgshn", a, eye).reshape(batch, -1, n)

    def step(
        self,
        k: int,
        video: dict[str, Tensor],
        state: CoTokState,
        question_len: int,
        return_maps: bool = False,
        hidden: dict[str, Tensor] | None = None,
    ) -> tuple[CoTokState, dict[str, Tensor] | None]:
        """Co-tokenization step ``k`` (0-based).

        ``video``: ``{stream: [B, N_s, d]}``, or ``[C, N_s, d]`` per clip with
        ``hidden`` (from :meth:`clip_hidden`), the B questions then being B/C
        consecutive ones per clip; ``state.tokens`` ends with the
        ``question_len`` question tokens. Returns the new state and, if asked,
        ``{stream: [B, G*S, N_s]}`` maps.
        """
        q_tokens = state.tokens[:, -question_len:]
        q_mask = state.mask[:, -question_len:]
        maps: dict[str, Tensor] | None = {} if return_maps else None
        if self.tokenlearners is not None:
            parts = []
            for stream in self.cfg.streams:
                name = stream.name
                h = None if hidden is None else hidden[name]
                cond = state.words if stream.token_condition == "words" else state.cond
                assert cond is not None
                z, a = self._stream_tokens(name, video[name], cond, h, return_maps)
                parts.append(z)
                if maps is not None:
                    maps[name] = a
            if self.cfg.max_tokens:
                parts.append(self.max_tokens(video, state.cond.shape[0]))
            v = torch.cat(parts, dim=1) + self.video_pos
        elif self.cfg.video_tokenizer == "mean":
            parts = [self.time_slices(n, video[n]).mean(2) for n in self.stream_names]
            if self.cfg.max_tokens:
                parts.append(self.max_tokens(video, state.cond.shape[0]))
            v = torch.cat(parts, dim=1) + self.video_pos  # [B, G * streams (+ max), d]
        elif k == 0:
            v = torch.cat([video[name] for name in self.stream_names], dim=1) + self.video_pos
        else:  # "all": the layers carry the video tokens from step to step
            v = state.tokens[:, :-question_len]
        x = torch.cat([v, q_tokens], dim=1)
        mask = torch.cat([torch.ones(v.shape[:2], dtype=torch.bool, device=v.device), q_mask], 1)
        x = self.layers[k](x, attention_mask(mask, x.dtype))
        if k == len(self.layers) - 1:
            x = self.norm(x)
        return CoTokState(x, mask, masked_mean(x, mask), state.words), maps

    def forward(
        self,
        video: dict[str, Tensor],
        question: Tensor,
        question_mask: Tensor,
        return_maps: bool = False,
        clip_index: Tensor | None = None,
        words: Tensor | None = None,
    ) -> tuple[CoTokState, list[dict[str, Tensor]] | None]:
        """All K steps: projected video ``{stream: [B, N_s, d]}``, question ``[B, L, D_text]``.

        With ``clip_index [B]`` the video is ``{stream: [C, N_s, d]}``, one row
        per clip, and question b asks about clip ``clip_index[b]``. ``words``:
        see :meth:`start`. Returns the final state (``tokens`` is the decoder's
        memory) and, if asked, one ``{stream: [B, G*S, N_s]}`` dict of maps per step.
        """
        state = self.start(question, question_mask, words)
        hidden = None
        if clip_index is not None:
            clips = next(iter(video.values())).shape[0]
            # Only TokenLearners can share a clip's work among its questions, and only
            # when they come Q at a time; otherwise each question gets its clip's copy.
            if self.tokenlearners is None or not _consecutive_per_clip(clip_index, clips):
                video = {n: v.index_select(0, clip_index.long()) for n, v in video.items()}
            if self.tokenlearners is not None:
                hidden = self.clip_hidden(video)
        all_maps: list[dict[str, Tensor]] | None = [] if return_maps else None
        for k in range(len(self.layers)):
            state, maps = self.step(k, video, state, question.shape[1], return_maps, hidden)
            if all_maps is not None and maps is not None:
                all_maps.append(maps)
        return state, all_maps


def _consecutive_per_clip(clip_index: Tensor, clips: int) -> bool:
    """Whether ``clip_index`` is ``[0]*Q + [1]*Q + ... + [clips-1]*Q``, as training batches are."""
    b = clip_index.shape[0]
    if b % clips:
        return False
    want = torch.arange(clips, device=clip_index.device).repeat_interleave(b // clips)
    return bool(torch.equal(clip_index.long(), want))


class SpaceTimePosition(nn.Module):
    """Learned factorised position embedding of one stream's ``(T, H, W)`` feature grid.

    ``x [B, N, d]`` with N = T*H*W flattened in (T, H, W) order (as
    ``[B, d, T, H, W].flatten(2)`` gives) -> ``x + pos``, where
    ``pos[t*H*W + h*W + w] = pos_t[t] + pos_h[h] + pos_w[w]``. The grid is fixed
    by the config, so the exported graph sees static shapes only.
    """

    def __init__(self, grid: tuple[int, int, int], dim: int, std: float = 0.02):
        super().__init__()
        t, h, w = grid
        self.grid = (t, h, w)
        self.pos_t = nn.Parameter(torch.randn(t, dim) * std)
        self.pos_h = nn.Parameter(torch.randn(h, dim) * std)
        self.pos_w = nn.Parameter(torch.randn(w, dim) * std)

    def table(self) -> Tensor:
        """``[N, d]``: the embedding of every position in (T, H, W) order."""
        t, h, w = self.grid
        pos = self.pos_t[:, None, None] + self.pos_h[None, :, None] + self.pos_w[None, None, :]
        return pos.reshape(t * h * w, -1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.table().to(x.dtype)


def _positions(grid: tuple[int, int, int]) -> int:
    t, h, w = grid
    return t * h * w
