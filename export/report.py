"""A bundle's ``report.md``, from its manifest.

(``finish_on_device.sh`` is written by :func:`cotok_edge.build.finish.device_script`.)
"""

from __future__ import annotations

from cotok_edge.manifest import Manifest

from .scoring import SURE_MARGIN


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def render_report(manifest: Manifest) -> str:
    """Markdown: FLOP budget, parity per backend and precision, quantization, build time."""
    host = manifest.host or {}
    lines = [
        f"# cotok-edge bundle: {manifest.target}, {manifest.precision}",
        "",
        f"Built {manifest.created} with `{manifest.command}`",
        f"on {host.get('cpu')} ({host.get('cores')} cores).",
        "",
        "## FLOP budget (one clip, one question, an 8-token answer; batch 1)",
        "",
        "| component | GMACs |",
        "| --- | ---: |",
    ]
    budget = manifest.budget_macs or {"total": 0.0}
    for name, macs in budget.items():
        if name != "total":
            lines.append(f"| {name} | {macs / 1e9:.3f} |")
    total = budget["total"]
    lines += [
        f"| **total** | **{total / 1e9:.3f}** ({2 * total / 1e9:.2f} GFLOPs; the paper's "
        "model: 67 GFLOPs) |",
        "",
    ]
    par = manifest.parity or {}
    sl = par["slice"]
    lines += [
        "## Parity",
        "",
        f"{sl['questions']} questions on {sl['clips']} clips ({sl['format']} `{sl['data']}`, "
        f"split {sl['split']}). Agreement and logit errors are against PyTorch FP32 "
        "(`answer_logits`, the logits each greedy step chose from).",
        "",
        "| backend, precision | accuracy | agreement | agreement where FP32 is sure "
        "| max logit err | mean logit err |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in par["rows"].items():
        sure = "-"
        if r.get("sure_agreement") is not None:  # None: FP32 is sure of no question
            sure = f"{_pct(r['sure_agreement'])} of {_pct(r['sure_share'])}"
        lines.append(
            f"| {name} | {_pct(r['accuracy'])} | {_pct(r['agreement'])} | {sure} | "
            f"{r['max_logit_error']:.2e} | {r['mean_logit_error']:.2e} |"
        )
    lines += [
        "",
        "Sure: FP32's first answer token leads the runner-up by at least "
        f"{SURE_MARGIN:g} logits; shown as agreement on those questions, of their share.",
    ]
    cats = next(iter(par["rows"].values())).get("per_category") or {}
    if cats:
        lines += ["", "Accuracy per category:", ""]
        ids = sorted(cats, key=str)
        lines.append("| backend, precision | " + " | ".join(str(c) for c in ids) + " |")
        lines.append("| --- |" + " ---: |" * len(ids))
        for name, r in par["rows"].items():
            per = r.get("per_category", {})
            cells = [_pct(per[c]["accuracy"]) if c in per else "-" for c in ids]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| bar | value | required | |", "| --- | ---: | --- | --- |"]
    for name, b in par["bars"].items():
        lines.append(
            f"| {name} | {b['value']:.4g} | {b['bar']} | {'ok' if b['passed'] else 'MISSED'} |"
        )
    q = manifest.quantization
    if q:
        lines += [
            "",
            "## INT8 (NVIDIA ModelOpt)",
            "",
            f"- calibration: max, on {q['calibration_clips']} clips; shipped: {q['shipped']}",
            f"- QAT: {q['qat_steps']} steps, lr {q['qat_lr']:g}, {q['qat_clips_per_step']} clips "
            f"per step; loss first/last: {q['qat_loss_first_last']}",
            f"- quantizers: {q['quantizers']}; kept in floating point: "
            + ", ".join(f"`{p}`" for p in q["kept_float"]),
        ]
    engine, status = manifest.engine, manifest.engine_status or {}
    lines += ["", "## TensorRT", ""]
    if engine is not None:
        cc = ".".join(str(x) for x in engine.compute_capability or ()) or "unknown"
        lines.append(
            f"Engines built here ({engine.describe()}): TensorRT {engine.tensorrt}, "
            f"{engine.gpu} (compute capability {cc})."
        )
    elif (manifest.target_info or {}).get("tensorrt"):
        lines.append(f"No engine built on this host: {status.get('reason', 'unknown')}.")
        lines.append("On the device: `bash finish_on_device.sh` (see the script).")
    else:
        lines.append("Not a TensorRT target: ONNX Runtime runs the graphs.")
    lines += ["", "## Build time (seconds)", "", "| step | s |", "| --- | ---: |"]
    for name, s in (manifest.build_seconds or {}).items():
        lines.append(f"| {name} | {s:.1f} |")
    lines += ["", "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in manifest.versions.items()]
    if manifest.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in manifest.warnings]
    return "\n".join(lines) + "\n"


__all__ = ["render_report"]
