#!/usr/bin/env bash
# The one prepared GPU run of the performance issue (a single call of the device tool).
#
#   bash benchmarks/gpu_check.sh           on the GPU machine: results under $OUT
#   bash benchmarks/gpu_check.sh --quick   the same logic on CPU with tiny towers (dry run)
#
# 1. installs the carried wheels when open_clip / webdataset are missing (.whl/: open_clip_torch,
#    webdataset, ftfy, wcwidth, braceexpand; everything else is in the device image);
# 2. benchmarks/bench_layers.py: checks the Triton kernels against the torch formulas (a mismatch
#    runs the bench with --triton off), then times single layers and the scale kernel's bandwidth;
# 3. `bcos-clip bench` inside what is left of the time budget (rows in priority order; every row is
#    guarded, and bench.json is rewritten after each row, so a cut-off run keeps what it measured).
# Files in $OUT: env.txt, layers.json, layers.log, bench.json, bench.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/bcos_clip_gpu_check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
QUICK=()
[ "${1:-}" = "--quick" ] && QUICK=(--quick)
BUDGET="${BENCH_BUDGET:-420}"  # seconds for everything below (the device call's limit minus a margin)
LAYERS_ARGS="${LAYERS_ARGS:-}"  # e.g. --check-only when device time is short
BENCH_ARGS="${BENCH_ARGS:-}"    # extra `bcos-clip bench` flags, e.g. "--iters 5 --batches 128"
START=$(date +%s)

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

python3 benchmarks/bench_layers.py "${QUICK[@]}" $LAYERS_ARGS --output "$OUT/layers.json" 2>&1 | tee "$OUT/layers.log"
LAYERS_RC=${PIPESTATUS[0]}
TRITON=on
if [ "$LAYERS_RC" = 1 ]; then
  TRITON=off
  echo "Triton kernels disagree with the torch formulas: the bench runs with --triton off"
fi

LEFT=$(( BUDGET - ($(date +%s) - START) ))
[ "$LEFT" -lt 60 ] && LEFT=60
echo "bench: ${LEFT} s budget"
python3 -m bcos_clip.cli bench "${QUICK[@]}" $BENCH_ARGS --triton "$TRITON" --time-budget "$LEFT" \
  --output "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
echo "gpu_check done in $(( $(date +%s) - START )) s; layers rc=$LAYERS_RC"
