"""Tokenizer, question/answer encoding and answer normalisation (cotok_edge.data.text)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from cotok_edge.data.text import (
    BOS,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    decode_answer,
    encode_answers,
    encode_questions,
    load_tokenizer,
    normalize_answer,
    save_tokenizer,
    train_tokenizer,
)

QUESTIONS = [
    "what color is the big object?",
    "which way does the big object move?",
    "how many times does the white light blink?",
    "What shape is the small Red object?",
    "who is singing in the kitchen?",
]
ANSWERS = ["red", "left", "three", "circle", "woman", "kitchen"]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(QUESTIONS + ANSWERS, vocab_size=300)


def test_special_token_ids_are_fixed(tok) -> None:
    assert [tok.token_to_id(t) for t in (PAD, BOS, EOS, UNK)] == [0, 1, 2, 3]
    assert SPECIAL_TOKENS == (PAD, BOS, EOS, UNK)
    assert tok.get_vocab_size() <= 300


def test_questions_encode_to_padded_ids_and_mask(tok) -> None:
    ids, mask = encode_questions(tok, QUESTIONS + [""], max_len=16)
    assert ids.shape == (6, 16) and ids.dtype == torch.int64
    assert mask.shape == (6, 16) and mask.dtype == torch.bool
    assert torch.equal(mask, ids != 0)
    lengths = mask.sum(1)
    for row, n in zip(ids, lengths.tolist(), strict=True):
        assert row[n - 1] == 2  # ends with [EOS]
        assert (row[n:] == 0).all()  # then [PAD]
    assert lengths[-1] == 1  # an empty question is just [EOS]
    # Lower-cased and punctuation split off: "Red" == "red", "?" is a token.
    toks = tok.encode("What shape is the small Red object?").tokens
    assert toks == ["what", "shape", "is", "the", "small", "red", "object", "?", EOS]
    short, _ = encode_questions(tok, QUESTIONS, max_len=16, pad_to_max=False)
    assert short.shape[1] == int(lengths.max())


def test_too_long_question_raises_naming_it_or_truncates_with_warning(tok) -> None:
    with pytest.raises(ValueError, match="'what color is the big object\\?' is 8 tokens"):
        encode_questions(tok, QUESTIONS, max_len=6)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ids, mask = encode_questions(tok, QUESTIONS, max_len=6, truncate=True)
    assert len(w) == 1 and "truncated" in str(w[0].message)
    assert ids.shape == (5, 6) and (ids[:, -1] == 2).all() and mask.all()
    with pytest.raises(TypeError):
        encode_questions(tok, "a single string", max_len=8)


def test_answers_end_with_eos_and_round_trip(tok) -> None:
    ids = encode_answers(tok, ANSWERS, max_len=4)
    assert ids.shape == (6, 4) and ids.dtype == torch.int64
    for row, ans in zip(ids, ANSWERS, strict=True):
        n = int((row != 0).sum())
        assert row[n - 1] == 2
        assert decode_answer(tok, row) == ans
        assert decode_answer(tok, row.tolist()) == ans
        assert decode_answer(tok, row.numpy()) == ans
    # Generated sequences may start with [BOS] and run on after [EOS].
    body = tok.encode("kitchen").ids[:-1]
    assert decode_answer(tok, [1, *body, 2, *tok.encode("red").ids]) == "kitchen"
    with pytest.raises(ValueError, match="answer 'red red red red'"):
        encode_answers(tok, ["red red red red"], max_len=4)


def test_unseen_words_split_into_characters_and_only_foreign_characters_are_unk(tok) -> None:
    enc = tok.encode("zzqx")
    assert 3 not in enc.ids and decode_answer(tok, enc.ids) == "zzqx"
    assert tok.encode("\u4e2d").ids == [3, 2]  # a character never seen: [UNK] [EOS]


def test_training_is_deterministic() -> None:
    a = train_tokenizer(QUESTIONS + ANSWERS, vocab_size=300)
    b = train_tokenizer(list(reversed(QUESTIONS + ANSWERS)), vocab_size=300)
    assert a.get_vocab() == b.get_vocab()


def test_save_and_load(tok, tmp_path: Path) -> None:
    (tmp_path / "bundle").mkdir()
    path = save_tokenizer(tok, tmp_path / "bundle")
    assert path == tmp_path / "bundle" / "tokenizer.json" and path.is_file()
    again = load_tokenizer(tmp_path / "bundle")
    for q in QUESTIONS:
        assert again.encode(q).ids == tok.encode(q).ids
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        load_tokenizer(tmp_path / "missing")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_tokenizer(bad)


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("Red", "red"),
        ("the Red Ball.", "red ball"),
        ("  an   apple!!", "apple"),
        ("A man's hat", "man s hat"),
        ("theater", "theater"),  # articles only as whole words
        ("two-three", "two three"),
    ],
)
def test_normalize_answer(raw: str, norm: str) -> None:
    assert normalize_answer(raw) == norm
