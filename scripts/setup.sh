#!/usr/bin/env bash
# Set up a virtual environment in .venv with everything pyro-dps needs (idempotent).
# torch==2.13.0 is installed first: that exact pin takes the CPU build on this project's machines;
# any looser spec would pull gigabytes of CUDA packages. On a GPU machine, install your own torch first
# and set PYRO_DPS_KEEP_TORCH=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if [ -z "${PYRO_DPS_KEEP_TORCH:-}" ]; then
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
.venv/bin/python -m pip install -q -e ".[test,notebooks,text,cleanlab,hf-trainer,tables,hf-datasets]"
