"""INT8 quantization with NVIDIA ModelOpt: calibration (PTQ), then a short QAT fine-tune.

INT8 is the only integer precision Jetson Orin runs (no FP8 on sm_87), so it is the
only one here. The flow, all of it on the CPU with fake quantization where no GPU is
present:

1. :func:`quantize_ptq`: ``mtq.quantize`` inserts ``TensorQuantizer`` s around every
   ``nn.Linear`` and ``nn.Conv3d`` (weights per output channel, activations per tensor,
   symmetric, max calibration) and calibrates the activation ranges on real clips.
2. :func:`qat_finetune`: a few optimizer steps with a small learning rate through the
   fake quantizers (straight-through estimator), which moves the weights to where
   rounding hurts least.
3. :func:`save_quantized` / :func:`load_quantized`: ModelOpt's own ``mto.save`` /
   ``mto.restore``: a quantized model is not a plain state dict (its modules were
   replaced), so it is stored with the ModelOpt state that rebuilds them. Loading passes
   ``weights_only=True``: the file is read with torch's restricted loader, never a full
   unpickler.

Exported with ``torch.onnx.export(dynamo=False)`` (:mod:`.onnx`), the quantizers become
``QuantizeLinear``/``DequantizeLinear`` pairs: explicit quantization that TensorRT 10.3
(with the INT8 flag) and 11.x (strongly typed) build from, and that ONNX Runtime runs.

Kept in higher precision, on purpose (:data:`KEEP_FLOAT`): every TokenLearner (its
softmax maps decide which positions become tokens, and a few quantization steps of
error there move whole tokens), the embeddings, the norms and the attention matmuls
(computed by ``scaled_dot_product_attention``, which ModelOpt leaves alone), and the
answer head (tied to the answer embedding, computed functionally). The backbones' batch
norms are folded by TensorRT into the convolutions they follow.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from cotok_edge.model.config import CoTokConfig
from cotok_edge.model.vqa import CoTokVQA

# Module-name patterns (fnmatch, as ModelOpt matches quantizer names) left unquantized.
KEEP_FLOAT = (
    "*tokenlearners*",
    "*text_embed*",
    "*answer_embed*",
    "*pos_bias*",
    "*norm*",
)

Batch = Mapping[str, Tensor]


def import_modelopt() -> tuple[Any, Any]:
    """``(modelopt.torch.quantization, modelopt.torch.opt)``, or ImportError saying how."""
    try:
        with warnings.catch_warnings():
            # ModelOpt warns (once, when modelopt.torch.export is first imported, which
            # quantize does) that Hugging Face modules cannot be exported without
            # transformers; this model has none, so import it here, quietly.
            warnings.filterwarnings("ignore", message=".*transformers package.*")
            import modelopt.torch.export  # noqa: F401
            import modelopt.torch.opt as mto
            import modelopt.torch.quantization as mtq
    except ImportError as e:
        raise ImportError(
            "INT8 needs NVIDIA ModelOpt: pip install 'cotok-edge[export]' "
            f"(nvidia-modelopt); import failed with: {e}"
        ) from e
    return mtq, mto


def int8_config() -> dict[str, Any]:
    """ModelOpt's ``INT8_DEFAULT_CFG`` with :data:`KEEP_FLOAT` disabled.

    ``quant_cfg`` is a list of rules in ModelOpt >= 0.4x and a pattern-keyed dict in older
    releases; both forms are handled so the pinned lower bound keeps working.
    """
    mtq, _ = import_modelopt()
    cfg = copy.deepcopy(mtq.INT8_DEFAULT_CFG)
    rules = cfg["quant_cfg"]
    for pattern in KEEP_FLOAT:
        if isinstance(rules, list):
            rules.append({"quantizer_name": f"{pattern}", "enable": False})
        else:
            rules[f"{pattern}"] = {"enable": False}
    return cfg


def teacher_forced(model: CoTokVQA, batch: Batch) -> Tensor:
    """The loss of one batch (streams, questions, answers, ``clip_index``): what QAT minimises
    and what calibration runs, so the answer decoder sees real answer prefixes."""
    inputs = {k: v for k, v in batch.items() if k != "category_ids"}
    out = model(**inputs)
    if out.loss is None:
        raise ValueError("QAT/calibration batches need answer_ids")
    return out.loss


def quantize_ptq(
    model: CoTokVQA,
    batches: Iterable[Batch],
    *,
    num_batches: int | None = None,
    progress: bool = True,
) -> CoTokVQA:
    """Insert INT8 fake quantizers into ``model`` (in place) and calibrate them on ``batches``.

    Returns the quantized model (ModelOpt converts in place and returns it too).
    """
    mtq, _ = import_modelopt()
    batches = list(batches) if num_batches is None else batches

    def forward_loop(m: torch.nn.Module) -> None:
        m.eval()
        with torch.no_grad():
            for batch in tqdm(
                batches, total=num_batches, desc="INT8 calibration", unit="batch",
                disable=not progress,
            ):  # fmt: skip
                teacher_forced(m, batch)  # type: ignore[arg-type]

    model.eval()
    return mtq.quantize(model, int8_config(), forward_loop=forward_loop)


def qat_finetune(
    model: CoTokVQA,
    next_batch: Callable[[int], Batch],
    steps: int,
    *,
    lr: float = 1e-5,
    warmup: int = 5,
    clip_grad: float = 1.0,
    progress: bool = True,
) -> list[float]:
    """``steps`` AdamW steps through the fake quantizers; returns the loss per step.

    ``next_batch(step)`` gives the step's batch. A short linear warm-up then cosine decay
    to zero: the weights should move only as far as rounding asks.
    """
    if steps < 0:
        raise ValueError(f"qat steps must be >= 0, got {steps}")
    losses: list[float] = []
    if steps == 0:
        return losses
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    train_keeping_batchnorm_statistics(model)
    bar = tqdm(range(steps), desc="QAT fine-tune", unit="step", disable=not progress)
    for step in bar:
        if step < warmup:
            scale = (step + 1) / warmup
        else:
            scale = 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        loss = teacher_forced(model, next_batch(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip_grad)
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def train_keeping_batchnorm_statistics(model: torch.nn.Module) -> None:
    """Training mode for everything but the BatchNorms, which keep their running statistics.

    In training mode a BatchNorm normalises with the statistics of the batch in hand and
    moves its running ones towards them; over a few QAT steps of a few clips that both
    changes what the fake quantizers see from step to step and leaves the exported
    (folded) statistics fitted to those clips, not to the data the float model saw. The
    weights should move only as far as rounding asks, so the statistics stay put.
    """
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def quantizer_summary(model: torch.nn.Module) -> dict[str, int]:
    """How many weight and input quantizers are enabled, and how many are off."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    counts = {"weight": 0, "input": 0, "disabled": 0}
    for name, m in model.named_modules():
        if not isinstance(m, TensorQuantizer):
            continue
        if not m.is_enabled:
            counts["disabled"] += 1
        elif name.endswith("weight_quantizer"):
            counts["weight"] += 1
        elif name.endswith("input_quantizer"):
            counts["input"] += 1
    return counts


def save_quantized(model: CoTokVQA, path: str | Path) -> Path:
    """``mto.save`` of the quantized model (ModelOpt state + weights), config beside it."""
    _, mto = import_modelopt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    mto.save(model, tmp)
    tmp.replace(path)
    model.config.to_json(path.with_suffix(".config.json"))
    return path


def load_quantized(path: str | Path, config: CoTokConfig | None = None) -> CoTokVQA:
    """Rebuild a model saved by :func:`save_quantized` (``mto.restore``, restricted loader)."""
    _, mto = import_modelopt()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"quantized checkpoint {path}: no such file")
    if config is None:
        cfg_file = path.with_suffix(".config.json")
        if not cfg_file.is_file():
            raise FileNotFoundError(f"quantized checkpoint {path}: no {cfg_file.name} beside it")
        config = CoTokConfig.from_json(cfg_file)
    model = mto.restore(CoTokVQA(config), str(path), weights_only=True)
    return model.eval()


def cycle(batches: list[Batch]) -> Callable[[int], Batch]:
    """``next_batch`` over a fixed list, in order, wrapping around."""
    if not batches:
        raise ValueError("no batches to fine-tune on")
    return lambda step: batches[step % len(batches)]
