#!/usr/bin/env bash
# One lease of a GPU machine, every part bounded in wall-clock time:
#
#     bash benchmarks/gpu_session.sh OUT SECONDS
#
# 1. writes the synthetic benchmark (seed 0, 6,000 training clips: data/synth6k's
#    command) and decodes its training clips once, on all cores but two, while the
#    fused TokenLearner kernels are checked and timed on those two (benchmarks/kernels.py);
# 2. trains three models side by side on the GPU, each for the same wall-clock budget
#    (`--time-budget`: the cosine schedule spans it), clips held in GPU memory:
#      A: tiny, 32 clips a step;  B: tiny, 64 clips a step;  C: edge, 16 clips (all seed 0;
#      a small model's step costs about the same at 32 or 64 clips on a GPU: B asks what
#      the larger batch buys at the same rate). With B_INIT=MODEL, B instead continues that
#      model at 32 clips, lr 5e-4, the blink count and the direction weighted 4x (stop 9's
#      run C on the GPU's budget). Validation is recorded per question too;
# 3. answers the test split with each (`evaluate --by-question`);
# 4. packs OUT/{A,B,C}.tar (model, metrics, curves, test answers; C without its
#    weights, 80 MB), before anything else can run out the call's time;
# 5. times the model on the GPU (python -m benchmarks.model_gpu, no torch.compile);
# 6. packs OUT/gpu.tar (kernel and model tables, machine.txt).
#
# Measured on an H100 (stop 8 in benchmarks/records.md): a tiny step of 32 clips takes
# 0.12 s in eager bf16 (about 270 clips/s, 27 times the 2-core CPU's), bound by the host
# launching kernels, not by the GPU, which is why three runs share it.
#
# SECONDS is the whole session's wall clock (default 540): the training budget is
# what is left after the data and before the measured time the steps after it need.
# Environment: SMALL=1 writes a few clips and trains for seconds (a dry run on a CPU);
# ONLY="B" trains those runs alone; CHECKS=0 skips the kernel check and the model timings;
# B_FLAGS: run B's extra training flags (word-split; with B_INIT they replace its question
# weights); B_CLIPS: run B's clips a step without B_INIT (64).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:?usage: gpu_session.sh OUT [SECONDS]}
TOTAL=${2:-540}
ONLY=${ONLY:-A B C}  # the runs to train
CHECKS=${CHECKS:-1}  # 0: no kernel check, no model timings (a training-only call)
T0=$(date +%s)
mkdir -p "$OUT_DIR/gpu"
LOG="$OUT_DIR/session.log"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
since() { echo $(($(date +%s) - T0)); }
log() { echo "[$(since) s] $*" | tee -a "$LOG" >&2; }

if [ -d .whl ]; then  # packages the GPU image lacks (PyAV), carried as wheels
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 1
fi
# Training needs no install (run from the repo root); the kernel benchmark does.
"$PY" -c 'import cotok_edge.kernels' 2>/dev/null ||
    "$PY" -m pip install -q --no-deps --no-build-isolation -e . >> "$LOG" 2>&1 ||
    log "pip install -e . failed: the kernel benchmark will not run"
pin() {  # pin CPUS CMD...: run CMD on those cores where taskset exists
    local cpus=$1
    shift
    if command -v taskset > /dev/null; then taskset -c "$cpus" "$@"; else "$@"; fi
}
CUDA=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')
CORES=$(nproc)
log "start: $CORES cores, CUDA $CUDA"

WORK=${WORK:-/tmp/cotok-session}
DATA="$WORK/synth6k" CACHE="$WORK/cache" RUNS="$WORK/runs"
mkdir -p "$WORK" "$RUNS"
if [ "${SMALL:-0}" = 1 ]; then
    GEN=(--train 24 --val 4 --test 4 --extra-train 8) EVAL_CLIPS=4 EVAL_EVERY=20 WARMUP=2
else
    GEN=(--train 1200 --val 150 --test 300 --extra-train 4800) EVAL_CLIPS=150 EVAL_EVERY=500
    WARMUP=300
fi
DATA_CPUS="2-$((CORES - 1))" WORKERS=$((CORES - 2))
# Two workers at least, so that a dry run on a small machine takes the parallel path too.
[ "$WORKERS" -lt 2 ] && DATA_CPUS="0-$((CORES - 1))" WORKERS=2

# -- 1. data on all cores but two; the kernels on those two ---------------------------------
if [ "$CUDA" = 1 ] && [ "$CHECKS" = 1 ]; then
    pin 0,1 timeout 120 "$PY" benchmarks/kernels.py --iters 30 --out "$OUT_DIR/gpu/kernels.md" \
        ${CUDA_LIB:+--cuda-lib "$CUDA_LIB"} > "$OUT_DIR/gpu/kernels.log" 2>&1 &
    KERNELS=$!
fi
pin "$DATA_CPUS" "$PY" -m cotok_edge.data.synthetic --out "$DATA" "${GEN[@]}" --seed 0 \
    --workers "$WORKERS" >> "$LOG" 2>&1 || { log "data generation failed"; exit 1; }
