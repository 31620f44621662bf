"""Training checkpoints that resume exactly, without pickle.

A training checkpoint is a folder::

    config.json  model.safetensors  tokenizer.json    (a loadable model: CoTokVQA.from_pretrained)
    optimizer.safetensors                              (AdamW moments, per parameter index)
    train_state.json                                   (step, data seed, optimizer hyper-parameters)
    rng.safetensors                                    (torch's CPU generator state)

It is written into a temporary sibling folder and renamed into place, so an
interrupted save never leaves a half checkpoint behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .model import CoTokVQA
from .model.vqa import _umask

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "train_state.json"
RNG_FILE = "rng.safetensors"


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    """Split an optimizer state dict into flat tensors and JSON-able param groups."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"{idx}.{key}"] = t.detach().cpu().contiguous()
    return tensors, sd["param_groups"]


def optimizer_from_tensors(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list
) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = t
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_training_checkpoint(
    directory: Path,
    model: CoTokVQA,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    tokenizer_file: Path | None = None,
) -> Path:
    """Atomically write a resumable checkpoint to ``directory`` (replacing an older one)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it owner-only; give the usual mode
        model.save_pretrained(tmp)
        if tokenizer_file is not None:
            shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
        tensors, groups = optimizer_to_tensors(optimizer)
        save_file(tensors, str(tmp / OPTIMIZER_FILE))
        save_file({"torch_cpu": torch.get_rng_state()}, str(tmp / RNG_FILE))
        (tmp / STATE_FILE).write_text(json.dumps({**state, "param_groups": groups}, indent=2))
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_training_checkpoint(
    directory: Path, model: CoTokVQA, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore model weights, optimizer moments and the RNG; return the saved state dict."""
    directory = Path(directory)
    for name in (STATE_FILE, OPTIMIZER_FILE, RNG_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"training checkpoint {directory}: missing {name}")
    loaded = CoTokVQA.from_pretrained(directory)
    if loaded.config.to_dict() != model.config.to_dict():
        raise ValueError(
            f"training checkpoint {directory}: its config.json differs from the model being "
            "trained; resume with the same preset and data"
        )
    model.load_state_dict(loaded.state_dict())
    state = json.loads((directory / STATE_FILE).read_text())
    optimizer_from_tensors(
        optimizer, load_file(str(directory / OPTIMIZER_FILE)), state.pop("param_groups")
    )
    torch.set_rng_state(load_file(str(directory / RNG_FILE))["torch_cpu"])
    return state
