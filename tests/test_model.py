"""The reference model: shapes, gradients, conditioning, checkpoints, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch

from cotok_edge import CoTokConfig, CoTokVQA
from cotok_edge.model.config import PRESETS
from cotok_edge.model.cotokenizer import masked_mean


@pytest.fixture(scope="module")
def tiny() -> CoTokVQA:
    torch.manual_seed(0)
    return CoTokVQA(CoTokConfig.preset("tiny")).eval()


def _check_outputs(model: CoTokVQA, batch: int) -> None:
    cfg = model.config
    inputs = model.example_inputs(batch)
    out = model(**inputs, return_maps=True)
    assert out.loss is None
    assert out.logits.shape == (batch, 1, cfg.text.vocab_size)
    assert torch.isfinite(out.logits).all()
    if cfg.video_tokenizer == "tokenlearner":
        assert len(out.maps) == cfg.steps
        for step in out.maps:
            for name, (t, h, w) in model.feature_grids.items():
                a = step[name]
                tokens = cfg.video_tokens(name)
                assert a.shape == (batch, tokens, t * h * w)
                torch.testing.assert_close(a.sum(-1), torch.ones(batch, tokens))
    ids = model.generate(**inputs)
    assert ids.dtype == torch.long
    assert ids.shape[0] == batch and 1 <= ids.shape[1] <= cfg.text.max_answer_tokens


@pytest.mark.parametrize("preset", ["tiny", "edge"])
def test_shapes_small_presets(preset: str) -> None:
    torch.manual_seed(0)
    _check_outputs(CoTokVQA(CoTokConfig.preset(preset)).eval(), batch=2)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["paper", "baseline-3dresnet", "baseline-x3d"])
def test_shapes_large_presets(preset: str) -> None:
    torch.manual_seed(0)
    _check_outputs(CoTokVQA(CoTokConfig.preset(preset)).eval(), batch=1)


def test_teacher_forced_loss_and_first_greedy_token(tiny: CoTokVQA) -> None:
    inputs = tiny.example_inputs(2)
    answers = torch.tensor([[5, 6, tiny.config.text.eos_id, 0], [7, tiny.config.text.eos_id, 0, 0]])
    out = tiny(**inputs, answer_ids=answers)
    assert out.logits.shape == (2, 4, tiny.config.text.vocab_size)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    first = tiny(**inputs).logits[:, 0].argmax(-1)
    assert torch.equal(tiny.generate(**inputs)[:, 0], first)
    # Padding does not count: changing only padded positions' targets leaves the loss unchanged.
    padded = answers.clone()
    padded[1, 3] = 0
    assert torch.equal(tiny(**inputs, answer_ids=padded).loss, out.loss)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    model = CoTokVQA(CoTokConfig.preset("tiny")).train()
    inputs = model.example_inputs(2)
    answers = torch.tensor([[5, 6, 2], [7, 2, 0]])
    model(**inputs, answer_ids=answers).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_two_questions_give_different_maps(tiny: CoTokVQA) -> None:
    inputs = tiny.example_inputs(1)
    other = dict(inputs)
    other["question_ids"] = torch.flip(inputs["question_ids"], dims=[1]) + 1
    _, maps_a = tiny.generate(**inputs, return_maps=True)
    _, maps_b = tiny.generate(**other, return_maps=True)
    for step_a, step_b in zip(maps_a, maps_b, strict=True):
        for name in tiny.stream_names:
            # Random weights give near-uniform maps, so compare relative to their size.
            assert not torch.allclose(step_a[name], step_b[name], rtol=1e-3, atol=0), name


def test_maps_cost_nothing_unless_asked(tiny: CoTokVQA) -> None:
    inputs = tiny.example_inputs(1)
    assert tiny(**inputs).maps is None
    assert torch.equal(tiny(**inputs).logits, tiny(**inputs, return_maps=True).logits)


def test_save_load_round_trip_is_exact(tiny: CoTokVQA, tmp_path) -> None:
    tiny.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = CoTokVQA.from_pretrained(tmp_path)
    assert loaded.config == tiny.config
    for (k, a), (k2, b) in zip(tiny.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    inputs = tiny.example_inputs(2)
    assert torch.equal(tiny(**inputs).logits, loaded(**inputs).logits)


def test_from_pretrained_errors(tiny: CoTokVQA, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        CoTokVQA.from_pretrained(tmp_path)
    tiny.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["dim"] = 64
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match"):
        CoTokVQA.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "config.json").write_text(tiny.config.to_json())
    with pytest.raises(ValueError, match="model.safetensors is not readable"):
        CoTokVQA.from_pretrained(tmp_path)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_config_json_round_trip(preset: str, tmp_path) -> None:
    cfg = CoTokConfig.preset(preset)
    assert CoTokConfig.from_json(cfg.to_json()) == cfg
    cfg.to_json(tmp_path / "c.json")
    assert CoTokConfig.from_json(tmp_path / "c.json") == cfg


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="unknown preset 'papr'"):
        CoTokConfig.preset("papr")
    with pytest.raises(ValueError, match="unknown fields"):
        CoTokConfig.from_dict({**CoTokConfig.preset("tiny").to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="no 'streams'"):
        CoTokConfig.from_dict({})
    with pytest.raises(ValueError, match="CoTokConfig: .*'width'"):
        CoTokConfig.from_dict({"streams": [{"name": "s1", "frames": 8, "size": 64, "width": 3}]})
    single = CoTokConfig.preset("tiny").with_streams(["s3"])
    assert [s.name for s in single.streams] == ["s3"]
    data = CoTokConfig.preset("tiny").to_dict()
    with pytest.raises(ValueError, match="time_groups: 3 does not divide the 32 time steps"):
        CoTokConfig.from_dict({**data, "time_groups": 3})
    with pytest.raises(ValueError, match="steps: need at least 1, got 0"):
        CoTokConfig.from_dict({**data, "steps": 0})
    with pytest.raises(ValueError, match="tokens_per_stream and time_groups need at least 1"):
        CoTokConfig.from_dict({**data, "tokens_per_stream": 0})


# Bad input ----------------------------------------------------------------------


def test_stream_of_wrong_shape(tiny: CoTokVQA) -> None:
    inputs = tiny.example_inputs(1)
    inputs["s2"] = torch.zeros(1, 3, 8, 112, 112, dtype=torch.uint8)
    with pytest.raises(ValueError) as e:
        tiny(**inputs)
    msg = str(e.value)
    assert "'s2'" in msg and "[1, 3, 8, 112, 112]" in msg and "[1, 3, 16, 112, 112]" in msg


def test_stream_of_wrong_dtype(tiny: CoTokVQA) -> None:
    inputs = tiny.example_inputs(1)
    inputs["s1"] = inputs["s1"].to(torch.int32)
    with pytest.raises(ValueError, match=r"'s1'.*torch.int32.*\[1, 3, 32, 64, 64\].*uint8"):
        tiny(**inputs)


def test_missing_stream(tiny: CoTokVQA) -> None:
    inputs = tiny.example_inputs(1)
    del inputs["s3"]
    with pytest.raises(ValueError, match=r"expected exactly \['s1', 's2', 's3'\]"):
        tiny.generate(**inputs)


def test_question_over_the_limit(tiny: CoTokVQA) -> None:
    limit = tiny.config.text.max_question_tokens
    inputs = tiny.example_inputs(1, question_len=limit + 1)
    with pytest.raises(ValueError, match=rf"question_ids: got shape \[1, {limit + 1}\].*{limit}"):
        tiny(**inputs)


def test_empty_batch(tiny: CoTokVQA) -> None:
    inputs = tiny.example_inputs(1)
    inputs = {k: v[:0] for k, v in inputs.items()}
    with pytest.raises(ValueError, match=r"question_ids: empty batch \(shape \[0, L\]\)"):
        tiny(**inputs)


def test_mismatched_batch(tiny: CoTokVQA) -> None:
    inputs = tiny.example_inputs(2)
    inputs["s3"] = inputs["s3"][:1]
    with pytest.raises(ValueError, match=r"'s3': got shape \[1, 3, 8, 224, 224\], expected \[2,"):
        tiny(**inputs)


def test_questions_sharing_a_clip_match_separate_clips(tiny: CoTokVQA) -> None:
    clips = tiny.example_inputs(2)
    ids = torch.cat([clips["question_ids"], clips["question_ids"].flip(1)])  # 4 questions
    mask = torch.ones_like(ids, dtype=torch.bool)
    index = torch.tensor([0, 1, 1, 0])
    streams = {n: clips[n] for n in tiny.stream_names}
    shared = tiny.generate(question_ids=ids, question_mask=mask, clip_index=index, **streams)
    repeated = {n: v[index] for n, v in streams.items()}
    separate = tiny.generate(question_ids=ids, question_mask=mask, **repeated)
    assert torch.equal(shared, separate)
    with pytest.raises(ValueError, match=r"clip_index: values must lie in \[0, 2\)"):
        tiny(question_ids=ids, question_mask=mask, clip_index=index + 1, **streams)


def test_consecutive_questions_per_clip_take_the_shared_path(tiny: CoTokVQA) -> None:
    # Training batches ask Q consecutive questions per clip: the TokenLearner's clip part
    # then runs once per clip; loss and gradients must equal those of one clip per question.
    torch.manual_seed(1)
    model = CoTokVQA(CoTokConfig.preset("tiny")).train()
    clips = model.example_inputs(2)
    ids = torch.cat([clips["question_ids"], clips["question_ids"].flip(1)])
    mask = torch.ones_like(ids, dtype=torch.bool)
    answers = torch.randint(3, 50, (4, 3))
    index = torch.tensor([0, 0, 1, 1])
    streams = {n: clips[n] for n in model.stream_names}
    losses, grads = [], []
    for kwargs in ({"clip_index": index, **streams}, {n: v[index] for n, v in streams.items()}):
        model.zero_grad()
        loss = model(question_ids=ids, question_mask=mask, answer_ids=answers, **kwargs).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append(model.cotokenizer.tokenlearners["s1"].fc1.weight.grad.clone())
    # BatchNorm in training mode sees 2 clips in one case and 4 in the other: compare in eval.
    model.eval()
    with torch.no_grad():
        shared = model(question_ids=ids, question_mask=mask, answer_ids=answers,
                       clip_index=index, **streams).loss  # fmt: skip
        separate = model(question_ids=ids, question_mask=mask, answer_ids=answers,
                         **{n: v[index] for n, v in streams.items()}).loss  # fmt: skip
    torch.testing.assert_close(shared, separate)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def _check_maps_stay_in_their_slice(model: CoTokVQA) -> None:
    cfg = model.config
    _, maps = model.generate(**model.example_inputs(1), return_maps=True)
    for name, (t, h, w) in model.feature_grids.items():
        groups = cfg.time_groups_of(name)
        a = maps[0][name][0].reshape(groups, cfg.tokens_per_stream, t, h * w)
        per_slice = t // groups
        for g in range(groups):
            inside = a[g, :, g * per_slice : (g + 1) * per_slice]
            torch.testing.assert_close(inside.sum((-1, -2)), torch.ones(cfg.tokens_per_stream))
            assert a[g].sum() == pytest.approx(inside.sum().item())


def test_time_sliced_tokens_pool_only_their_slice(tiny: CoTokVQA) -> None:
    assert min(tiny.config.time_groups_of(n) for n in tiny.stream_names) > 1  # time is sliced
    _check_maps_stay_in_their_slice(tiny)


def test_a_stream_can_slice_time_its_own_way() -> None:
    # s1 sliced per frame (32 slices), the others by the model's G: each stream's maps
    # stay inside its own slices and the token count follows each stream's G.
    data = CoTokConfig.preset("tiny").to_dict()
    data["streams"][0]["time_groups"] = 32
    cfg = CoTokConfig.from_dict(json.loads(json.dumps(data)))
    assert cfg.time_groups_of("s1") == 32 and cfg.time_groups_of("s3") == cfg.time_groups
    assert cfg.video_tokens("s1") == 32 * cfg.tokens_per_stream
    torch.manual_seed(0)
    model = CoTokVQA(cfg).eval()
    total = sum(cfg.video_tokens(n) for n in model.stream_names)
    assert model.cotokenizer.video_pos.shape == (total, cfg.dim)
    _check_maps_stay_in_their_slice(model)
    data["streams"][0]["time_groups"] = 5
    with pytest.raises(ValueError, match="time_groups: 5 does not divide the 32 time steps"):
        CoTokConfig.from_dict(data)


def test_video_features_carry_their_space_time_position(tiny: CoTokVQA) -> None:
    # A TokenLearner token is a softmax-weighted sum over positions: without a position
    # embedding it could not tell where or when a feature occurred. Moving the same
    # features to other positions (reversing time) must change the tokens.
    cot = tiny.cotokenizer
    streams = tiny.config.streams

    def project(name: str, feats: torch.Tensor) -> torch.Tensor:
        zeros = {o.name: torch.zeros(1, o.out_channels, *o.feature_grid) for o in streams}
        return cot.project_video({**zeros, name: feats})[name]

    for s in streams:
        t, h, w = s.feature_grid
        feats = torch.randn(1, s.out_channels, t, h, w)
        proj = project(s.name, feats)
        # Layout: flattened (T, H, W) order, pos[t, h, w] = pos_t[t] + pos_h[h] + pos_w[w].
        plain = cot.video_proj[s.name](feats.flatten(2).transpose(1, 2))
        pos = cot.stream_pos[s.name]
        expected = pos.pos_t[:, None, None] + pos.pos_h[None, :, None] + pos.pos_w[None, None, :]
        torch.testing.assert_close((proj - plain)[0].reshape(t, h, w, -1), expected)
        cond = torch.randn(1, tiny.config.dim)
        z, _ = cot.tokenlearners[s.name](proj, cond)  # one slice: the whole clip
        z_flipped, _ = cot.tokenlearners[s.name](project(s.name, feats.flip(2)), cond)
        assert not torch.allclose(z, z_flipped, rtol=1e-3, atol=0), s.name


def test_the_config_and_the_stream_geometry_import_without_torch() -> None:
    # The device reads the config (and the sampler its streams) with no torch installed.
    script = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "torch":
                    raise ImportError(f"{name} is blocked in this test")
        sys.meta_path.insert(0, Block())
        from cotok_edge.model import CoTokConfig
        from cotok_edge.data.video import STREAMS
        from cotok_edge.runtime.explain import feature_grid
        cfg = CoTokConfig.preset("tiny")
        assert STREAMS == tuple((s.name, s.frames, s.size) for s in cfg.streams)
        assert feature_grid(cfg.to_dict()["streams"][2]) == cfg.streams[2].feature_grid
        print("torch" in sys.modules)
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_mean_pooling_control_sees_only_each_slices_average() -> None:
    # The control for the TokenLearner: one token per time slice, its plain mean. Shuffling
    # positions inside a slice must leave the answer memory unchanged; moving features
    # to another slice must not.
    torch.manual_seed(0)
    data = CoTokConfig.preset("tiny").to_dict()
    data["video_tokenizer"] = "mean"
    cfg = CoTokConfig.from_dict(data)
    assert all(cfg.video_tokens(s.name) == cfg.time_groups for s in cfg.streams)
    model = CoTokVQA(cfg).eval()
    _check_outputs(model, batch=2)
    cot = model.cotokenizer
    video = {s.name: torch.randn(2, math.prod(s.feature_grid), cfg.dim) for s in cfg.streams}
    question = torch.randn(2, 5, cfg.text.dim)
    mask = torch.ones(2, 5, dtype=torch.bool)

    def memory(v: dict[str, torch.Tensor]) -> torch.Tensor:
        return cot(v, question, mask)[0].tokens

    base = memory(video)
    shuffled, moved = {}, {}
    for s in cfg.streams:
        g, x = cfg.time_groups_of(s.name), video[s.name]
        slices = x.reshape(2, g, -1, cfg.dim)
        perm = torch.randperm(slices.shape[2])
        shuffled[s.name] = slices[:, :, perm].reshape(x.shape)
        moved[s.name] = slices.roll(1, dims=1).reshape(x.shape)
    torch.testing.assert_close(memory(shuffled), base)
    assert not torch.allclose(memory(moved), base, atol=1e-3)


@pytest.mark.parametrize("backbone", ["r2plus1d", "resnet3d", "x3d"])
def test_zero_init_residual_starts_every_block_as_its_shortcut(backbone: str) -> None:
    from cotok_edge.model.config import StreamConfig
    from cotok_edge.model.streams import StreamBackbone

    torch.manual_seed(0)
    cfg = StreamConfig("s", 4, 32, backbone=backbone, stem_channels=8, channels=(8, 16),
                       blocks=(2, 1), spatial_strides=(1, 2), temporal_strides=(1, 1))  # fmt: skip
    net = StreamBackbone(cfg).eval()
    blocks = [b for stage in net.stages for b in stage]
    x = torch.randn(1, 8, 4, 8, 8)
    act = blocks[0].out_act if backbone == "x3d" else blocks[0].act
    assert not torch.allclose(blocks[0](x), act(blocks[0].shortcut(x)))
    net.zero_init_residual()
    torch.testing.assert_close(blocks[0](x), act(blocks[0].shortcut(x)))
    # One zeroed scale per block (a BatchNorm's weight), nothing else.
    zeroed = [n for n, p in net.named_parameters() if n.endswith(".weight") and not p.any()]
    assert len(zeroed) == len(blocks)


@pytest.mark.parametrize("size", [30, 31, 64])
@pytest.mark.parametrize("stride", [2, 4])
def test_pool_stem_gives_the_grid_the_config_promises(size: int, stride: int) -> None:
    from cotok_edge.model.config import StreamConfig
    from cotok_edge.model.streams import StreamBackbone

    cfg = StreamConfig("s", 2, size, stem="pool", stem_channels=8, stem_stride=stride,
                       channels=(8, 16), blocks=(1, 1), spatial_strides=(1, 2),
                       temporal_strides=(1, 1))  # fmt: skip
    net = StreamBackbone(cfg).eval()
    out = net(torch.randn(1, 3, 2, size, size))
    assert tuple(out.shape[2:]) == cfg.feature_grid
    assert out.shape[1] == cfg.out_channels
    # log2(stride) levels of 3x3 convolution + 2x2 max-pool, widths doubling to stem_channels.
    convs = [m for m in net.stem.modules() if isinstance(m, torch.nn.Conv3d)]
    pools = [m for m in net.stem.modules() if isinstance(m, torch.nn.MaxPool3d)]
    assert [c.kernel_size for c in convs] == [(1, 3, 3)] * len(pools)
    assert [c.out_channels for c in convs] == [8 >> i for i in reversed(range(len(pools)))]
    assert 2 ** len(pools) == stride


def test_pool_stem_config_checks_and_round_trip() -> None:
    data = CoTokConfig.preset("tiny").to_dict()
    data["streams"][2]["stem"] = "pool"
    cfg = CoTokConfig.from_dict(data)
    assert CoTokConfig.from_json(cfg.to_json()) == cfg
    assert cfg.streams[2].feature_grid == CoTokConfig.preset("tiny").streams[2].feature_grid
    data["streams"][2]["stem_stride"] = 3
    with pytest.raises(ValueError, match="stream 's3': the pool stem needs a stem_stride that is"):
        CoTokConfig.from_dict(data)
    data["streams"][2]["stem"] = "patchify"
    with pytest.raises(ValueError, match="stream 's3': stem 'patchify' is not one of"):
        CoTokConfig.from_dict(data)


def test_reslice_time_keeps_the_weights_and_spreads_slot_embeddings(tiny: CoTokVQA) -> None:
    from cotok_edge.model.reslice import reslice_time

    cfg = tiny.config
    g_old, s_tok = cfg.time_groups_of("s1"), cfg.tokens_per_stream
    new = reslice_time(tiny, {"s1": 32})
    assert new.config.time_groups_of("s1") == 32
    assert new.config.time_groups_of("s2") == cfg.time_groups_of("s2")
    old_w, new_w = tiny.state_dict(), new.state_dict()
    for k in old_w:
        if k != "cotokenizer.video_pos":
            assert torch.equal(old_w[k], new_w[k]), k
    old_pos, new_pos = old_w["cotokenizer.video_pos"], new_w["cotokenizer.video_pos"]
    per_old = 32 // g_old
    for frame in range(32):  # frame f's slots copy the old slice that held frame f
        for k in range(s_tok):
            torch.testing.assert_close(
                new_pos[frame * s_tok + k], old_pos[(frame // per_old) * s_tok + k]
            )
    rest = old_pos.shape[0] - g_old * s_tok  # the other streams' rows, unchanged
    torch.testing.assert_close(new_pos[-rest:], old_pos[-rest:])
    same = reslice_time(tiny, {})
    inputs = tiny.example_inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(same(**inputs).logits, tiny(**inputs).logits)
    with pytest.raises(ValueError, match=r"no stream named \['s9'\]"):
        reslice_time(tiny, {"s9": 2})


def test_stage_strides_make_up_what_the_stem_does_not() -> None:
    from cotok_edge.model.config import stage_strides

    assert stage_strides(16, 4) == (1, 2, 2, 1)
    assert stage_strides(16, 2) == (1, 2, 2, 2)
    assert stage_strides(8, 4) == (1, 2, 1, 1)
    with pytest.raises(ValueError, match="does not divide"):
        stage_strides(16, 3)
    with pytest.raises(ValueError, match="cannot halve"):
        stage_strides(64, 1)


def test_pixel_skip_hands_each_cell_its_mean_colour(tiny: CoTokVQA) -> None:
    from cotok_edge.model.pixel_skip import with_pixel_skip

    torch.manual_seed(1)
    skip = with_pixel_skip(tiny).eval()
    assert skip.config.pixel_skip and not tiny.config.pixel_skip
    inputs = tiny.example_inputs(2)
    for name in tiny.stream_names:
        inputs[name] = torch.randint(0, 256, inputs[name].shape, dtype=torch.uint8)
    with torch.no_grad():
        # Zero-initialised columns: the carried-over model answers exactly as before.
        torch.testing.assert_close(skip(**inputs).logits, tiny(**inputs).logits, rtol=0, atol=0)
        for name, (t, h, w) in tiny.feature_grids.items():
            frames = inputs[name]
            feats = skip.stream_features(name, frames)
            torch.testing.assert_close(feats[:, :-3], tiny.backbones[name](tiny.normalize(frames)))
            # Cell (i, j) of time step k averages its own block of pixels, computed here by hand.
            x = tiny.normalize(frames)
            b, c, tt, hh, ww = x.shape
            blocks = x.reshape(b, c, t, tt // t, h, hh // h, w, ww // w)
            torch.testing.assert_close(feats[:, -3:], blocks.mean((3, 5, 7)))
    with pytest.raises(ValueError, match="already"):
        with_pixel_skip(skip)
    # A flash in one frame and corner reaches exactly that cell's features.
    frames = torch.zeros_like(inputs["s1"])
    lit = frames.clone()
    lit[:, 0, 5, :8, :8] = 255  # red, frame 5, the top-left 8x8 pixels: cell (5, 0, 0)
    with torch.no_grad():
        diff = (skip.stream_features("s1", lit) - skip.stream_features("s1", frames))[:, -3:]
    changed = diff.abs().amax((0, 1)).nonzero().tolist()
    assert changed == [[5, 0, 0]]


def _max_token_model() -> CoTokVQA:
    data = CoTokConfig.preset("tiny").to_dict()
    data["max_tokens"] = True
    torch.manual_seed(0)
    return CoTokVQA(CoTokConfig.from_dict(data)).eval()


def test_max_tokens_hold_each_slices_max_at_full_strength() -> None:
    model = _max_token_model()
    cfg, cot = model.config, model.cotokenizer
    groups = [cfg.time_groups_of(n) for n in model.stream_names]
    assert cfg.max_video_tokens() == sum(groups)
    learnt = sum(cfg.video_tokens(n) for n in model.stream_names)
    assert cot.video_pos.shape == (learnt + sum(groups), cfg.dim)
    _check_outputs(model, batch=2)
    torch.manual_seed(1)
    video = {s.name: torch.randn(2, math.prod(s.feature_grid), cfg.dim) for s in cfg.streams}
    base = cot.max_tokens(video, batch=2)
    assert base.shape == (2, sum(groups), cfg.dim)
    # One position of one slice of s3 lights up: its slice's token carries the value as is
    # (a mean over the slice's 196 positions would carry 1/196th of it), no other token moves.
    n3 = video["s3"].shape[1] // groups[2]
    spiked = {k: v.clone() for k, v in video.items()}
    spiked["s3"][1, 5 * n3 + 17, 3] = 100.0
    changed = (cot.max_tokens(spiked, batch=2) != base).nonzero().tolist()
    slot = groups[0] + groups[1] + 5
    assert changed == [[1, slot, 3]]
    assert cot.max_tokens(spiked, batch=2)[1, slot, 3] == 100.0
    # Per clip (C rows) for B = 2C questions: each clip's tokens serve its consecutive questions.
    torch.testing.assert_close(cot.max_tokens(video, batch=4), base.repeat_interleave(2, 0))


def _check_shared_clip_path(model: CoTokVQA) -> None:
    """Two questions on each of two clips: the per-clip path gives the per-question logits."""
    clips = model.example_inputs(2)
    ids = torch.cat([clips["question_ids"], clips["question_ids"].flip(1)])
    mask = torch.ones_like(ids, dtype=torch.bool)
    index = torch.tensor([0, 0, 1, 1])  # consecutive: the TokenLearner's shared path
    streams = {n: clips[n] for n in model.stream_names}
    with torch.no_grad():
        shared = model(question_ids=ids, question_mask=mask, clip_index=index, **streams)
        separate = model(
            question_ids=ids, question_mask=mask, **{n: v[index] for n, v in streams.items()}
        )
    torch.testing.assert_close(shared.logits, separate.logits)


def test_max_tokens_on_the_shared_clip_path_match_separate_clips() -> None:
    _check_shared_clip_path(_max_token_model())


def test_max_tokens_need_time_slices() -> None:
    data = CoTokConfig.preset("tiny").to_dict()
    data.update(max_tokens=True, video_tokenizer="all")
    with pytest.raises(ValueError, match="max_tokens: needs time slices"):
        CoTokConfig.from_dict(data)
    data["video_tokenizer"] = "mean"  # the control: its slice means and the maxes
    cfg = CoTokConfig.from_dict(data)
    assert CoTokConfig.from_json(cfg.to_json()) == cfg
    _check_outputs(CoTokVQA(cfg).eval(), batch=1)


def test_with_max_tokens_keeps_every_weight_and_reslices(tiny: CoTokVQA) -> None:
    from cotok_edge.model.max_tokens import with_max_tokens
    from cotok_edge.model.reslice import reslice_time

    new = with_max_tokens(tiny)
    assert new.config.max_tokens and not tiny.config.max_tokens
    old_w, new_w = tiny.state_dict(), new.state_dict()
    for k in old_w:
        if k != "cotokenizer.video_pos":
            assert torch.equal(old_w[k], new_w[k]), k
    old_pos, new_pos = old_w["cotokenizer.video_pos"], new_w["cotokenizer.video_pos"]
    rows = old_pos.shape[0]
    assert new_pos.shape[0] == rows + new.config.max_video_tokens()
    assert torch.equal(new_pos[:rows], old_pos)
    with pytest.raises(ValueError, match="has max tokens already"):
        with_max_tokens(new)
    # Re-slicing s1 into 32 slices: each frame's max token slot copies its old slice's.
    cut = reslice_time(new, {"s1": 32})
    pos = cut.state_dict()["cotokenizer.video_pos"]
    learnt = sum(cut.config.video_tokens(n) for n in cut.stream_names)
    g_old = tiny.config.time_groups_of("s1")
    for frame in range(32):
        assert torch.equal(pos[learnt + frame], new_pos[rows + frame // (32 // g_old)])
    assert torch.equal(pos[learnt + 32 :], new_pos[rows + g_old :])


def test_max_pool_tokenlearner_gates_and_takes_the_max() -> None:
    from cotok_edge.model.tokenlearner import TokenLearner, tokenlearner_logits

    torch.manual_seed(0)
    tl = TokenLearner(16, 2, 8, 16, pool="max").eval()
    x, cond = torch.randn(3, 10, 16), torch.randn(3, 16)
    z, a = tl(x, cond, return_maps=True)
    gates = torch.sigmoid(tokenlearner_logits(x, tl.cond_proj(cond), tl.weights()))
    torch.testing.assert_close(a, gates)
    for b in range(3):
        for s in range(2):
            want = torch.stack([gates[b, s, n] * x[b, n] for n in range(10)]).amax(0)
            torch.testing.assert_close(z[b, s], want)
    # One strong position shows in every token at its gate's strength, not at a 1/N share.
    spiked = x.clone()
    spiked[1, 4, 7] = 1e3
    z2, a2 = tl(spiked, cond, return_maps=True)
    torch.testing.assert_close(z2[1, :, 7], 1e3 * a2[1, :, 4])
    # The per-clip path for Q questions gives the same tokens as one call per question.
    xs = x[:1].reshape(1, 2, 5, 16)  # one clip, 2 time slices of 5 positions
    shared, _ = tl.pool_questions(xs, tl.clip_hidden(xs), cond[None])  # [1, 3, 2, S, 16]
    for q in range(3):
        for g in range(2):
            single, _ = tl(xs[:, g], cond[q : q + 1])
            torch.testing.assert_close(shared[0, q, g], single[0])
    with pytest.raises(ValueError, match="pool 'mean' is not one of"):
        TokenLearner(16, 2, pool="mean")


def test_a_max_pool_stream_config_round_trips_and_matches_on_the_shared_path() -> None:
    data = CoTokConfig.preset("tiny").to_dict()
    data["streams"][2]["token_pool"] = "max"
    cfg = CoTokConfig.from_dict(data)
    assert CoTokConfig.from_json(cfg.to_json()) == cfg
    torch.manual_seed(0)
    model = CoTokVQA(cfg).eval()
    assert model.cotokenizer.tokenlearners["s3"].pool == "max"
    assert model.cotokenizer.tokenlearners["s1"].pool == "softmax"
    _check_shared_clip_path(model)
    data["streams"][2]["token_pool"] = "mean"
    with pytest.raises(ValueError, match="stream 's3': token_pool 'mean' is not one of"):
        CoTokConfig.from_dict(data)


def _words_model() -> CoTokVQA:
    data = CoTokConfig.preset("tiny").to_dict()
    data["streams"][2]["token_condition"] = "words"
    torch.manual_seed(0)
    return CoTokVQA(CoTokConfig.from_dict(data)).eval()


def test_a_words_conditioned_stream_pools_by_the_question_word_embeddings() -> None:
    model = _words_model()
    cfg, cot = model.config, model.cotokenizer
    assert CoTokConfig.from_json(cfg.to_json()) == cfg and cfg.word_conditioned()
    assert cot.word_proj is not None
    inputs = model.example_inputs(2)
    ids, mask = inputs["question_ids"], inputs["question_mask"].bool()
    with torch.no_grad():
        video = model.encode_video({n: inputs[n] for n in model.stream_names})
        _, maps = model.joint_memory(video, ids, mask, return_maps=True)
        # s3's maps at every step are those of the mean word embedding, projected.
        words = cot.word_proj(masked_mean(model.text_embed(ids), mask))
        want = cot._stream_tokens("s3", video["s3"], words, None, True)[1]
        for step_maps in maps:
            torch.testing.assert_close(step_maps["s3"], want)
        # s1's maps follow c_{k-1}: they differ from step to step.
        assert not torch.allclose(maps[0]["s1"], maps[1]["s1"])
        # The encoder alone reaching s3: change what it makes of the question, keep the
        # words, and s3's maps stay; s1's move.
        state = cot.start(model.encode_question(ids, mask) + 1.0, mask, model.text_embed(ids))
        _, moved_maps = cot.step(0, video, state, ids.shape[1], return_maps=True)
        torch.testing.assert_close(moved_maps["s3"], want)
        assert not torch.allclose(moved_maps["s1"], maps[0]["s1"])
    _check_shared_clip_path(model)
    from cotok_edge.flops import model_budget  # counts through start() and step() itself

    assert model_budget(model).components["text encoder"] > 0
    with pytest.raises(ValueError, match="pass the question's word embeddings"):
        cot.start(model.encode_question(ids, mask), mask)


def test_token_condition_is_checked() -> None:
    data = CoTokConfig.preset("tiny").to_dict()
    data["streams"][2]["token_condition"] = "colour"
    with pytest.raises(ValueError, match="stream 's3': token_condition 'colour' is not one of"):
        CoTokConfig.from_dict(data)
    data["streams"][2]["token_condition"] = "words"
    data["video_tokenizer"] = "mean"
    with pytest.raises(ValueError, match="video_tokenizer 'mean' has none"):
        CoTokConfig.from_dict(data)


def test_with_token_conditions_adds_and_drops_the_word_projection(tiny: CoTokVQA) -> None:
    from cotok_edge.model.token_condition import with_token_conditions

    words = with_token_conditions(tiny, {"s3": "words"})
    assert [s.token_condition for s in words.config.streams] == ["state", "state", "words"]
    old, new = tiny.state_dict(), words.state_dict()
    assert set(new) - set(old) == {"cotokenizer.word_proj.weight", "cotokenizer.word_proj.bias"}
    for k in old:
        assert torch.equal(old[k], new[k]), k
    back = with_token_conditions(words, {"s3": "state"})
    assert back.cotokenizer.word_proj is None and set(back.state_dict()) == set(old)
    inputs = tiny.example_inputs(1)
    with torch.no_grad():
        torch.testing.assert_close(back(**inputs).logits, tiny(**inputs).logits)
    with pytest.raises(ValueError, match="no stream 's9'"):
        with_token_conditions(tiny, {"s9": "words"})
    with pytest.raises(ValueError, match="condition 'colour' is not one of"):
        with_token_conditions(tiny, {"s3": "colour"})
