"""The shipped demonstration model loads without arguments and answers a synthetic clip."""

from __future__ import annotations

import json

import torch

from cotok_edge import CoTokVQA
from cotok_edge.data.clips import StreamCache, group_by_clip
from cotok_edge.data.datasets import load_split
from cotok_edge.data.synthetic import generate
from cotok_edge.data.text import decode_answer, encode_questions, load_tokenizer
from cotok_edge.data.video import StreamSpec, load_streams
from cotok_edge.evaluate import predict_clips, score
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


def test_default_model_answers_coarse_and_fine_space_questions_of_unseen_clips(tmp_path) -> None:
    # Clips of another seed than the training data's: the model must have learnt to read
    # the big object from the video, not the answers of its training clips.
    model = CoTokVQA.from_pretrained()
    tok = load_tokenizer(DEFAULT_CHECKPOINT / "tokenizer.json")
    generate(tmp_path, train=40, val=0, test=0, seed=12345, workers=1, progress=False)
    clips = group_by_clip(load_split("msrvtt-qa", tmp_path, "train"))
    specs = [StreamSpec(s.name, s.frames, s.size) for s in model.config.streams]
    cache = StreamCache(clips, specs, tmp_path / "cache", show_progress=False)
    result = score(clips, predict_clips(model, tok, clips, cache))
    coarse = result["per_category"][3]["accuracy"]
    # Chance is 1/6 to 1/4 by question; the shipped model answers 99.7% on the test split.
    assert coarse >= 0.5, f"coarse accuracy {coarse:.2f} on 40 unseen clips"
    # The small object of the named colour (chance 1/4; 91.3% on the test split): the
    # 224 px stream's map must find it by the question's words.
    fine_space = result["per_category"][0]["accuracy"]
    assert fine_space >= 0.5, f"fine-space accuracy {fine_space:.2f} on 40 unseen clips"
