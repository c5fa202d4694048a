#!/usr/bin/env bash
# Set up (.venv) and run the offline demo: `bash scripts/demo.sh [--quick] [--arch rn|vit] [--out DIR]`.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
bash scripts/setup.sh
. .venv/bin/activate
exec bcos-clip demo "$@"
