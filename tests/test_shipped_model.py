"""The shipped demonstration model loads without arguments and answers a synthetic clip."""

from __future__ import annotations

import json

import torch

from cotok_edge import CoTokVQA
from cotok_edge.data.synthetic import generate
from cotok_edge.data.text import decode_answer, encode_questions, load_tokenizer
from cotok_edge.data.video import load_streams
from cotok_edge.model.vqa import DEFAULT_CHECKPOINT

MAX_BYTES = 25 * 1024 * 1024


def test_default_checkpoint_is_small_and_complete() -> None:
    files = {p.name: p.stat().st_size for p in DEFAULT_CHECKPOINT.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert sum(files.values()) <= MAX_BYTES


def test_default_model_answers_a_clip(tmp_path) -> None:
    model = CoTokVQA.from_pretrained()
    assert model.config.name == "tiny"
    tok = load_tokenizer(DEFAULT_CHECKPOINT / "tokenizer.json")
    generate(tmp_path, train=1, val=0, test=0, seed=11, workers=1, progress=False)
    record = json.loads((tmp_path / "train_qa.json").read_text())[0]
    streams = load_streams(tmp_path / "videos" / f"{record['video_id']}.mp4")
    batch = {k: torch.from_numpy(v)[None] for k, v in streams.arrays.items()}
    ids, mask = encode_questions(tok, [record["question"]], model.config.text.max_question_tokens)
    answer = decode_answer(tok, model.generate(question_ids=ids, question_mask=mask, **batch)[0])
    assert isinstance(answer, str) and answer.strip()
