"""One stream's backbone taken from another checkpoint (``--init-backbone``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cotok_edge.model import CoTokConfig, CoTokVQA
from cotok_edge.model.transplant import transplant_backbone


def _model(seed: int, preset: str = "tiny") -> CoTokVQA:
    torch.manual_seed(seed)
    return CoTokVQA(CoTokConfig.preset(preset))


@pytest.fixture(scope="module")
def donor(tmp_path_factory: pytest.TempPathFactory) -> tuple[CoTokVQA, Path]:
    model = _model(1)
    for m in model.modules():  # running statistics must travel with the weights
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-1, 1)
    folder = tmp_path_factory.mktemp("donor")
    model.save_pretrained(folder)
    return model, folder


def test_only_the_named_backbone_changes(donor: tuple[CoTokVQA, Path]) -> None:
    source, folder = donor
    model = _model(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copied = transplant_backbone(model, "s2", folder)

    after, theirs = model.state_dict(), source.state_dict()
    moved = [k for k in after if k.startswith("backbones.s2.")]
    assert copied == len(moved) > 0
    for k in after:
        if k.startswith("backbones.s2."):
            assert torch.equal(after[k], theirs[k]), k
        else:
            assert torch.equal(after[k], before[k]), k
    assert any(not torch.equal(before[k], theirs[k]) for k in moved)


def test_a_backbone_of_another_shape_or_name_is_refused(
    donor: tuple[CoTokVQA, Path], tmp_path: Path
) -> None:
    _, folder = donor
    edge = _model(0, "edge")
    with pytest.raises(ValueError, match="differs"):
        transplant_backbone(edge, "s1", folder)
    with pytest.raises(ValueError, match="streams here"):
        transplant_backbone(_model(0), "s4", folder)
    with pytest.raises(ValueError, match="missing config.json"):
        transplant_backbone(_model(0), "s1", tmp_path)


def test_a_backbone_built_otherwise_with_the_same_output_is_adopted(tmp_path: Path) -> None:
    data = CoTokConfig.preset("tiny").to_dict()
    data["streams"][2].update(stem="pool", stem_channels=16)
    torch.manual_seed(3)
    pooled = CoTokVQA(CoTokConfig.from_dict(data))
    pooled.save_pretrained(tmp_path / "pooled")
    model = _model(0)
    groups = model.config.time_groups_of("s3")
    transplant_backbone(model, "s3", tmp_path / "pooled")

    s3 = model.config.streams[2]
    assert (s3.stem, s3.stem_channels) == ("pool", 16)
    assert model.config.time_groups_of("s3") == groups
    for k, v in pooled.backbones["s3"].state_dict().items():
        assert torch.equal(model.backbones["s3"].state_dict()[k], v), k
    # The adopted configuration is what the checkpoint says: it reloads to the same numbers.
    model.eval().save_pretrained(tmp_path / "mixed")
    again = CoTokVQA.from_pretrained(tmp_path / "mixed").eval()
    streams = {
        s.name: torch.randint(0, 256, (1, 3, s.frames, s.size, s.size), dtype=torch.uint8)
        for s in model.config.streams
    }
    with torch.no_grad():
        feats = model.encode_video(streams)
        for name, x in again.encode_video(streams).items():
            torch.testing.assert_close(x, feats[name])


def test_the_projection_goes_along_when_asked(donor: tuple[CoTokVQA, Path], tmp_path: Path) -> None:
    source, folder = donor
    model = _model(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copied = transplant_backbone(model, "s2", folder, projection=True)
    after, theirs = model.state_dict(), source.state_dict()
    moved = [k for k in after if k.startswith(("backbones.s2.", "cotokenizer.video_proj.s2."))]
    assert copied == len(moved) and "cotokenizer.video_proj.s2.weight" in moved
    for k in after:
        assert torch.equal(after[k], theirs[k] if k in moved else before[k]), k
    # A projection of another input width (pooled pixels on one side only) is refused.
    data = CoTokConfig.preset("tiny").to_dict()
    data["pixel_skip"] = True
    torch.manual_seed(2)
    CoTokVQA(CoTokConfig.from_dict(data)).save_pretrained(tmp_path / "skip")
    with pytest.raises(ValueError, match=r"pixel_skip there True, here False"):
        transplant_backbone(_model(0), "s2", tmp_path / "skip", projection=True)


def test_the_receiver_keeps_its_token_pooling(donor: tuple[CoTokVQA, Path]) -> None:
    _, folder = donor
    data = CoTokConfig.preset("tiny").to_dict()
    data["streams"][2]["token_pool"] = "max"
    torch.manual_seed(0)
    model = CoTokVQA(CoTokConfig.from_dict(data))
    transplant_backbone(model, "s3", folder)
    assert model.config.streams[2].token_pool == "max"