log "data written"
pin "$DATA_CPUS" "$PY" -m cotok_edge.data.prepare --data "$DATA" --format msrvtt-qa \
    --cache-dir "$CACHE" --workers "$WORKERS" >> "$LOG" 2>&1 || { log "decoding failed"; exit 1; }
log "clips decoded"
[ -n "${KERNELS:-}" ] && { wait "$KERNELS"; log "kernels: exit $?"; }

# -- 2. three training runs side by side --------------------------------------------------------
AFTER=${AFTER:-130}  # seconds the steps after training need: its start, the evaluations, timings
BUDGET=$((TOTAL - $(since) - AFTER))
[ "$BUDGET" -lt 10 ] && BUDGET=10
DEVICE=$([ "$CUDA" = 1 ] && echo cuda || echo cpu)
log "training: $BUDGET s each"
COMMON=(--data "$DATA" --format msrvtt-qa --time-budget "$BUDGET" --lr 1e-3
    --warmup "$WARMUP" --eval-every "$EVAL_EVERY" --eval-clips "$EVAL_CLIPS"
    --checkpoint-every 1000000 --cache-dir "$CACHE" --cache-on-device --force --eval-by-question
    --tokenizer cotok_edge/assets/default/tokenizer.json)  # the shipped model's vocabulary
declare -A PIDS
TRAIN=(timeout "$((BUDGET + 90))" "$PY" -m cotok_edge.train "${COMMON[@]}")  # a hung run ends
wanted() { [[ " $ONLY " == *" $1 "* ]]; }
wanted A && { "${TRAIN[@]}" --preset tiny --clips 32 --seed 0 --out "$RUNS/A" \
    > "$RUNS/A.log" 2>&1 & PIDS[A]=$!; }
if [ -n "${B_INIT:-}" ]; then  # continue a trained model, the blink count and direction weighted
    RUN_B=(--init "$B_INIT" --clips 32 --lr 5e-4 --warmup "$((WARMUP / 3))")
    B_FLAGS=${B_FLAGS---question-weight how.many=4 --question-weight which.way=4}
else
    RUN_B=(--preset tiny --clips "${B_CLIPS:-64}")
fi
wanted B && { "${TRAIN[@]}" "${RUN_B[@]}" ${B_FLAGS:-} --seed 0 --out "$RUNS/B" \
    > "$RUNS/B.log" 2>&1 & PIDS[B]=$!; }
wanted C && { "${TRAIN[@]}" --preset edge --clips 16 --seed 0 --out "$RUNS/C" \
    > "$RUNS/C.log" 2>&1 & PIDS[C]=$!; }
for run in $ONLY; do
    wait "${PIDS[$run]}"
    log "run $run: exit $?, $(grep -c '"loss"' "$RUNS/$run/metrics.jsonl" 2>/dev/null) steps"
done

# -- 3. the test split ------------------------------------------------------------------------------
for run in A B C; do
    [ -f "$RUNS/$run/model/config.json" ] || continue
    timeout 90 "$PY" -m cotok_edge.evaluate --checkpoint "$RUNS/$run/model" --data "$DATA" \
        --format msrvtt-qa --split test --by-question --device "$DEVICE" --cache-dir "$CACHE" \
        > "$RUNS/$run/test.json" 2> "$RUNS/$run/test.err" &
done
wait
for run in A B C; do
    log "run $run test: $("$PY" -c 'import json,sys; r=json.load(open(sys.argv[1]))
print(round(100*r["accuracy"],1), {k: round(100*v["accuracy"],1) for k,v in r["per_category"].items()})' \
        "$RUNS/$run/test.json" 2>/dev/null)"
done

# -- 4. pack the runs now, so that a call stopped by its time limit still brings them back --
for run in A B C; do
    [ -d "$RUNS/$run" ] || continue
    files=(metrics.jsonl learning_curve.png test.json test.err model/config.json model/tokenizer.json)
    [ "$run" != C ] && files+=(model/model.safetensors)
    cp "$RUNS/$run.log" "$RUNS/$run/train.log"
    (cd "$RUNS/$run" && tar cf "$OUT_DIR/$run.tar" train.log $(ls "${files[@]}" 2>/dev/null))
done
log "runs packed"

# -- 5. the model on the GPU --------------------------------------------------------------------
if [ "$CUDA" = 1 ] && [ "$CHECKS" = 1 ]; then
    LEFT=$((TOTAL - $(since) - 15))
    if [ "$LEFT" -gt 20 ]; then
        timeout "$LEFT" "$PY" -m benchmarks.model_gpu --presets tiny edge paper --batches 1 8 \
            --runs 50 --warmup 10 --no-compile --out "$OUT_DIR/gpu/model.md" \
            --json "$OUT_DIR/gpu/model.json" > "$OUT_DIR/gpu/model.log" 2>&1
        log "model timings: exit $?"
    fi
    {
        echo "machine: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1);"
        echo "CPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $CORES cores;"
        "$PY" -c 'import torch, triton; print("torch", torch.__version__, "CUDA",
torch.version.cuda, "triton", triton.__version__)'
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    } > "$OUT_DIR/gpu/machine.txt" 2>&1
fi

# -- 6. pack the GPU tables --------------------------------------------------------------
(cd "$OUT_DIR" && tar cf gpu.tar gpu && rm -r gpu)
log "done"
