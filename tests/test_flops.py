"""The MAC counter against hand counts, and the presets against their budgets."""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.flops import main as flops_main
from cotok_edge import CoTokConfig, CoTokVQA
from cotok_edge.flops import count_macs, model_budget
from cotok_edge.model.text import Attention


def test_conv3d_hand_count() -> None:
    conv = nn.Conv3d(3, 8, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2))
    x = torch.randn(2, 3, 4, 16, 16)
    out_positions = 2 * 4 * 8 * 8  # batch x T x H x W of the output
    assert count_macs(lambda: conv(x)) == out_positions * 8 * 3 * 3 * 5 * 5


def test_linear_hand_count() -> None:
    fc = nn.Linear(24, 40)
    x = torch.randn(3, 7, 24)
    assert count_macs(lambda: fc(x)) == 3 * 7 * 24 * 40


def test_counter_sees_attention() -> None:
    b, length, dim = 2, 10, 32
    attn = Attention(dim, heads=4).eval()
    x = torch.randn(b, length, dim)
    mask = torch.zeros(1, 1, length, length)
    projections = 4 * b * length * dim * dim
    scores_and_mix = 2 * b * length * length * dim
    assert count_macs(lambda: attn(x, bias=mask)) == projections + scores_and_mix
    assert count_macs(lambda: attn(x)) == projections + scores_and_mix


def test_components_add_up_to_the_whole_model() -> None:
    torch.manual_seed(0)
    model = CoTokVQA(CoTokConfig.preset("tiny")).eval()
    budget = model_budget(model, question_len=16)
    inputs = model.example_inputs(1, question_len=16)
    answers = torch.full((1, 8), 5)
    assert count_macs(lambda: model(**inputs, answer_ids=answers)) == budget.total


def test_paper_and_edge_meet_their_budgets(capsys) -> None:
    assert flops_main(["--json", "--presets", "paper", "edge"]) == 0
    import json

    totals = {
        p: v["total_gmacs"] for p, v in json.loads(capsys.readouterr().out)["presets"].items()
    }
    assert 55.0 <= totals["paper"] <= 67.0
    assert totals["edge"] <= 20.0
