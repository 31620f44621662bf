#!/usr/bin/env bash
# The one command of a session with a GPU machine (CUDA, Triton; no TensorRT needed):
#
#     bash benchmarks/gpu.sh            # writes benchmarks/gpu/{kernels,model}.md (+ .json)
#
# 1. fused TokenLearner kernels: parity with the reference and CUDA-event timings against
#    eager and torch.compile, batch 1 and 8, FP32 and FP16 (benchmarks/kernels.py);
# 2. the model on CUDA (random weights): eager and torch.compile, with and without the
#    fused TokenLearner, batch 1 and 8, FP16 autocast (python -m benchmarks.model_gpu).
# Every timing is >= 50 CUDA-event-timed calls after warm-up, reported as percentiles.
# `python -m benchmarks` includes these tables in RESULTS.md (labelled as recorded on the
# GPU machine). Environment: GPU_OUT (output folder), PRESETS (default "edge paper"),
# PYTHON (default python). Exit status: 0, or 1 when a step failed or missed its targets.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
OUT="${GPU_OUT:-benchmarks/gpu}"
PRESETS="${PRESETS:-edge paper}"
rc=0

if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "benchmarks/gpu.sh: no CUDA device here: nothing measured" >&2
    exit 2
fi
mkdir -p "$OUT"
"$PY" -c 'import cotok_edge' 2>/dev/null || "$PY" -m pip install -q --no-deps --no-build-isolation -e . || rc=1

echo "== kernels ==" >&2
"$PY" benchmarks/kernels.py --out "$OUT/kernels.md" || rc=1

echo "== model: eager / torch.compile x reference / fused x batch 1, 8 ==" >&2
# shellcheck disable=SC2086 # PRESETS is a list
"$PY" -m benchmarks.model_gpu --presets $PRESETS --batches 1 8 --runs 50 --warmup 10 \
    --out "$OUT/model.md" --json "$OUT/model.json" || rc=1

{
    echo "machine: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1);"
    echo "CPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores;"
    echo "$("$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)')"
    echo "$("$PY" -c 'import triton; print("triton", triton.__version__)' 2>/dev/null || echo 'triton not installed')"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$OUT/machine.txt"
for f in kernels.md model.md; do
    [ -f "$OUT/$f" ] && { echo; cat "$OUT/machine.txt"; } >> "$OUT/$f"
done
exit "$rc"
