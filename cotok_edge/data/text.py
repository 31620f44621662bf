"""Question and answer text: tokenizer, batch encoding, answer normalisation.

The tokenizer is a WordPiece model from the ``tokenizers`` library, trained
on the training questions and answers and saved as ``tokenizer.json`` (which
the runtime loads as it is):

- normaliser: Unicode NFD, lower case, accents stripped;
- pre-tokeniser: whitespace, and punctuation split off as its own tokens;
- special tokens with fixed ids: ``[PAD]=0``, ``[BOS]=1``, ``[EOS]=2``,
  ``[UNK]=3`` (the model's ``TextConfig`` pad/bos/eos ids);
- post-processor: every encoded text ends with ``[EOS]``, so an empty
  question still has one real token (the model pools over the mask).

torch is imported only by the functions that return tensors
(:func:`encode_questions`, :func:`encode_answers`), so the embedded runtime can use
:func:`load_tokenizer` and :func:`decode_answer` without it.

Answers are scored after :func:`normalize_answer`, shared by training and
evaluation.
"""

from __future__ import annotations

import re
import string
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

if TYPE_CHECKING:  # torch is imported where tensors are made, so the runtime needs none
    import torch

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "SPECIAL_TOKENS",
    "UNK",
    "decode_answer",
    "encode_answers",
    "encode_questions",
    "load_tokenizer",
    "normalize_answer",
    "save_tokenizer",
    "train_tokenizer",
]

PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"
#: Special tokens in id order: [PAD]=0, [BOS]=1, [EOS]=2, [UNK]=3.
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> Tokenizer:
    """A WordPiece tokenizer for ``texts`` (questions and answers), at most ``vocab_size`` tokens.

    The vocabulary is the special tokens, every character seen and every ASCII
    letter, digit and punctuation mark (alone and as a ``##`` continuation, so
    an unseen English word is never unknown) and then whole words by
    frequency, ties broken alphabetically. Built by counting rather than with
    the library's trainer, whose merges tie-break in hash order and so change
    from run to run: the same texts always give the same ids.
    """
    tok = Tokenizer(WordPiece({t: i for i, t in enumerate(SPECIAL_TOKENS)}, unk_token=UNK))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()]
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    counts: Counter[str] = Counter()
    for text in texts:
        norm = tok.normalizer.normalize_str(text)
        counts.update(w for w, _ in tok.pre_tokenizer.pre_tokenize_str(norm))
    # Every ASCII letter, digit and punctuation mark too, so unseen English words split
    # into known pieces instead of becoming [UNK].
    ascii_chars = string.ascii_lowercase + string.digits + string.punctuation
    chars = sorted({c for w in counts for c in w} | set(ascii_chars))
    pieces = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars)]
    if vocab_size < len(pieces):
        raise ValueError(
            f"vocab_size: got {vocab_size}, the texts need at least {len(pieces)} "
            "(special tokens and every character)"
        )
    taken = set(pieces)
    words = sorted((w for w in counts if w not in taken), key=lambda w: (-counts[w], w))
    pieces += words[: vocab_size - len(pieces)]
    tok.model = WordPiece({t: i for i, t in enumerate(pieces)}, unk_token=UNK)
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", special_tokens=[(EOS, EOS_ID)]
    )
    _check_specials(tok, "trained tokenizer")
    return tok


