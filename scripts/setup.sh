#!/usr/bin/env bash
# Create .venv (if missing) and install torch first, then bcos_clip with every extra the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch, torchvision" 2>/dev/null; then
  # torch first, in its own pip call (a GPU machine may keep its own build: see README)
  python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
python -m pip install -q -e ".[test,hf,serve,plot,wandb]"
