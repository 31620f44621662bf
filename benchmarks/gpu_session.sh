#!/usr/bin/env bash
# One lease of a GPU machine, every part bounded in wall-clock time:
#
#     RUNS=benchmarks/gpu_runs/stop12.txt bash benchmarks/gpu_session.sh OUT SECONDS
#
# 1. writes the synthetic benchmark (seed 0; 1,200 + EXTRA_TRAIN training clips, the test
#    split that of data/synth) and decodes it once, with every subset a run asks for, on
#    all cores but two, while the fused TokenLearner kernels are checked and timed on those
#    two (benchmarks/kernels.py);
# 2. trains the runs of the RUNS file side by side on the GPU, each for the same wall-clock
#    budget (`--time-budget`: the cosine schedule spans it), clips held in GPU memory,
#    validation recorded per question (the file's format: benchmarks/gpu_runs/stop10.txt);
# 3. answers the test split with each run on the main data (`evaluate --by-question`);
# 4. packs OUT/NAME.tar per run (model, metrics, curves, test answers; a run whose weights
#    exceed 40 MB without them), before anything else can run out the call's time;
# 5. times the model on the GPU (python -m benchmarks.model_gpu, no torch.compile);
# 6. packs OUT/gpu.tar (kernel and model tables, machine.txt).
#
# Measured on an H100 (stop 8 in benchmarks/records.md): a tiny step of 32 clips takes
# 0.12 s in eager bf16 (about 270 clips/s, 27 times the 2-core CPU's), bound by the host
# launching kernels, not by the GPU, which is why several runs share it.
#
# SECONDS is the whole session's wall clock (default 540): the training budget is
# what is left after the data and before the measured time the steps after it need (AFTER).
# Environment: RUNS (default benchmarks/gpu_runs/stop10.txt); ONLY="A B" trains those
# runs of it alone; EXTRA_TRAIN (default 4800) training clips beyond the 1,200; HOLDOUT
# (default 300) held-out questions of a subset; CHECKS=0 skips the kernel check and the
# model timings (a training-only call), TIMINGS=0 the model timings alone; SMALL=1 writes a
# few clips and trains for seconds (a dry run on a CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:?usage: gpu_session.sh OUT [SECONDS]}
TOTAL=${2:-540}
CHECKS=${CHECKS:-1}  # 0: no kernel check, no model timings (a training-only call)
T0=$(date +%s)
mkdir -p "$OUT_DIR/gpu"
LOG="$OUT_DIR/session.log"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
since() { echo $(($(date +%s) - T0)); }
log() { echo "[$(since) s] $*" | tee -a "$LOG" >&2; }

CORES=$(nproc)
WORK=${WORK:-/tmp/cotok-session}
DATA="$WORK/synth" CACHE="$WORK/cache" RUNS_DIR="$WORK/runs"
mkdir -p "$WORK" "$RUNS_DIR"
if [ "${SMALL:-0}" = 1 ]; then
    GEN=(--train 24 --val 4 --test 4 --extra-train 8) EVAL_CLIPS=4 EVAL_EVERY=20 WARMUP=2
    HOLDOUT=${HOLDOUT:-4}
else
    EXTRA=${EXTRA_TRAIN:-4800}
    GEN=(--train 1200 --val 150 --test 300 --extra-train "$EXTRA")
    EVAL_CLIPS=150 EVAL_EVERY=250 WARMUP=300 HOLDOUT=${HOLDOUT:-300}
fi
DATA_CPUS="2-$((CORES - 1))" WORKERS=$((CORES - 2))
# Two workers at least, so that a dry run on a small machine takes the parallel path too.
[ "$WORKERS" -lt 2 ] && DATA_CPUS="0-$((CORES - 1))" WORKERS=2

# -- the runs: NAME DATA FLAGS... per line of the RUNS file ---------------------------------
SPEC=${RUNS:-benchmarks/gpu_runs/stop10.txt}
[ -f "$SPEC" ] || { log "RUNS=$SPEC: no such file"; exit 1; }
NAMES=() NEEDS_MAIN=0
declare -A RUN_DATA RUN_FLAGS
while IFS= read -r line || [ -n "$line" ]; do
    [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
    eval "fields=($line)" || { log "RUNS=$SPEC: cannot read the line: $line"; exit 1; }
    name=${fields[0]}
    [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]] && continue
    [ "${#fields[@]}" -ge 2 ] || { log "RUNS=$SPEC: run $name names no data"; exit 1; }
    NAMES+=("$name")
    RUN_DATA[$name]=${fields[1]}
    [ "${fields[1]}" = main ] && NEEDS_MAIN=1
    RUN_FLAGS[$name]=$(printf '%q ' "${fields[@]:2}")