def save_tokenizer(tok: Tokenizer, path: str | Path) -> Path:
    """Write ``tokenizer.json`` atomically (``path`` may be the file or its folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    tmp = p.with_name(f".{p.name}.tmp")
    tok.save(str(tmp))
    tmp.replace(p)
    return p


def _check_specials(tok: Tokenizer, where: str) -> None:
    for want, name in enumerate(SPECIAL_TOKENS):
        got = tok.token_to_id(name)
        if got != want:
            raise ValueError(f"{where}: special token {name} has id {got}, expected {want}")


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read ``tokenizer.json`` (``path`` may be the file or its folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {p}")
    try:
        tok = Tokenizer.from_file(str(p))
    except Exception as e:  # the Rust side raises a bare Exception
        raise ValueError(f"{p}: not a tokenizers JSON file ({e})") from e
    _check_specials(tok, str(p))
    return tok


def _encode(
    tok: Tokenizer, texts: Sequence[str], max_len: int, truncate: bool, what: str
) -> list[list[int]]:
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if isinstance(texts, str):
        raise TypeError(f"{what}s must be a sequence of strings, not a single string")
    encs = tok.encode_batch(list(texts))
    out, cut = [], []
    for text, enc in zip(texts, encs, strict=True):
        ids = list(enc.ids)
        if len(ids) > max_len:
            if not truncate:
                raise ValueError(
                    f"{what} {text!r} is {len(ids)} tokens with [EOS], longer than "
                    f"max_len={max_len} (pass truncate=True to cut it)"
                )
            cut.append(text)
            ids = ids[: max_len - 1] + [EOS_ID]  # keep the end marker
        out.append(ids)
    if cut:
        shown = "; ".join(repr(t) for t in cut[:3]) + (" ..." if len(cut) > 3 else "")
        warnings.warn(
            f"truncated {len(cut)} {what}(s) to {max_len} tokens: {shown}",
            stacklevel=3,
        )
    return out


def _pad(rows: list[list[int]], max_len: int | None) -> torch.Tensor:
    width = max_len if max_len is not None else max((len(r) for r in rows), default=1)
    ids = np.full((len(rows), width), PAD_ID, dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    import torch

    return torch.from_numpy(ids)


def encode_questions(
    tok: Tokenizer,
    questions: Sequence[str],
    max_len: int,
    truncate: bool = False,
    pad_to_max: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise a batch of questions.

    Args:
        max_len: tokens per question including the final ``[EOS]``.
        truncate: cut longer questions (keeping ``[EOS]``) with a warning
            instead of raising.
        pad_to_max: pad to ``max_len`` (fixed shape, what the exported graph
            takes); False pads to the longest question in the batch.

    Returns:
        ids: int64 tensor ``[B, L]``, ``[PAD]`` (0) after the end.
        mask: bool tensor ``[B, L]``, True on real tokens.

    Raises:
        ValueError: a question is longer than ``max_len`` tokens (the message
            quotes it) and ``truncate`` is False.
    """
    rows = _encode(tok, questions, max_len, truncate, "question")
    ids = _pad(rows, max_len if pad_to_max else None)
    return ids, ids != PAD_ID


def encode_answers(
    tok: Tokenizer,
    answers: Sequence[str],
    max_len: int,
    truncate: bool = False,
    pad_to_max: bool = True,
) -> torch.Tensor:
    """Decoder targets: answer token ids followed by ``[EOS]``, then ``[PAD]``.

    Returns an int64 tensor ``[B, L]``; the decoder's input is ``[BOS]`` + the targets
    shifted right. ``max_len`` counts the ``[EOS]``.
    """
    rows = _encode(tok, answers, max_len, truncate, "answer")
    return _pad(rows, max_len if pad_to_max else None)


def decode_answer(tok: Tokenizer, ids: Sequence[int] | np.ndarray | torch.Tensor) -> str:
    """Text of one generated answer ``[L]``: stops at the first ``[EOS]``,
    drops ``[PAD]`` and ``[BOS]``. Accepts lists, numpy arrays and 1-D tensors."""
    seq = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
    keep = []
    for i in seq:
        if i == EOS_ID:
            break
        if i in (PAD_ID, BOS_ID):
            continue
        keep.append(i)
    return tok.decode(keep, skip_special_tokens=True).strip()


_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Lower case, punctuation removed, articles (a, an, the) removed,
    whitespace collapsed: the form answers are compared in."""
    s = s.lower()
    s = _PUNCT.sub(" ", s)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())
