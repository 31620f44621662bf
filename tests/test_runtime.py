"""The embedded runtime: backends agree, batching is exact, threads are safe, errors are clear."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install '.[export]')")

from test_runtime_fixtures import shared_bundle, shared_clips  # noqa: E402

from cotok_edge.bundle import BUNDLE_FORMAT, Manifest, write_manifest  # noqa: E402
from cotok_edge.manifest import EngineInfo  # noqa: E402
from cotok_edge.runtime import (  # noqa: E402
    Answer,
    BackendUnavailableError,
    BundleError,
    EngineMismatchError,
    PluginLibraryError,
    QuestionError,
    VideoDecodeError,
    VideoInputError,
    load,
)
from cotok_edge.runtime import api as runtime_api  # noqa: E402
from cotok_edge.runtime.backends.tensorrt.runtime import check_engine_compat  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
needs_trt = pytest.mark.skipif(not HAS_TRT, reason="TensorRT not installed")


@pytest.fixture(scope="module")
def bundle() -> Path:
    return shared_bundle()


@pytest.fixture(scope="module")
def clips():
    return shared_clips()


@pytest.fixture(scope="module")
def ort_qa(bundle):
    return load(bundle, backend="onnxruntime", threads=1)


@pytest.fixture(scope="module")
def torch_qa(bundle):
    return load(bundle, backend="torch", device="cpu")


def _pairs(answers: list[Answer]) -> list[tuple[str, float]]:
    return [(a.text, a.score) for a in answers]


# Backends -----------------------------------------------------------------------------
def test_torch_and_onnxruntime_answer_identically(ort_qa, torch_qa, clips):
    assert (ort_qa.backend, torch_qa.backend) == ("onnxruntime", "torch")
    texts = set()
    for clip in clips:
        got_ort = ort_qa.answer(clip.frames, clip.questions)
        got_torch = torch_qa.answer(clip.frames, clip.questions)
        assert [a.text for a in got_ort] == [a.text for a in got_torch]
        np.testing.assert_allclose(
            [a.score for a in got_ort], [a.score for a in got_torch], rtol=1e-4
        )
        texts |= {a.text for a in got_ort}
        for a in got_ort:
            assert 0.0 < a.score <= 1.0
            assert set(a.timings_ms) == {"decode", "preprocess", "inference", "postprocess",
                                         "total"}  # fmt: skip
            assert a.timings_ms["decode"] == 0.0  # frames in memory: nothing to decode
    print("answers seen:", sorted(texts))


def test_file_bytes_and_path_give_the_same_answer(ort_qa, clips):
    clip = clips[0]
    by_path = ort_qa.answer(clip.path, clip.questions[0])
    by_str = ort_qa.answer(str(clip.path), clip.questions[0])
    by_bytes = ort_qa.answer(clip.path.read_bytes(), clip.questions[0])
    assert by_path.text == by_str.text == by_bytes.text
    assert by_path.score == pytest.approx(by_bytes.score, rel=1e-6)
    assert by_path.timings_ms["decode"] > 0.0


def test_several_questions_on_one_clip_equal_separate_calls_and_decode_once(
    ort_qa, clips, monkeypatch
):
    clip = clips[1]
    separate = [ort_qa.answer(clip.path, q) for q in clip.questions]
    calls = {"decode": 0, "encode": 0}
    real_load, real_encode = runtime_api.load_streams, ort_qa.inference.encode

    def counting_load(*a, **k):
        calls["decode"] += 1
        return real_load(*a, **k)

    def counting_encode(*a, **k):
        calls["encode"] += 1
        return real_encode(*a, **k)

    monkeypatch.setattr(runtime_api, "load_streams", counting_load)
    monkeypatch.setattr(ort_qa.inference, "encode", counting_encode)
    together = ort_qa.answer(clip.path, clip.questions)
    assert calls == {"decode": 1, "encode": 1}
    assert [a.question for a in together] == clip.questions
    assert [a.text for a in together] == [a.text for a in separate]
    np.testing.assert_allclose([a.score for a in together], [a.score for a in separate], rtol=1e-5)


def test_answer_batch_matches_single_calls(ort_qa, clips):
    c0, c1, c2 = clips
    pairs = [(c0.path, c0.questions[0]), (c1.frames, c1.questions[2]),
             (c0.path, c0.questions[3]), (c2.path, c2.questions[1])]  # fmt: skip
    got = ort_qa.answer_batch(pairs)
    want = [ort_qa.answer(v, q) for v, q in pairs]
    assert [a.text for a in got] == [a.text for a in want]
    np.testing.assert_allclose([a.score for a in got], [a.score for a in want], rtol=1e-5)
    assert ort_qa.answer_batch([]) == []


def test_questions_beyond_max_batch_are_chunked(bundle, clips):
    qa = load(bundle, backend="onnxruntime", threads=1)
    qa.max_batch = 3  # 4 questions -> decoder batches of 3 and 1
    clip = clips[2]
    chunked = qa.answer(clip.frames, clip.questions)
    whole = load(bundle, backend="onnxruntime", threads=1).answer(clip.frames, clip.questions)
    assert [a.text for a in chunked] == [a.text for a in whole]
    np.testing.assert_allclose([a.score for a in chunked], [a.score for a in whole], rtol=1e-5)


def test_onnxruntime_thread_spinning_is_off_unless_asked_and_answers_agree(ort_qa, bundle, clips):
    key = "session.intra_op.allow_spinning"
    assert ort_qa.inference._opts.get_session_config_entry(key) == "0"
    spinning = load(bundle, backend="onnxruntime", threads=2, spin=True)
    assert spinning.inference._opts.get_session_config_entry(key) == "1"
    clip = clips[1]
    got, want = (
        spinning.answer(clip.frames, clip.questions),
        ort_qa.answer(clip.frames, clip.questions),
    )
    assert [a.text for a in got] == [a.text for a in want]


@pytest.mark.parametrize("which", ["onnxruntime", "torch"])
def test_threads_give_the_serial_answers(which, ort_qa, torch_qa, clips):
    qa = ort_qa if which == "onnxruntime" else torch_qa
    per_clip = 2 if which == "onnxruntime" else 1  # torch is the slow one here
    jobs = [(c.frames, q) for c in clips[:2] for q in c.questions[:per_clip]]
    serial = [_pairs([qa.answer(v, q)])[0] for v, q in jobs]
    results: dict[int, tuple[str, float]] = {}
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(len(jobs)):
                k = (i + t) % len(jobs)  # each thread in another order
                v, q = jobs[k]
                got = _pairs([qa.answer(v, q)])[0]
                assert got[0] == serial[k][0] and got[1] == pytest.approx(serial[k][1])
                results[t * 100 + k] = got
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 4 * len(jobs)


# Explanations -------------------------------------------------------------------------
def test_explain_writes_a_png_from_both_backends(ort_qa, torch_qa, clips, tmp_path):
    clip = clips[0]
    q = clip.questions[0]
    ex_ort = ort_qa.explain(clip.frames, q, tmp_path / "ort.png")
    ex_torch = torch_qa.explain(clip.frames, q, tmp_path / "torch.png")
    for ex in (ex_ort, ex_torch):
        assert ex.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert sum(ex.contributions.values()) == pytest.approx(1.0)
        assert set(ex.contributions) == {"s1", "s2", "s3"}
        assert ex.answer.text == ort_qa.answer(clip.frames, q).text
    for s, m in ex_ort.maps.items():
        assert m.shape == ort_qa.grids[s]
        # A softmax over positions; a max-pooling stream's gates, normalised.
        assert float(m.sum()) == pytest.approx(1.0, rel=1e-4)
        np.testing.assert_allclose(m, ex_torch.maps[s], atol=1e-5)
    for s in ex_ort.contributions:
        assert ex_ort.contributions[s] == pytest.approx(ex_torch.contributions[s], rel=1e-4)


def test_feature_grids_match_the_model(bundle):
    from cotok_edge.model.config import CoTokConfig

    qa = load(bundle, backend="onnxruntime")
    cfg = CoTokConfig.from_dict(qa.manifest.model_config)
    assert qa.grids == {s.name: s.feature_grid for s in cfg.streams}


# Lean: no torch ------------------------------------------------------------------------
def test_runtime_answers_without_torch(bundle, clips, tmp_path):
    video, question, png = str(clips[0].path), clips[0].questions[0], str(tmp_path / "x.png")
    script = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "modelopt"):
                    raise ImportError(f"{{name}} is blocked in this test")
                return None
        sys.meta_path.insert(0, Block())
        import numpy as np
        from cotok_edge.runtime import load
        qa = load({str(bundle)!r})
        a = qa.answer({video!r}, {question!r})
        ex = qa.explain({video!r}, {question!r}, {png!r})
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "modelopt"))
        import json
        print(json.dumps({{"backend": qa.backend, "text": a.text, "heavy": heavy}}))
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["backend"] == "onnxruntime"
    assert out["heavy"] == []
    assert "backend onnxruntime" in r.stderr  # auto says which backend it took
    assert "tensorrt: no engine in the bundle" in r.stderr


# Bad input -----------------------------------------------------------------------------
def _copy(bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "b"
    shutil.copytree(bundle, out)
    return out


def _rewrite(root: Path, **changes) -> None:
    m = json.loads((root / "manifest.json").read_text())
    m.update(changes)
    (root / "manifest.json").write_text(json.dumps(m))


def test_missing_and_unreadable_bundles(tmp_path):
    with pytest.raises(BundleError, match="no such folder"):
        load(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="not a folder"):
        load(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no manifest.json"):
        load(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not readable JSON"):
        load(tmp_path / "bad")


def test_unknown_format_version(bundle, tmp_path):
    root = _copy(bundle, tmp_path)
    _rewrite(root, format="cotok-bundle/99")
    with pytest.raises(BundleError, match="cotok-bundle/99"):
        load(root)


def test_a_format_1_bundle_still_loads_and_answers(bundle, tmp_path, ort_qa, clips):
    root = _copy(bundle, tmp_path)
    m = json.loads((root / "manifest.json").read_text())
    m.update(format="cotok-bundle/1", plugin=False)
    (root / "manifest.json").write_text(json.dumps(m))
    qa = load(root, backend="onnxruntime")
    assert qa.manifest.format == BUNDLE_FORMAT and qa.manifest.plugin is None
    clip = clips[0]
    assert qa.answer(clip.frames, clip.questions[0]).text == (
        ort_qa.answer(clip.frames, clip.questions[0]).text
    )


def test_a_manifest_field_of_the_wrong_kind_is_named(bundle, tmp_path):
    root = _copy(bundle, tmp_path)
    m = json.loads((root / "manifest.json").read_text())
    m["onnx"]["question_tokens"] = "sixteen"
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="onnx: field 'question_tokens' must be an integer"):
        load(root)


@pytest.mark.parametrize(
    "victim, backend",
    [("question_decoder.onnx", "onnxruntime"), ("tokenizer.json", "onnxruntime"),
     ("checkpoint/model.safetensors", "torch")],
)  # fmt: skip
def test_a_file_whose_hash_does_not_match(bundle, tmp_path, victim, backend):
    root = _copy(bundle, tmp_path)
    with open(root / victim, "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match=f"{victim} does not match its sha256"):
        load(root, backend=backend)


def test_a_missing_file(bundle, tmp_path):
    root = _copy(bundle, tmp_path)
    (root / "video_encoder.onnx").unlink()
    with pytest.raises(BundleError, match="video_encoder.onnx is listed in manifest.json but"):
        load(root, backend="onnxruntime")


def test_unknown_backend(bundle):
    with pytest.raises(ValueError, match="unknown 'tflite'"):
        load(bundle, backend="tflite")


def test_tensorrt_without_an_engine_says_so(bundle):
    with pytest.raises(BackendUnavailableError, match="no TensorRT engine"):
        load(bundle, backend="tensorrt")


def _with_engine(bundle: Path, tmp_path: Path, plugin: str | None) -> Path:
    """A copy of the bundle whose manifest names an engine (its bytes are not a real one)."""
    root = _copy(bundle, tmp_path)
    (root / "model.engine").write_bytes(b"not an engine")
    m = json.loads((root / "manifest.json").read_text())
    m["engine"] = {"file": "model.engine", "tensorrt": "10.3.0", "compute_capability": [8, 7],
                   "plugin_library": plugin}  # fmt: skip
    write_manifest(root, Manifest.from_json(m))
    return root


def test_missing_plugin_library(bundle, tmp_path):
    root = _with_engine(bundle, tmp_path, "plugins/libcotok_tokenlearner_plugin.so")
    with pytest.raises(PluginLibraryError, match="libcotok_tokenlearner_plugin.so, which is miss"):
        load(root, backend="tensorrt")


def test_auto_skips_tensorrt_it_cannot_run_and_says_why(bundle, tmp_path, capsys):
    root = _with_engine(bundle, tmp_path, None)
    qa = load(root)  # auto
    assert qa.backend == "onnxruntime"
    err = capsys.readouterr().err
    assert "backend onnxruntime" in err
    if not HAS_TRT:
        assert "TensorRT not installed" in err


def test_engine_for_another_gpu_or_tensorrt_version():
    engine = EngineInfo.from_json(
        {"file": "model.engine", "tensorrt": "10.3.0.30", "compute_capability": [8, 7]}
    )
    kw = {"bundle": "/b"}
    check_engine_compat(engine, "10.3.0.26", (8, 7), **kw)  # same major.minor.patch: fine
    with pytest.raises(EngineMismatchError) as e:
        check_engine_compat(engine, "10.3.0", (9, 0), **kw)
    msg = str(e.value)
    assert "compute capability 8.7 (this GPU is 9.0)" in msg
    assert "rebuild on this device" in msg
    assert "python -m cotok_edge.build --finish /b" in msg
    with pytest.raises(EngineMismatchError, match=r"TensorRT 10.3.0.30 \(this device has 10.7"):
        check_engine_compat(engine, "10.7.0", (8, 7), **kw)
    with pytest.raises(EngineMismatchError, match="none found here"):
        check_engine_compat(engine, "10.3.0", None, **kw)


def test_video_that_does_not_decode(ort_qa, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoDecodeError, match="bad.mp4"):
        ort_qa.answer(bad, "what is it?")
    with pytest.raises(VideoDecodeError, match="no such file"):
        ort_qa.answer(tmp_path / "missing.mp4", "what is it?")
    with pytest.raises(VideoDecodeError, match="<video bytes, 1900 bytes>"):
        ort_qa.answer(bad.read_bytes(), "what is it?")
    with pytest.raises(VideoInputError, match=r"video \(frames\): expected uint8"):
        ort_qa.answer(np.zeros((4, 8, 8, 3), np.float32), "what is it?")
    with pytest.raises(VideoInputError, match="got int"):
        ort_qa.answer(3, "what is it?")


def test_empty_or_non_text_questions(ort_qa, clips):
    frames = clips[0].frames
    with pytest.raises(QuestionError, match="question is empty"):
        ort_qa.answer(frames, "   ")
    with pytest.raises(QuestionError, match="question 2 is empty"):
        ort_qa.answer(frames, ["what?", ""])
    with pytest.raises(QuestionError, match="question 1: expected text"):
        ort_qa.answer(frames, [b"what", "x"])
    with pytest.raises(QuestionError, match="expected text or a list"):
        ort_qa.answer(frames, 42)
    with pytest.raises(QuestionError, match="empty list"):
        ort_qa.answer(frames, [])


def test_long_question_is_truncated_with_a_warning_naming_it(ort_qa, clips):
    long_q = "what " + "very " * 60 + "big shape is it?"
    with pytest.warns(UserWarning, match=r"question 'what very very .* truncated"):
        a = ort_qa.answer(clips[0].frames, long_q)
    assert isinstance(a.text, str)


def test_tensorrt_explain_refuses_with_a_pointer():
    from cotok_edge.runtime.backends import DecodeResult  # noqa: F401
    from cotok_edge.runtime.backends.tensorrt.runtime import TensorRTBackend
    from cotok_edge.runtime.errors import ExplainUnavailableError

    # The check does not need an engine: decode(maps=True) refuses before touching one.
    be = TensorRTBackend.__new__(TensorRTBackend)
    with pytest.raises(ExplainUnavailableError, match="use backend='onnxruntime' or backend="):
        be.decode({}, np.zeros((1, 4), np.int64), np.ones((1, 4), bool), maps=True)


# TensorRT (only where it is installed, with an engine built on this device) ------------
@pytest.fixture
def trt_bundle() -> str:  # pragma: no cover - needs a device
    import os

    root = os.environ.get("COTOK_TRT_BUNDLE")
    if not root:
        pytest.skip("set COTOK_TRT_BUNDLE to a bundle with an engine built on this device")
    return root


@needs_trt
def test_tensorrt_answers_like_onnxruntime(trt_bundle, clips):  # pragma: no cover - needs a device
    trt_qa = load(trt_bundle, backend="tensorrt")
    ort_ref = load(trt_bundle, backend="onnxruntime")
    for clip in clips:
        got = trt_qa.answer(clip.frames, clip.questions)
        want = ort_ref.answer(clip.frames, clip.questions)
        assert [a.text for a in got] == [a.text for a in want]


@needs_trt
def test_tensorrt_threads_give_the_serial_answers(trt_bundle, clips):  # pragma: no cover
    qa = load(trt_bundle, backend="tensorrt")
    serial = [qa.answer(c.frames, c.questions[0]).text for c in clips]
    out: list[list[str]] = []

    def work() -> None:
        out.append([qa.answer(c.frames, c.questions[0]).text for c in clips])

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert out == [serial] * 4


def test_bundle_format_constant_is_what_the_runtime_reads(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["format"] == BUNDLE_FORMAT


def test_load_picks_from_the_backend_registry(bundle, monkeypatch):
    """``auto`` walks the registry in order; a backend registered there is what loads."""
    from cotok_edge.runtime import backends

    assert tuple(backends.REGISTRY) == ("tensorrt", "onnxruntime", "torch")
    assert runtime_api.BACKENDS == tuple(backends.REGISTRY)

    class Unavailable(backends.OnnxRuntimeBackend):
        @classmethod
        def unavailable(cls):
            return "switched off in this test"

    reg = {"onnxruntime": Unavailable, "torch": backends.REGISTRY["torch"]}
    monkeypatch.setattr(runtime_api, "REGISTRY", reg)
    qa = load(bundle, verbose=False)
    assert qa.backend == "torch"
    assert "onnxruntime: switched off in this test" in qa.backend_note


def test_a_max_pooling_streams_share_is_the_norm_of_its_gated_max() -> None:
    from cotok_edge.runtime.explain import contributions, fold_maps

    rng = np.random.default_rng(0)
    v = {"a": rng.normal(size=(6, 4)), "b": rng.normal(size=(6, 4))}
    soft = rng.random((2, 3, 6))
    soft /= soft.sum(-1, keepdims=True)
    gates = rng.random((2, 3, 6))
    gates[:, :, 3:] = 0.0  # outside the tokens' time slice
    shares = contributions({"a": soft, "b": gates}, v, {"b": "max"})
    want_a = np.linalg.norm(np.einsum("ksn,nd->ksd", soft, v["a"]), axis=-1).sum()
    gated_max = (gates[:, :, :3, None] * v["b"][None, None, :3]).max(2)  # the slice only
    want_b = np.linalg.norm(gated_max, axis=-1).sum()
    assert shares["b"] == pytest.approx(want_b / (want_a + want_b))
    folded = fold_maps(gates, (1, 2, 3), "max")
    assert folded.sum() == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(folded.ravel(), gates.mean((0, 1)) / gates.mean((0, 1)).sum(),
                               rtol=1e-6)  # fmt: skip
