"""``CoTokVQA``: the reference PyTorch model, end to end.

Inputs (names are the contract the exporters and runtime rely on):
- one tensor per stream, named by its config (``s1``, ``s2``, ``s3`` for the
  method): ``[B, 3, T, H, W]``, uint8 in [0, 255] or floating in [0, 1];
  normalisation happens inside the model so a device can feed raw frames;
- ``question_ids [B, L]`` integer token ids, ``question_mask [B, L]`` bool
  (True = token), L at most ``config.text.max_question_tokens``;
- ``answer_ids [B, A]`` (training): answer tokens then EOS, padded with
  ``pad_id``, A at most ``config.text.max_answer_tokens``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .config import CoTokConfig
from .cotokenizer import CoTokenizer, CoTokState
from .streams import StreamBackbone
from .text import AnswerDecoder, TextEncoder

CONFIG_FILE = "config.json"
# The shipped demonstration model (see cotok_edge/assets/README.md).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "default"
WEIGHTS_FILE = "model.safetensors"
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
INT_DTYPES = (torch.int64, torch.int32)


@dataclass
class CoTokOutput:
    """What ``forward`` returns.

    loss: mean token cross-entropy of the answer (None without ``answer_ids``).
    logits: ``[B, A, V]`` teacher-forced answer logits (``A = 1``, the first
        answer token, without ``answer_ids``).
    maps: with ``return_maps``, one ``{stream: [B, S, N_s]}`` per step.
    """

    loss: Tensor | None
    logits: Tensor
    maps: list[dict[str, Tensor]] | None = None


class CoTokVQA(nn.Module):
    """Three video streams + question -> answer tokens. See the module docstring for inputs."""

    def __init__(self, config: CoTokConfig):
        super().__init__()
        self.config = config
        t = config.text
        self.backbones = nn.ModuleDict({s.name: StreamBackbone(s) for s in config.streams})
        self.text_embed = nn.Embedding(t.vocab_size, t.dim)
        self.text_encoder = TextEncoder(t)
        self.cotokenizer = CoTokenizer(config)
        self.answer_embed = nn.Embedding(t.vocab_size, config.dim)
        self.decoder = AnswerDecoder(t, config.dim)
        mean = torch.tensor(config.mean).view(1, 3, 1, 1, 1)
        std = torch.tensor(config.std).view(1, 3, 1, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        nn.init.normal_(self.text_embed.weight, std=1.0)
        nn.init.normal_(self.answer_embed.weight, std=1.0)
        self.frozen_backbones: set[str] = set()

    def freeze_backbones(self, names: Iterable[str]) -> None:
        """Fix these streams' backbones for training the rest of the model.

        Their parameters stop taking gradients, so autograd records nothing
        through them (no backward: most of a ``tiny`` step), and their
        BatchNorms stay on the running statistics in :meth:`train` mode, as the
        model will meet them at inference. Raises ``ValueError`` on an unknown stream.
        """
        names = list(names)
        unknown = [n for n in names if n not in self.backbones]
        if unknown:
            raise ValueError(f"no stream {unknown} in this model (streams: {self.stream_names})")
        for name in names:
            self.backbones[name].requires_grad_(False)
            self.frozen_backbones.add(name)
        self.train(self.training)

    def train(self, mode: bool = True) -> CoTokVQA:
        super().train(mode)
        for name in self.frozen_backbones:
            self.backbones[name].eval()
        return self

    # Shapes ---------------------------------------------------------------------
    @property
    def stream_names(self) -> list[str]:
        return [s.name for s in self.config.streams]

    def stream_shape(self, name: str) -> tuple[int, int, int, int]:
        """Expected ``(3, T, H, W)`` of one stream input."""
        s = next(s for s in self.config.streams if s.name == name)
        return (3, s.frames, s.size, s.size)

    @property
    def feature_grids(self) -> dict[str, tuple[int, int, int]]:
        """``{stream: (T_s, H_s, W_s)}``: how a map's N positions fold back to space-time."""
        return {s.name: s.feature_grid for s in self.config.streams}

    def example_inputs(
        self, batch_size: int = 1, question_len: int = 16, seed: int = 0
    ) -> dict[str, Tensor]:
        """Random uint8 streams and a full-length question: kwargs for ``forward``/``generate``."""
        g = torch.Generator().manual_seed(seed)
        inputs = {
            name: torch.randint(0, 256, (batch_size, *self.stream_shape(name)), generator=g).to(
                torch.uint8
            )
            for name in self.stream_names
        }
        t = self.config.text
        inputs["question_ids"] = torch.randint(
            3, t.vocab_size, (batch_size, question_len), generator=g
        )
        inputs["question_mask"] = torch.ones(batch_size, question_len, dtype=torch.bool)
        return inputs

    # Validation -----------------------------------------------------------------
    def validate_inputs(
        self,
        streams: dict[str, Tensor],
        question_ids: Tensor,
        question_mask: Tensor,
        answer_ids: Tensor | None = None,
        clip_index: Tensor | None = None,
    ) -> int:
        """Check names, shapes and dtypes; return the number of questions. Raises ``ValueError``.

        Without ``clip_index`` the streams hold one clip per question. With it,
        the streams hold C clips and ``clip_index [B]`` names each question's clip.
        """
        names = set(self.stream_names)
        if set(streams) != names:
            raise ValueError(
                f"video streams: expected exactly {sorted(names)}, got {sorted(streams)}"
            )
        batch = _check_tensor("question_ids", question_ids, 2, INT_DTYPES, "[B, L] integer ids")
        if batch == 0:
            raise ValueError("question_ids: empty batch (shape [0, L]); need at least one question")
        max_len = self.config.text.max_question_tokens
        length = question_ids.shape[1]
        if not 1 <= length <= max_len:
            raise ValueError(
                f"question_ids: got shape {list(question_ids.shape)}, expected [B, L] with "
                f"1 <= L <= {max_len} (the question length limit)"
            )
        if not isinstance(question_mask, Tensor) or question_mask.shape != question_ids.shape:
            got = list(question_mask.shape) if isinstance(question_mask, Tensor) else question_mask
            raise ValueError(
                f"question_mask: got shape {got}, expected {list(question_ids.shape)} "
                "(the shape of question_ids)"
            )
        clips = batch
        if clip_index is not None:
            _check_tensor("clip_index", clip_index, 1, INT_DTYPES, "[B] integer clip indices")
            first = streams[self.stream_names[0]]
            clips = first.shape[0] if isinstance(first, Tensor) and first.dim() == 5 else 0
            if clip_index.shape[0] != batch:
                raise ValueError(
                    f"clip_index: got shape {list(clip_index.shape)}, expected [{batch}] "
                    "(one clip per question)"
                )
            if clips == 0 or clip_index.min() < 0 or clip_index.max() >= clips:
                raise ValueError(
                    f"clip_index: values must lie in [0, {clips}) (the streams hold {clips} clips)"
                )
        for name in self.stream_names:
            x = streams[name]
            want = (clips, *self.stream_shape(name))
            if not isinstance(x, Tensor):
                raise ValueError(
                    f"video stream {name!r}: expected a torch.Tensor of shape {list(want)}, "
                    f"got {type(x).__name__}"
                )
            if x.dtype not in (torch.uint8, *FLOAT_DTYPES):
                raise ValueError(
                    f"video stream {name!r}: got dtype {x.dtype} (shape {list(x.shape)}), "
                    "expected uint8 in [0, 255] or floating in [0, 1]"
                )
            if tuple(x.shape) != want:
                raise ValueError(
                    f"video stream {name!r}: got shape {list(x.shape)}, expected {list(want)} "
                    "([B, 3, T, H, W])"
                )
        if answer_ids is not None:
            _check_tensor("answer_ids", answer_ids, 2, INT_DTYPES, "[B, A] integer ids")
            max_a = self.config.text.max_answer_tokens
            if answer_ids.shape[0] != batch or not 1 <= answer_ids.shape[1] <= max_a:
                raise ValueError(
                    f"answer_ids: got shape {list(answer_ids.shape)}, expected [{batch}, A] "
                    f"with 1 <= A <= {max_a}"
                )
        return batch

    # Pieces (each exported or counted on its own) --------------------------------
    def normalize(self, x: Tensor) -> Tensor:
        """``[B, 3, T, H, W]`` uint8 [0, 255] or float [0, 1] -> normalised float."""
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.to(self.pixel_mean.dtype)
        return (x - self.pixel_mean) / self.pixel_std

    def stream_features(self, name: str, frames: Tensor) -> Tensor:
        """Stream ``name``'s frames ``[B, 3, T, H, W]`` -> features ``[B, C, T', H', W']``.

        The backbone's output; with ``config.pixel_skip`` its 3 last channels
        are the normalised frames averaged over each feature cell (a fixed
        pooling: the grid divides the stream's shape by whole numbers).
        """
        x = self.normalize(frames)
        feats = self.backbones[name](x)
        if not self.config.pixel_skip:
            return feats
        # From the config, not the tensors: exported graphs need the kernel as constants.
        (_, frames_t, size_h, size_w), (t, h, w) = self.stream_shape(name), self.feature_grids[name]
        kernel = (frames_t // t, size_h // h, size_w // w)
        pooled = F.avg_pool3d(x, kernel).to(feats.dtype)  # [B, 3, T', H', W']
        return torch.cat([feats, pooled], dim=1)

    def encode_video(self, streams: dict[str, Tensor]) -> dict[str, Tensor]:
        """Backbones (question-independent): ``{stream: [B, N_s, d]}`` projected features."""
        feats = {name: self.stream_features(name, streams[name]) for name in streams}
        return self.cotokenizer.project_video(feats)

    def encode_question(self, question_ids: Tensor, question_mask: Tensor) -> Tensor:
        """``[B, L]`` ids -> ``[B, L, D_text]`` encoded question."""
        return self.text_encoder(self.text_embed(question_ids), question_mask.bool())

    def question_words(self, question_ids: Tensor) -> Tensor | None:
        """``[B, L]`` ids -> word embeddings ``[B, L, D_text]`` for the streams whose maps
        are conditioned on them (``token_condition="words"``); None when none is."""
        return self.text_embed(question_ids) if self.cotokenizer.word_proj is not None else None

    def answer_logits(self, answer_prefix: Tensor, state: CoTokState) -> Tensor:
        """Decoder over ``answer_prefix [B, A]`` (starting with BOS) -> logits ``[B, A, V]``."""
        y = self.decoder(self.answer_embed(answer_prefix), state.tokens, state.mask)
        # Tied output embedding, scaled as in T5 so logits do not grow with d.
        return F.linear(y * self.config.dim**-0.5, self.answer_embed.weight)

    def joint_memory(
        self,
        video: dict[str, Tensor],
        question_ids: Tensor,
        question_mask: Tensor,
        return_maps: bool = False,
        clip_index: Tensor | None = None,
    ) -> tuple[CoTokState, list[dict[str, Tensor]] | None]:
        """Question-dependent part up to the decoder: encoder + K co-tokenization steps.

        ``video``: ``{stream: [B, N_s, d]}``, or one row per clip with ``clip_index [B]``.
        """
        q = self.encode_question(question_ids, question_mask)
        words = self.question_words(question_ids)
        return self.cotokenizer(video, q, question_mask.bool(), return_maps, clip_index, words)

    # Public API -----------------------------------------------------------------
    def forward(
        self,
        question_ids: Tensor,
        question_mask: Tensor,
        answer_ids: Tensor | None = None,
        *,
        clip_index: Tensor | None = None,
        loss_weight: Tensor | None = None,
        return_maps: bool = False,
        **streams: Tensor,
    ) -> CoTokOutput:
        """Teacher-forced answer loss (training); streams are passed by name (``s1=...``).

        ``clip_index [B]`` lets several questions share one clip's backbone pass.
        ``loss_weight [B]`` (>= 0) weighs each question's answer tokens in the mean;
        all ones gives the plain mean over answer tokens, all zeros a loss of 0
        (a batch of questions that a ``--question-weight`` rule leaves out).
        """
        batch = self.validate_inputs(streams, question_ids, question_mask, answer_ids, clip_index)
        video = self.encode_video(streams)
        state, maps = self.joint_memory(video, question_ids, question_mask, return_maps, clip_index)
        bos = torch.full((batch, 1), self.config.text.bos_id, device=question_ids.device)
        if answer_ids is None:
            return CoTokOutput(None, self.answer_logits(bos, state), maps)
        prefix = torch.cat([bos, answer_ids[:, :-1].long()], dim=1)
        logits = self.answer_logits(prefix, state)
        pad = self.config.text.pad_id
        if loss_weight is None:
            loss = F.cross_entropy(
                logits.flatten(0, 1).float(), answer_ids.long().flatten(), ignore_index=pad
            )
            return CoTokOutput(loss, logits, maps)
        weight = _check_loss_weight(loss_weight, batch)[:, None] * (answer_ids != pad)
        per_token = F.cross_entropy(
            logits.flatten(0, 1).float(),
            answer_ids.long().flatten(),
            ignore_index=pad,
            reduction="none",
        ).view_as(weight)
        loss = (per_token * weight).sum() / weight.sum().clamp(min=1e-12)
        return CoTokOutput(loss, logits, maps)

    @torch.no_grad()
    def generate(
        self,
        question_ids: Tensor,
        question_mask: Tensor,
        *,
        max_new_tokens: int | None = None,
        clip_index: Tensor | None = None,
        return_maps: bool = False,
        **streams: Tensor,
    ) -> Tensor | tuple[Tensor, list[dict[str, Tensor]]]:
        """Greedy answer ids ``[B, <= max_answer_tokens]`` (EOS kept, then ``pad_id``).

        With ``return_maps`` also returns the TokenLearner maps (one
        ``{stream: [B, S, N_s]}`` per step).
        """
        t = self.config.text
        limit = t.max_answer_tokens if max_new_tokens is None else max_new_tokens
        if not 1 <= limit <= t.max_answer_tokens:
            raise ValueError(f"max_new_tokens: got {limit}, expected 1..{t.max_answer_tokens}")
        batch = self.validate_inputs(streams, question_ids, question_mask, None, clip_index)
        video = self.encode_video(streams)
        state, maps = self.joint_memory(video, question_ids, question_mask, return_maps, clip_index)
        ids = torch.full((batch, 1), t.bos_id, dtype=torch.long, device=question_ids.device)
        done = torch.zeros(batch, dtype=torch.bool, device=ids.device)
        for _ in range(limit):
            # No KV cache: at most 8 steps over at most 9 positions, cheaper than the bookkeeping.
            nxt = self.answer_logits(ids, state)[:, -1].argmax(-1)
            nxt = nxt.masked_fill(done, t.pad_id)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            done |= nxt == t.eos_id
            if bool(done.all()):
                break
        out = ids[:, 1:]
        return (out, maps or []) if return_maps else out

    # Checkpoints ----------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (each atomically)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        _atomic_write(out / WEIGHTS_FILE, lambda p: save_file(state, str(p), {"format": "pt"}))
        _atomic_write(out / CONFIG_FILE, lambda p: self.config.to_json(p))
        return out

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path | None = None,
        map_location: str = "cpu",
        edit_config: Callable[[CoTokConfig], object] | None = None,
    ) -> CoTokVQA:
        """Load a checkpoint written by ``save_pretrained``; never unpickles anything.

        Without ``directory``, the shipped default model (:data:`DEFAULT_CHECKPOINT`).
        ``edit_config`` changes the config before the model is built, for fields that
        no weight's shape depends on (e.g. ``text.max_answer_tokens``: the decoder's
        positions are relative); a change that does alter a shape is refused below.
        """
        d = DEFAULT_CHECKPOINT if directory is None else Path(directory)
        cfg_path, w_path = d / CONFIG_FILE, d / WEIGHTS_FILE
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(f"checkpoint {d}: missing {p.name}")
        try:
            cfg = CoTokConfig.from_json(cfg_path)
        except (ValueError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"checkpoint {d}: {CONFIG_FILE} is not a valid config: {e}") from e
        if edit_config is not None:
            edit_config(cfg)
        model = cls(cfg)
        try:
            weights = load_file(str(w_path), device=map_location)
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise ValueError(f"checkpoint {d}: {WEIGHTS_FILE} is not readable: {e}") from e
        expected = model.state_dict()
        missing = sorted(set(expected) - set(weights))
        unexpected = sorted(set(weights) - set(expected))
        wrong = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
        if missing or unexpected or wrong:
            raise ValueError(
                f"checkpoint {d}: {WEIGHTS_FILE} does not match {CONFIG_FILE}: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:5]}"
            )
        model.load_state_dict(weights)
        return model.eval()


