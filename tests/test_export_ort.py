"""ONNX Runtime runs the two exported graphs chained with the same answers as ``generate``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="onnx is not installed (pip install '.[export]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install '.[export]')")

from cotok_edge.export.onnx import export_model  # noqa: E402
from cotok_edge.export.ort import (  # noqa: E402
    LOGIT_BAR_FP32,
    OrtChain,
    pad_question,
    parity,
    random_batches,
)

from cotok_edge import CoTokConfig, CoTokVQA  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class EarlyEosVQA(CoTokVQA):
    """The tiny model, nudged to end answers at different lengths.

    A random model answers the same token forever; this one makes EOS win once the
    prefix reaches 2 or 5 tokens, depending on whether the question has an even
    number of tokens (read from the joint memory's mask), so rows of one batch stop
    at different steps and the PAD-after-EOS rule is exercised. The change is made
    of ordinary traced ops, so the exported graph carries it too.
    """

    def answer_logits(self, answer_prefix, state):
        logits = super().answer_logits(answer_prefix, state)
        even = state.mask.sum(1) % 2 == 0
        stop_at = torch.where(even, 2, 5)  # prefix length at which EOS wins
        force = (answer_prefix.shape[1] >= stop_at).to(logits.dtype)
        eos = torch.zeros(logits.shape[-1], dtype=logits.dtype)
        # Enough to win over a random model's logits (about unit scale), small enough that
        # one float32 ulp of the sum (4e-6 at 64; 1e-3 at 1e4) stays under the 1e-4 bar.
        eos[self.config.text.eos_id] = 64.0
        return logits + force[:, None, None] * eos


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(0)
    model = EarlyEosVQA(CoTokConfig.preset("tiny")).eval()
    out = tmp_path_factory.mktemp("onnx")
    spec = export_model(model, out, target="jetson-orin")
    chain = OrtChain(out / "video_encoder.onnx", out / "question_decoder.onnx", threads=1)
    return model, chain, spec, out


def test_chained_answers_equal_generate_and_logits_within_the_bar(bundle):
    model, chain, _, _ = bundle
    batches = random_batches(model, count=2, batch_size=2, seed=10)
    report = parity(model, chain, batches)
    assert report.questions == 4
    assert report.answers_identical == 1.0, report.mismatches
    assert report.max_logit_diff <= LOGIT_BAR_FP32
    assert report.max_feature_diff < 1e-4 and report.max_score_diff < 1e-4
    assert report.passed and report.to_dict()["passed"] is True
    # The inputs must exercise EOS at different steps, then PAD, or the test proves little.
    eos, pad = model.config.text.eos_id, model.config.text.pad_id
    answers = np.concatenate(
        [chain(b, b["question_ids"], b["question_mask"])["answer_ids"] for b in batches]
    )
    stops = {int(np.argmax(row == eos)) for row in answers}
    assert stops == {1, 4}, answers
    for row in answers:
        end = int(np.argmax(row == eos))
        assert (row[end + 1 :] == pad).all()


def test_dynamic_batch_runs_batch_1_and_3(bundle):
    model, chain, spec, _ = bundle
    assert spec["batch"]["mode"] == "dynamic"
    for size in (1, 3):
        report = parity(model, chain, random_batches(model, count=1, batch_size=size, seed=size))
        assert report.questions == size and report.passed, report.to_dict()


def test_short_questions_are_padded_to_the_graph_length(bundle):
    model, chain, _, _ = bundle
    t = model.config.text
    inputs = model.example_inputs(1, question_len=5, seed=4)
    got = chain(inputs, inputs["question_ids"], inputs["question_mask"], t.pad_id)
    ids, mask = pad_question(inputs["question_ids"], inputs["question_mask"], 32, t.pad_id)
    assert ids.shape == (1, t.max_question_tokens) and mask[:, 5:].sum() == 0
    padded = dict(inputs, question_ids=torch.from_numpy(ids), question_mask=torch.from_numpy(mask))
    want = model.generate(**padded)
    assert got["answer_ids"][0, : want.shape[1]].tolist() == want[0].tolist()
    with pytest.raises(ValueError, match="at most 32"):
        pad_question(np.zeros((1, 33)), np.ones((1, 33)), 32, 0)


def test_parity_catches_a_wrong_graph(bundle, tmp_path):
    """A decoder whose weights were altered must fail the bar: parity is not vacuous."""
    import onnx
    from onnx import numpy_helper

    model, _, _, out = bundle
    m = onnx.load(str(out / "question_decoder.onnx"))
    big = max(m.graph.initializer, key=lambda t: np.prod(t.dims))
    arr = numpy_helper.to_array(big).copy()
    arr += 0.05
    big.CopyFrom(numpy_helper.from_array(arr, big.name))
    onnx.save(m, str(tmp_path / "bad.onnx"))
    bad = OrtChain(out / "video_encoder.onnx", tmp_path / "bad.onnx", threads=1)
    report = parity(model, bad, random_batches(model, count=1, batch_size=1, seed=2))
    assert report.max_logit_diff > LOGIT_BAR_FP32 and not report.passed


def test_parity_needs_the_logits_output(bundle, tmp_path):
    model, _, _, out = bundle
    from cotok_edge.export.onnx import export_question_decoder

    spec = export_question_decoder(model, tmp_path / "nologits.onnx", logits=False)
    chain = OrtChain(out / "video_encoder.onnx", spec.path, threads=1)
    with pytest.raises(ValueError, match="answer_logits"):
        parity(model, chain, random_batches(model, count=1))


def test_export_model_spec_describes_the_files(bundle):
    import json

    from cotok_edge.bundle import sha256_of as sha256_file

    model, _, spec, out = bundle
    assert set(spec["graphs"]) == {"video_encoder", "question_decoder"}
    assert spec["batch"] == {
        "mode": "dynamic",
        "dim": "B",
        "profile": {"min": 1, "opt": 1, "max": 4},
    }
    assert spec["opset"] == 17 and spec["target"] == "jetson-orin"
    assert spec["question_tokens"] == model.config.text.max_question_tokens
    assert spec["tokens"] == {"pad_id": 0, "bos_id": 1, "eos_id": 2}
    for g in spec["graphs"].values():
        assert sha256_file(out / g["file"]) == g["sha256"]
    assert json.loads(json.dumps(spec)) == spec
    assert sorted(p.name for p in out.iterdir()) == ["question_decoder.onnx", "video_encoder.onnx"]


def test_a_pixel_skip_model_exports_with_the_same_answers(tmp_path):
    # The pooled pixels are part of the video graph: ONNX must carry them exactly.
    from cotok_edge.model.pixel_skip import with_pixel_skip

    torch.manual_seed(0)
    model = with_pixel_skip(CoTokVQA(CoTokConfig.preset("tiny"))).eval()
    with torch.no_grad():  # non-zero skip columns, or the pooling would not matter
        for proj in model.cotokenizer.video_proj.values():
            proj.weight[:, -3:].normal_(std=1.0)
    export_model(model, tmp_path, target="jetson-orin")
    chain = OrtChain(tmp_path / "video_encoder.onnx", tmp_path / "question_decoder.onnx", threads=1)
    report = parity(model, chain, random_batches(model, count=1, batch_size=2, seed=3))
    assert report.passed and report.answers_identical == 1.0, report.mismatches
    assert report.max_feature_diff < 1e-4


def test_a_pool_stem_model_with_max_pooling_exports_with_the_same_answers(tmp_path):
    # The pool stem's max-pools (ceil mode) must give ONNX Runtime the grid torch gives;
    # the max tokens and the max-pooling TokenLearner (ReduceMax over gated positions)
    # must reach the layers as they do in torch; the word-conditioned maps must read the
    # question's word embeddings in the exported graph too.
    data = CoTokConfig.preset("tiny").to_dict()
    data["streams"][2].update(
        stem="pool", stem_channels=16, token_pool="max", token_condition="words"
    )
    data["max_tokens"] = True
    torch.manual_seed(0)
    model = CoTokVQA(CoTokConfig.from_dict(data)).eval()
    export_model(model, tmp_path, target="jetson-orin")
    chain = OrtChain(tmp_path / "video_encoder.onnx", tmp_path / "question_decoder.onnx", threads=1)
    report = parity(model, chain, random_batches(model, count=1, batch_size=2, seed=3))
    assert report.passed and report.answers_identical == 1.0, report.mismatches
    assert report.max_feature_diff < 1e-4
