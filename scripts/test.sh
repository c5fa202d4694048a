#!/usr/bin/env bash
# The test command: `bash scripts/test.sh` (fast suite) or `bash scripts/test.sh --all` (slow tests too).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
[ -x .venv/bin/python ] && . .venv/bin/activate
if [ "${1:-}" = "--all" ]; then
  shift
  exec python -m pytest -q "$@"
fi
exec python -m pytest -q -m "not slow" "$@"
