#!/usr/bin/env bash
# One command for a GPU machine: what this project has never run before.
#
#   tools/analysis/gpu_check.sh [--out DIR] [--device cuda|cpu] [--iters N]
#                               [--quick]
#
# Steps, each logged to DIR (default work_dirs/gpu_check) and listed as
# PASS/FAIL in DIR/summary.md:
#   1. the tests marked `cuda` (tests/cuda: CPU == GPU losses and gradients,
#      fp16 autocast, merged == unmerged);
#   2. tools/analysis/benchmark.py on AdaMixer 2x64, AdaMixer+LORS and LORS
#      :merged at COCO shapes, float32 and --amp (DIR/benchmark_*.md: the
#      GPU rows of docs/benchmarks.md);
#   3. a training of the tiny AdaMixer+LORS on synthetic data, N
#      iterations (default 50), with --amp (mmengine's AmpOptimWrapper).
# --device cpu runs the same steps on the CPU to check the script itself:
# the cuda tests skip, the benchmark autocasts to bf16, and training runs
# without --amp (AmpOptimWrapper is CUDA-only). --quick: a small benchmark
# (the tiny synthetic LORS config unmerged and merged, batch 1, 128x128
# input, 1 repeat, 1 round).
# Exit status: 0 when every step passed, 1 when one failed, 2 on bad usage.
set -uo pipefail

usage() {
    sed -n '4,5p' "$0" | sed 's/^# *//' >&2
    exit 2
}

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
OUT=work_dirs/gpu_check
DEVICE=cuda
ITERS=50
QUICK=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || usage; OUT=$2; shift 2 ;;
        --device) [ $# -ge 2 ] || usage; DEVICE=$2; shift 2 ;;
        --iters) [ $# -ge 2 ] || usage; ITERS=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        -h|--help) usage ;;
        *) echo "gpu_check.sh: unknown argument '$1'" >&2; usage ;;
    esac
done
case "$DEVICE" in
    cuda|cpu) ;;
    *) echo "gpu_check.sh: --device must be cuda or cpu, got '$DEVICE'" >&2
       exit 2 ;;
esac
if ! [[ "$ITERS" =~ ^[1-9][0-9]*$ ]]; then
    echo "gpu_check.sh: --iters must be a positive integer, got '$ITERS'" >&2
    exit 2
fi

source "$REPO/tools/find_python.sh"
if [ "$DEVICE" = cuda ] && ! "$PYTHON" -c \
        'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    echo "gpu_check.sh: --device cuda but $PYTHON sees no CUDA device" \
         "(torch.cuda.is_available() is False); --device cpu checks the" \
         "script on this machine" >&2
    exit 1
fi
# step 1 runs pytest (requirements/tests.txt; `make install` has it)
if ! "$PYTHON" -c 'import pytest' 2>/dev/null; then
    echo "gpu_check.sh: step 1 (the cuda tests) needs pytest, which $PYTHON" \
         "cannot import: $PYTHON -m pip install -r" \
         "$REPO/requirements/tests.txt (or make install)" >&2
    exit 2
fi
if [ -e "$OUT/summary.md" ]; then
    echo "gpu_check.sh: $OUT already holds a check (summary.md); choose" \
         "another --out or remove it" >&2
    exit 2
fi
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
cd "$REPO" || exit 2
[ "$DEVICE" = cpu ] && export CUDA_VISIBLE_DEVICES=

FAILED=0
{
    echo "# gpu_check $(date -u '+%Y-%m-%d %H:%M UTC'), device $DEVICE"
    echo
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda",
        torch.version.cuda, "device", torch.cuda.get_device_name(0)
        if torch.cuda.is_available() else "cpu")'
    echo
} > "$OUT/summary.md"

step() {  # step NAME LOG COMMAND...: run, log, record PASS/FAIL
    local name=$1 log=$2
    shift 2
    echo "== $name (log: $OUT/$log)"
    local t0=$SECONDS
    if "$@" > "$OUT/$log" 2>&1; then
        echo "- PASS $name ($((SECONDS - t0)) s)" >> "$OUT/summary.md"
    else
        echo "- FAIL $name ($((SECONDS - t0)) s, exit $?, see $log)" \
            >> "$OUT/summary.md"
        FAILED=1
        tail -n 20 "$OUT/$log"
    fi
}

# 1. the cuda tests
step "pytest -m cuda" pytest_cuda.log \
    "$PYTHON" -m pytest tests/cuda -m cuda -q -rs

# 2. the benchmark, float32 and autocast
if [ "$QUICK" = 1 ]; then
    BENCH=(configs/synthetic/adamixer-lors_tiny_synthetic.py
           configs/synthetic/adamixer-lors_tiny_synthetic.py:merged)
    BENCH_ARGS=(--batch 1 --shape 128 128 --warmup 0 --repeats 1 --rounds 1)
else
    BENCH=(configs/adamixer/adamixer-2x64_r50_8xb2-1x_coco.py
           configs/lors/adamixer-lors_r50_8xb2-1x_coco.py
           configs/lors/adamixer-lors_r50_8xb2-1x_coco.py:merged)
    BENCH_ARGS=(--whole-model --rounds 3)
fi
step "benchmark float32" benchmark_fp32.md \
    "$PYTHON" tools/analysis/benchmark.py "${BENCH[@]}" --device "$DEVICE" \
    "${BENCH_ARGS[@]}"
step "benchmark --amp" benchmark_amp.md \
    "$PYTHON" tools/analysis/benchmark.py "${BENCH[@]}" --device "$DEVICE" \
    --amp "${BENCH_ARGS[@]}"

# 3. a short synthetic training: 2 epochs of ITERS/2 iterations (batch 4)
DATA="$OUT/data"
AMP=()
[ "$DEVICE" = cuda ] && AMP=(--amp)
train() {
    "$PYTHON" tools/misc/make_synthetic_coco.py --out "$DATA" \
        --num-train $((ITERS * 2)) --num-val 8 &&
    "$PYTHON" tools/train.py configs/synthetic/adamixer-lors_tiny_synthetic.py \
        --work-dir "$OUT/train" "${AMP[@]}" --cfg-options \
        train_dataloader.dataset.data_root="$DATA/" \
        val_dataloader.dataset.data_root="$DATA/" \
        test_dataloader.dataset.data_root="$DATA/" \
        val_evaluator.ann_file="$DATA/annotations/instances_val.json" \
        test_evaluator.ann_file="$DATA/annotations/instances_val.json" \
        train_cfg.max_epochs=2 train_cfg.val_interval=2 \
        default_hooks.checkpoint.interval=2 &&
    grep -q "coco/bbox_mAP" "$OUT"/train/*/*.log
}
step "train $ITERS iterations${AMP:+ --amp}" train.log train

cat "$OUT/summary.md"
exit $FAILED
