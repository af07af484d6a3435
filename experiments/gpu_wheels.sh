#!/usr/bin/env bash
# Wheels the GPU machine lacks (its image has torch, Lightning, joblib, but not Hydra), put in
# .whl/ (ignored by git) for the device tool to carry: run here, before the device call.
#   bash experiments/gpu_wheels.sh && ls .whl
# Pure-Python wheels only; antlr4-python3-runtime (an sdist on PyPI) is built into one.
set -euo pipefail
PIP=${PIP:-.venv/bin/python -m pip}
rm -rf .whl && mkdir -p .whl
$PIP download -q --no-deps --only-binary=:all: -d .whl \
    hydra-core==1.3.8 omegaconf==2.3.1 hydra-joblib-launcher==1.2.0
$PIP wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls .whl