done < "$SPEC"
[ "${#NAMES[@]}" -gt 0 ] || { log "RUNS=$SPEC: no run to train (ONLY=${ONLY:-})"; exit 1; }
log "runs: ${NAMES[*]} from $SPEC"
data_of() {  # the dataset folder of run $1
    case "${RUN_DATA[$1]}" in
        main) echo "$DATA" ;;
        subset:*) echo "$WORK/subset-$(printf %s "${RUN_DATA[$1]}" | sha1sum | cut -c1-12)" ;;  # shared
        *) return 1 ;;
    esac
}
for run in "${NAMES[@]}"; do
    data_of "$run" > /dev/null || { log "run $run: data ${RUN_DATA[$run]}: not main or subset:Q"; exit 1; }
done

# The runs file is read above, before anything is installed: a mistake in it costs
# seconds of the lease, not the install's.
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
log "start: $CORES cores, CUDA $CUDA"
if [ "${SMALL:-0}" != 1 ]; then
    # The cache takes a clip's three streams as uint8 (2.2 MB for the paper's geometry) and
    # each subset's clips again (at most all of them): a disk too small for EXTRA_TRAIN gets
    # fewer clips, not a decoding that fails half-way. Only 80% of the free space is planned.
    CLIP_KB=$("$PY" -c 'from cotok_edge.model.config import CoTokConfig as C
print(sum(3 * s.frames * s.size**2 for s in C.preset("tiny").streams) // 1024 + 1)')
    SUBSETS=$(for r in "${NAMES[@]}"; do echo "${RUN_DATA[$r]}"; done | sort -u | grep -c '^subset:')
    FREE_MB=$(df -Pm "$WORK" | awk 'NR == 2 {print $4}')
    FITS=$((FREE_MB * 1024 * 8 / 10 / CLIP_KB / (1 + SUBSETS) - 1650))
    if [ "$FITS" -lt "$EXTRA" ]; then
        [ "$FITS" -lt 0 ] && FITS=0
        log "disk: $FREE_MB MB free: $FITS extra training clips, not $EXTRA"
        GEN=(--train 1200 --val 150 --test 300 --extra-train "$FITS")
    fi
fi

# -- 1. data on all cores but two; the kernels on those two ---------------------------------
if [ "$CUDA" = 1 ] && [ "$CHECKS" = 1 ]; then
    pin 0,1 timeout 120 "$PY" benchmarks/kernels.py --iters 30 --out "$OUT_DIR/gpu/kernels.md" \
        ${CUDA_LIB:+--cuda-lib "$CUDA_LIB"} > "$OUT_DIR/gpu/kernels.log" 2>&1 &
    KERNELS=$!
fi
pin "$DATA_CPUS" "$PY" -m cotok_edge.data.synthetic --out "$DATA" "${GEN[@]}" --seed 0 \
    --workers "$WORKERS" >> "$LOG" 2>&1 || { log "data generation failed"; exit 1; }
log "data written"
if [ "$NEEDS_MAIN" = 1 ]; then  # subsets alone need only their own clips
    pin "$DATA_CPUS" "$PY" -m cotok_edge.data.prepare --data "$DATA" --format msrvtt-qa \
        --cache-dir "$CACHE" --workers "$WORKERS" >> "$LOG" 2>&1 || { log "decoding failed"; exit 1; }
fi
declare -A MADE  # runs asking the same question share one subset and its cache
for run in "${NAMES[@]}"; do
    [[ "${RUN_DATA[$run]}" == subset:* ]] && [ -z "${MADE[$(data_of "$run")]:-}" ] || continue
    MADE[$(data_of "$run")]=1
    "$PY" -m cotok_edge.data.subset --data "$DATA" --question "${RUN_DATA[$run]#subset:}" \
        --holdout "$HOLDOUT" --out "$(data_of "$run")" --force >> "$LOG" 2>&1 &&
        pin "$DATA_CPUS" "$PY" -m cotok_edge.data.prepare --data "$(data_of "$run")" \
            --format msrvtt-qa --splits train val --cache-dir "$CACHE" --workers "$WORKERS" \
            >> "$LOG" 2>&1 || { log "run $run: its subset failed"; exit 1; }
done
log "clips decoded"
[ -n "${KERNELS:-}" ] && { wait "$KERNELS"; log "kernels: exit $?"; }

# -- 2. the runs side by side ---------------------------------------------------------------------
AFTER=${AFTER:-90}  # seconds the steps after training need: its start, the evaluations, packing
BUDGET=$((TOTAL - $(since) - AFTER))
[ "$BUDGET" -lt 10 ] && BUDGET=10
DEVICE=$([ "$CUDA" = 1 ] && echo cuda || echo cpu)
log "training: $BUDGET s each"
COMMON=(--format msrvtt-qa --time-budget "$BUDGET" --lr 1e-3
    --warmup "$WARMUP" --eval-every "$EVAL_EVERY" --eval-clips "$EVAL_CLIPS"
    --checkpoint-every 1000000 --cache-dir "$CACHE" --cache-on-device --force --eval-by-question
    --tokenizer cotok_edge/assets/default/tokenizer.json --seed 0)  # the shipped vocabulary
declare -A PIDS
for run in "${NAMES[@]}"; do
    eval "flags=(${RUN_FLAGS[$run]})"
    # A hung run ends: the budget, its start and a last evaluation, then no more.
    timeout "$((BUDGET + 90))" "$PY" -m cotok_edge.train --data "$(data_of "$run")" \
        "${COMMON[@]}" "${flags[@]}" --out "$RUNS_DIR/$run" > "$RUNS_DIR/$run.log" 2>&1 &
    PIDS[$run]=$!
done
for run in "${NAMES[@]}"; do
    wait "${PIDS[$run]}"
    log "run $run: exit $?, $(grep -c '"loss"' "$RUNS_DIR/$run/metrics.jsonl" 2>/dev/null) steps"
done

# -- 3. the test split (runs on the main data; a subset's held-out answers are in its metrics) --
for run in "${NAMES[@]}"; do
    [ "${RUN_DATA[$run]}" = main ] && [ -f "$RUNS_DIR/$run/model/config.json" ] || continue
    timeout 90 "$PY" -m cotok_edge.evaluate --checkpoint "$RUNS_DIR/$run/model" --data "$DATA" \
        --format msrvtt-qa --split test --by-question --device "$DEVICE" --cache-dir "$CACHE" \
        > "$RUNS_DIR/$run/test.json" 2> "$RUNS_DIR/$run/test.err" &
done
wait
for run in "${NAMES[@]}"; do
    [ -s "$RUNS_DIR/$run/test.json" ] || continue
    log "run $run test: $("$PY" -c 'import json,sys; r=json.load(open(sys.argv[1]))
print(round(100*r["accuracy"],1), {k: round(100*v["accuracy"],1) for k,v in r["per_category"].items()})' \
        "$RUNS_DIR/$run/test.json" 2>/dev/null)"
done

# -- 4. pack the runs now, so that a call stopped by its time limit still brings them back --
for run in "${NAMES[@]}"; do
    [ -d "$RUNS_DIR/$run" ] || continue
    files=(metrics.jsonl learning_curve.png test.json test.err model/config.json model/tokenizer.json)
    weights="$RUNS_DIR/$run/model/model.safetensors"
    [ -f "$weights" ] && [ "$(stat -c %s "$weights")" -le 40000000 ] && files+=(model/model.safetensors)
    cp "$RUNS_DIR/$run.log" "$RUNS_DIR/$run/train.log"
    (cd "$RUNS_DIR/$run" && tar cf "$OUT_DIR/$run.tar" train.log $(ls "${files[@]}" 2>/dev/null))
done
log "runs packed"

# -- 5. the model on the GPU --------------------------------------------------------------------
if [ "$CUDA" = 1 ] && [ "$CHECKS" = 1 ] && [ "${TIMINGS:-1}" = 1 ]; then
    LEFT=$((TOTAL - $(since) - 15))
    if [ "$LEFT" -gt 20 ]; then
        timeout "$LEFT" "$PY" -m benchmarks.model_gpu --presets tiny edge paper --batches 1 8 \
            --runs 50 --warmup 10 --no-compile --out "$OUT_DIR/gpu/model.md" \
            --json "$OUT_DIR/gpu/model.json" > "$OUT_DIR/gpu/model.log" 2>&1
        log "model timings: exit $?"
    fi
fi
if [ "$CUDA" = 1 ]; then
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