def greedy_unrolled(
    model: CoTokVQA, state: CoTokState, like: Tensor, stop_early: bool = False
) -> tuple[Tensor, ...]:
    """Greedy decoding for exactly ``max_answer_tokens`` steps, with static shapes.

    What the exported question decoder runs and what the runtime's torch backend runs.
    ``stop_early`` (eager use only: it is a data-dependent branch) stops once every row
    has ended and pads ``ids`` with ``pad_id`` to the same ``[B, A]``; ``logits`` then
    has only the steps run.

    ``like`` is any ``[B, ...]`` tensor giving the batch size (the question ids): the
    start tokens are derived from it so a traced graph keeps the batch dynamic.
    Returns ``ids [B, A]`` int64 (after EOS: ``pad_id``), ``scores [B]`` (mean
    log-probability of the tokens up to and including EOS) and ``logits [B, A, V]``.
    """
    t = model.config.text
    prefix = torch.full_like(like[:, :1], t.bos_id, dtype=torch.long)
    done = torch.zeros_like(like[:, 0], dtype=torch.bool)
    step_logits, step_logp, counted = [], [], []
    for _ in range(t.max_answer_tokens):
        logits = model.answer_logits(prefix, state)[:, -1]  # [B, V]
        nxt = logits.argmax(-1)
        # The chosen token's log-probability is the row maximum of the log-softmax.
        step_logp.append(torch.log_softmax(logits, dim=-1).amax(-1))
        counted.append(~done)
        step_logits.append(logits)
        nxt = nxt.masked_fill(done, t.pad_id)
        prefix = torch.cat([prefix, nxt[:, None]], dim=1)
        done = done | (nxt == t.eos_id)
        if stop_early and bool(done.all()):
            break
    ids = prefix[:, 1:]
    if stop_early and ids.shape[1] < t.max_answer_tokens:
        ids = F.pad(ids, (0, t.max_answer_tokens - ids.shape[1]), value=t.pad_id)
    weight = torch.stack(counted, dim=1).to(logits.dtype)
    scores = (torch.stack(step_logp, dim=1) * weight).sum(1) / weight.sum(1)
    return ids, scores, torch.stack(step_logits, dim=1)


def _check_tensor(
    name: str, x: object, ndim: int, dtypes: tuple[torch.dtype, ...], what: str
) -> int:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor ({what}), got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name}: got shape {list(x.shape)}, expected {ndim} dimensions ({what})")
    if x.dtype not in dtypes:
        raise ValueError(f"{name}: got dtype {x.dtype}, expected {what}")
    return x.shape[0]


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_loss_weight(loss_weight: Tensor, batch: int) -> Tensor:
    """``loss_weight`` as float32 ``[B]``; raises ``ValueError`` naming what is wrong."""
    if not isinstance(loss_weight, Tensor) or tuple(loss_weight.shape) != (batch,):
        got = list(loss_weight.shape) if isinstance(loss_weight, Tensor) else type(loss_weight)
        raise ValueError(f"loss_weight: expected shape [{batch}] (one per question), got {got}")
    weight = loss_weight.float()
    if not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
        raise ValueError("loss_weight: every weight must be finite and >= 0")
    return weight
