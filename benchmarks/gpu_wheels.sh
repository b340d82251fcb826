#!/usr/bin/env bash
# Wheels of ssl-bench's pure-Python dependencies that GPU images usually lack (lightly, hydra-core,
# omegaconf, antlr4), into .whl/ (git-ignored), for `benchmarks/gpu_check.sh` on a machine without a
# package index.  Run here, with access to PyPI.  torch, torchvision, timm, pytorch-lightning
# (which carries lightning_fabric), numpy, pandas, scikit-learn, scipy, matplotlib, click, rich and
# PyYAML are expected on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: -d .whl lightly==1.6.0 hydra-core==1.3.8 omegaconf==2.3.1
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3   # published as an sdist only; pure Python
ls -la .whl
