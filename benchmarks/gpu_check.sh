#!/usr/bin/env bash
# The one prepared GPU run of the performance issues (a single call of the device tool, <= 8 minutes of
# one H200; the device README's wheel recipe: carry `.whl`):
#
#   bash benchmarks/gpu_check.sh           on the GPU machine: everything into $OUT/gpu_check.json
#   bash benchmarks/gpu_check.sh --quick   the same stages on the CPU with tiny towers (a dry run; CI runs
#                                          it in tests/test_perf_gpu_check.py, no timings asserted)
#
# 0. installs the carried wheels when open_clip / webdataset are missing (.whl/: open_clip_torch,
#    webdataset, ftfy, wcwidth, braceexpand; everything else is in the device image); env.txt;
# 1. in the background, on the CPU: `bcos-clip bench --memory --model-cost` (accounting.json);
# 2. the Triton kernels against the torch formulas, the conv -> BatchNorm kernels (nn.fused_conv_bn)
#    against nn.fused_torch and a conv -> BatchNorm pair with and without "conv_bn" (layers.json; a
#    mismatch runs the rest --triton off, which also turns "conv_bn" off);
# 3. 20 steps of `bcos-clip train` with amp_bf16 and with amp = fp16 + GradScaler (train.json);
# 4. `bcos-clip bench`: eager and compiled training rows of RN50 and ViT-B-16 (batch 128) and the
#    end-to-end distillation step on shards, in what is left of the budget (bench.json, rewritten after
#    every row, so a cut-off run keeps what it measured);
# 5. gpu_check.json: all of it, and the accounting validated against this run's rows.
# Every stage is bounded by `timeout`; a failing stage is recorded and the next one runs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/bcos_clip_gpu_check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
QUICK=()
[ "${1:-}" = "--quick" ] && QUICK=(--quick)
BUDGET="${GPU_CHECK_BUDGET:-450}"  # seconds for everything (8 minutes minus a margin for the merge)
TRAIN_STEPS="${TRAIN_STEPS:-20}"
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
exec > >(tee "$OUT/gpu_check.log") 2>&1

if ! python3 -c "import open_clip, webdataset, ftfy" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site
  else
    echo "open_clip / webdataset missing and no wheels in .whl/"; exit 1
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
  nvidia-smi 2>/dev/null || echo "no nvidia-smi"
  python3 - <<'EOF'
import os, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "cpus", os.cpu_count())
try:
    import triton
    print("triton", triton.__version__)
except ImportError:
    print("triton missing")
import open_clip, webdataset
print("open_clip", open_clip.__version__, "webdataset", getattr(webdataset, "__version__", "?"))
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, p.total_memory // 2**20, "MiB", p.multi_processor_count, "SMs")
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== 1. accounting (CPU, background)"
OMP_NUM_THREADS=4 timeout "$(left)" nice -n 5 python3 -m bcos_clip.cli bench "${QUICK[@]}" --memory --model-cost \
  --device cpu --output "$OUT/accounting.json" > "$OUT/accounting.log" 2>&1 &
ACC_PID=$!

echo "== 2. Triton kernels vs torch formulas"
timeout 90 python3 benchmarks/bench_layers.py "${QUICK[@]}" --check-only --output "$OUT/layers.json"
LAYERS_RC=$?
TRITON=on
if [ "$LAYERS_RC" = 1 ]; then
  TRITON=off
  echo "Triton kernels disagree with the torch formulas: the bench runs with --triton off"
fi

echo "== 3. bcos-clip train, ${TRAIN_STEPS} steps: amp_bf16, amp (fp16 + GradScaler) [$(left) s left]"
timeout 260 python3 benchmarks/gpu_train_check.py "${QUICK[@]}" --steps "$TRAIN_STEPS" --timeout 120 \
  --output "$OUT/train.json"
echo "train check rc=$?"

LEFT=$(( $(left) - 30 ))
[ "$LEFT" -lt 60 ] && LEFT=60
echo "== 4. bcos-clip bench: eager + compiled training rows, end-to-end [${LEFT} s]"
timeout $(( LEFT + 30 )) python3 -m bcos_clip.cli bench "${QUICK[@]}" --sections train,compile,e2e --batches 128 \
  --iters 5 --warmup 2 --triton "$TRITON" --time-budget "$LEFT" --output "$OUT/bench.json"
echo "bench rc=$?"

echo "== 5. merge"
WAIT=$(left); [ "$WAIT" -lt 5 ] && WAIT=5
for _ in $(seq "$WAIT"); do kill -0 "$ACC_PID" 2>/dev/null || break; sleep 1; done
kill "$ACC_PID" 2>/dev/null && echo "accounting did not finish in the budget (rerun it on a CPU: bcos-clip bench --memory --model-cost --measured bench.json)"
wait "$ACC_PID" 2>/dev/null
tail -n 3 "$OUT/accounting.log"
python3 benchmarks/gpu_check_merge.py "$OUT"
echo "gpu_check done in $(( $(date +%s) - START )) s; layers rc=$LAYERS_RC"
