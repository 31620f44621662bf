"""Parity: the bars a build must meet (defined once: values and labels), the parity slice's
clips, the build-time answers and ``--verify``, which answers the slice again.

Torch-free: ``--verify`` and the on-device finish use it with the runtime alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotok_edge.bundle import atomic_folder, atomic_write_bytes

__all__ = [
    "BARS",
    "SYNTHETIC_SEED",
    "SYNTHETIC_SPLITS",
    "Bar",
    "check_bars",
    "default_cache_root",
    "synthetic_subset",
]

# The benchmark behind the shipped model (cotok_edge/assets/README.md).
SYNTHETIC_SEED = 0
SYNTHETIC_SPLITS = {"train": 1200, "val": 150, "test": 300}
#: The parity slice's build-time answers, relative to the bundle.
ANSWERS = "parity/answers.json"


@dataclass(frozen=True)
class Bar:
    """One parity bar: ``value(rows) <op> threshold`` must hold.

    key: stable name (``fp32_max_logit_error``). label: what the report and the
    manifest call it; ``{row}`` is the INT8 row it was measured on.
    op: ``">="`` or ``"<="``. threshold: the bar. metric: the row's field it reads
    (``agreement``, ``max_logit_error``, ``accuracy_drop_points``).
    precisions: the build precisions it applies to.
    """

    key: str
    label: str
    op: str
    threshold: float
    metric: str
    precisions: tuple[str, ...]

    @property
    def requirement(self) -> str:
        """``">= 0.97"``, ``"<= 1e-4"``: how the report shows the bar."""
        x = self.threshold
        shown = f"{x:.0e}".replace("e-0", "e-") if 0 < abs(x) < 0.01 else repr(x)
        return f"{self.op} {shown}"

    def passed(self, value: float) -> bool:
        return value >= self.threshold if self.op == ">=" else value <= self.threshold


_ALL = ("int8", "fp16", "fp32", "fp8")
#: Every bar, in the report's order.
BARS = (
    Bar("fp32_answers_identical", "fp32 answers identical", ">=", 1.0, "agreement", _ALL),
    Bar("fp32_max_logit_error", "fp32 max logit error", "<=", 1e-4, "max_logit_error", _ALL),
    Bar(
        "int8_accuracy_drop_points",
        "{row} accuracy drop (points)",
        "<=",
        1.0,
        "accuracy_drop_points",
        ("int8",),
    ),  # fmt: skip
    Bar("int8_agreement", "{row} answer agreement", ">=", 0.97, "agreement", ("int8",)),
)
BAR = {b.key: b for b in BARS}
#: The agreement ``--verify`` needs with the build's answers (the INT8 agreement bar).
VERIFY_AGREEMENT = BAR["int8_agreement"]

FP32_ROW = "onnxruntime fp32"
TORCH_ROW = "torch fp32"
INT8_ROWS = ("onnxruntime int8 (QAT)", "onnxruntime int8 (PTQ)")


def check_bars(rows: Mapping[str, Mapping[str, Any]], precision: str) -> dict[str, dict[str, Any]]:
    """``{label: {"value", "bar", "passed"}}`` for the bars of ``precision``.

    ``rows``: the build's parity rows (``torch fp32``, ``onnxruntime fp32`` and, for
    INT8, the shipped ``onnxruntime int8 (QAT)`` or ``(PTQ)`` row).
    """
    int8_row = next((r for r in INT8_ROWS if r in rows), None)
    out: dict[str, dict[str, Any]] = {}
    for bar in BARS:
        if precision not in bar.precisions:
            continue
        row = FP32_ROW if bar.key.startswith("fp32") else int8_row
        if row is None:
            raise ValueError(f"parity: no INT8 row ({' or '.join(INT8_ROWS)}) to check {bar.key}")
        if bar.metric == "accuracy_drop_points":
            value = 100 * (rows[TORCH_ROW]["accuracy"] - rows[row]["accuracy"])
        else:
            value = rows[row][bar.metric]
        out[bar.label.format(row=row)] = {
            "value": value,
            "bar": bar.requirement,
            "passed": bar.passed(value),
        }
    return out


# The parity slice's clips ------------------------------------------------------------
def default_cache_root() -> Path:
    """``$COTOK_EDGE_CACHE``, else ``$XDG_CACHE_HOME/cotok-edge``, else ``~/.cache/cotok-edge``."""
    if os.environ.get("COTOK_EDGE_CACHE"):
        return Path(os.environ["COTOK_EDGE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cotok-edge"


def synthetic_subset(
    cache_root: Path, calib_clips: int, test_clips: int, progress: bool = True
) -> Path:
    """The first ``calib_clips`` training and ``test_clips`` test clips of the shipped model's
    synthetic benchmark, generated once into ``cache_root`` (atomically); returns its folder."""
    from cotok_edge.data.synthetic import generate_subset

    n_train, n_val, n_test = (SYNTHETIC_SPLITS[k] for k in ("train", "val", "test"))
    if not 0 < calib_clips <= n_train:
        raise ValueError(f"calibration clips must be in 1..{n_train}, got {calib_clips}")
    if not 0 < test_clips <= n_test:
        raise ValueError(f"test clips must be in 1..{n_test}, got {test_clips}")
    folder = cache_root / f"synthetic-seed{SYNTHETIC_SEED}-train{calib_clips}-test{test_clips}"
    if (folder / "meta.json").is_file():
        return folder
    first_test = n_train + n_val
    # A folder without meta.json is a leftover: replaced. Another build finishing first
    # wrote the same clips (the generator is seeded), so replacing it is harmless too.
    with atomic_folder(folder, force=True) as tmp:
        generate_subset(
            tmp,
            {"train": range(calib_clips), "test": range(first_test, first_test + test_clips)},
            seed=SYNTHETIC_SEED,
            progress=progress,
        )
    return folder


def write_answers(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write the build-time answers (atomically): one row per question of the slice with
    ``video``, ``start``, ``end``, ``question``, ``category_id``, ``answers`` (references),
    ``torch_fp32`` and ``deployed`` (the build's answers)."""
    atomic_write_bytes(path, (json.dumps(rows, indent=1) + "\n").encode())
