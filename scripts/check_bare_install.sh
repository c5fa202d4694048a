#!/usr/bin/env bash
# A fresh venv with only `pip install -e .` (no extras): `bcos-clip demo --quick` must complete, and a
# command that needs an extra (`serve`) must stop at once with one line naming it (issue 15, item 3).
#
#   bash scripts/check_bare_install.sh [VENV_DIR] [DEMO_OUT]     # defaults: /tmp/bcos_clip_bare, /tmp/bcos_clip_bare_demo
#
# Prints the install time, then for each command its wall time, exit code and last line; exits non-zero
# when the demo fails or the serve message is not the one line with the pip command. Takes ~2 min to
# install (torch from the registry or pip's cache) plus the quick demo (~2 min on an idle 2-core CPU).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-/tmp/bcos_clip_bare}"
OUT="${2:-/tmp/bcos_clip_bare_demo}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

start=$(date +%s)
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
"$VENV/bin/pip" install -q -e "$ROOT"
echo "install: $(( $(date +%s) - start )) s"
for m in matplotlib fastapi uvicorn transformers datasets; do
  if "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$m') is None)"; then
    echo "FAIL: $m is installed in the bare venv (a base dependency pulls it in?)"; exit 1
  fi
done

run() {  # run NAME CMD...: wall time, exit code, last line
  local name="$1"; shift
  local t0=$EPOCHREALTIME rc=0
  "$@" > "/tmp/bare_$name.log" 2>&1 || rc=$?
  printf '%s: %s s, exit %d, last line: %s\n' "$name" "$(awk "BEGIN {printf \"%.1f\", $EPOCHREALTIME - $t0}")" \
    "$rc" "$(tail -n 1 "/tmp/bare_$name.log")"
  return "$rc"
}

rm -rf "$OUT"
run demo "$VENV/bin/bcos-clip" demo --quick --out "$OUT"
grep -q "charts are drawn with Pillow" /tmp/bare_demo.log || { echo "FAIL: no Pillow fallback note"; exit 1; }
rc=0; run serve "$VENV/bin/bcos-clip" serve --model "$OUT/students/text_kd/checkpoints/latest" || rc=$?
[ "$rc" -eq 2 ] && [ "$(wc -l < /tmp/bare_serve.log)" -eq 1 ] \
  && grep -q "pip install 'bcos_clip\[serve\]'" /tmp/bare_serve.log || { echo "FAIL: serve message"; exit 1; }
echo "ok"
