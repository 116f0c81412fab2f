#!/usr/bin/env bash
# Set up .venv-arviz1: pyro-dps with ArviZ 1.3 (arviz-base / arviz-stats / arviz-plots), so that the
# ArviZ adapter and diagnostics can be tested on both ArviZ lines (0.x in .venv, 1.x here). Idempotent.
#
# torch==2.13.0 is installed FIRST: that exact pin takes the CPU build on this project's machines; any
# looser spec would pull gigabytes of CUDA packages. ArviZ 1.3 is installed without dependency
# resolution (--no-deps --ignore-requires-python): its metadata asks for a newer Python than 3.11, but
# the 1.3 line runs on 3.11; its runtime dependencies (xarray, numpy, scipy, matplotlib) come with
# pyro-dps, plus xarray-einstats and lazy_loader, installed explicitly.
#
#   bash scripts/setup_arviz1.sh
#   .venv-arviz1/bin/python -m pytest -q tests/test_arviz_data.py tests/test_diagnostics.py
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
VENV=${PYRO_DPS_ARVIZ1_VENV:-.venv-arviz1}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
if [ -z "${PYRO_DPS_KEEP_TORCH:-}" ]; then
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
fi
"$VENV/bin/python" -m pip install -q -e ".[test]"
"$VENV/bin/python" -m pip install -q --no-deps --ignore-requires-python \
  "arviz==1.3.0" "arviz-base>=1.3,<1.4" "arviz-stats>=1.3,<1.4" "arviz-plots>=1.3,<1.4"
"$VENV/bin/python" -m pip install -q xarray-einstats lazy_loader pytest
"$VENV/bin/python" - <<'PY'
import arviz, arviz_base, arviz_stats
assert arviz.__version__.startswith("1."), arviz.__version__
print(f"arviz {arviz.__version__} (arviz-base {arviz_base.__version__}, arviz-stats {arviz_stats.__version__}) ready")
PY
