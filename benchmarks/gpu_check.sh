#!/usr/bin/env bash
# The GPU check: one script, < 8 minutes on one GPU.  Prints, at 128 px (ISIC-like images: the real
# HAM10000 JPEGs decoded to 128 px through the isic adapter):
#   1. throughput of `ssl-bench run` (train.precision auto: bf16-mixed on a bf16 GPU, and 32-true) vs
#      lightly's documented BYOL loop (8 loader workers) and vs the pure model step in fp32 and in bf16
#      (vs_lightly=, vs_ceiling=, bf16_speedup=, bf16_ceiling=, vs_bf16_ceiling=), peak RSS and peak GPU
#      memory of each;
#   2. train.data_on host vs device (host_vs_device=, same loss in both modes);
#   3. BYOL-TracIn step-time ratios (on-the-fly, light views, pretrained) and closed form vs autograd.
#
# Run from the repository root on a machine with CUDA:   bash benchmarks/gpu_check.sh
# Needs torch/torchvision/timm/pytorch-lightning (present on most GPU images) and the project's pure-
# Python dependencies: an installed ssl-bench (`pip install -e .`), or, on a machine without a
# package index, wheels in .whl/ made beforehand by `bash benchmarks/gpu_wheels.sh` (installed here
# into /tmp/site).  Data: $SSL_BENCH_SHARED_DATA, else shared/data in the checkout, else ../shared/data
# (it needs subsets/ham10000_200x150_jpeg.zip only).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benchmarks/gpu_env.sh
. benchmarks/gpu_env.sh
"$PY" - <<'PYEOF'
import torch, timm, lightly, omegaconf
print("torch", torch.__version__, "| timm", timm.__version__, "| lightly", lightly.__version__,
      "| cuda", torch.version.cuda, "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "NO GPU")
assert torch.cuda.is_available(), "gpu_check.sh needs a CUDA device"
PYEOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
t0=$SECONDS
echo "### 1. throughput at 128 px (HAM10000 JPEGs, ResNet-18 standard stem, BYOL, batch 256, one epoch)"
"$PY" benchmarks/throughput_vs_lightly.py --sizes 128 --reps 2 --device cuda --workers 8
echo "### 2. train.data_on: host vs device at 128 px"
"$PY" benchmarks/data_on.py --size 128 --reps 2 --device cuda
echo "### 3. TracIn step-time ratios at 128 px"
"$PY" benchmarks/tracin_overhead.py --device cuda --size 128 --reps 10
echo "gpu_check: done in $((SECONDS - t0)) s"
