#!/usr/bin/env bash
# The study of docs/results.md on one GPU, at 64 px, sized to finish in under 10 minutes: the same
# 13 rows (recipes/study/), one pre-training seed, pre-training epochs and fine-tuning scaled as
# below, written to runs/gpu_study and published under docs/results/gpu/ (tables: docs/results.md
# blocks gpu:*, when present).  Prints the wall time of each row.
#
#   bash benchmarks/gpu_study.sh                      # on a machine with CUDA
#   STUDY_SEEDS="0 1 2" bash benchmarks/gpu_study.sh  # three seeds (≈ 3× longer)
#
# Scale (GPU): HAM10000 at 72 → 64 px, 20 pre-training epochs (1 warm-up), fine-tuning 10 % for 20
# epochs and 100 % for 5, transfer as the CPU study.  Needs the same set-up as benchmarks/gpu_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benchmarks/gpu_env.sh
. benchmarks/gpu_env.sh
: "${SSL_BENCH_SHARED_DATA:?the HAM10000 zip (subsets/ham10000_200x150_jpeg.zip) was not found}"
export SSL_BENCH_ISIC_ROOT="$SSL_BENCH_SHARED_DATA/subsets/ham10000_200x150_jpeg.zip"
export SSL_BENCH_MEDMNIST_ROOT="$SSL_BENCH_SHARED_DATA/medmnist"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'gpu_study.sh needs a CUDA device'; print(torch.cuda.get_device_name())"
ROOT=${STUDY_ROOT:-runs/gpu_study}
SETS="data.size=72 augment.size=64 train.epochs=20 train.save_epochs=[4,12,20] selector.checkpoints=[4,12,20]"
t0=$SECONDS
ssl() { "$PY" -m ssl_bench.cli "$@"; }
for seed in ${STUDY_SEEDS:-0}; do
  for row in byol random fs tracin fs_pre tracin_pre tracin_cos tracin_cos_pre tracincp_pre fnc ft micle sup; do
    sets=()
    for s in $SETS; do
      case $s in
        train.save_epochs=*) [ "$row" = byol ] && sets+=(--set "$s");;
        selector.checkpoints=*) [ "$row" = tracincp_pre ] && sets+=(--set "$s");;
        *) sets+=(--set "$s");;
      esac
    done
    case $row in *_pre) sets+=(--set "selector.checkpoint=$ROOT/study_byol/default/seed$seed");; esac
    [ "$row" = random ] && sets=("${sets[@]/train.epochs=20/train.epochs=0}")
    t=$SECONDS
    ssl sweep "recipes/study/study_$row.yaml" --seeds "$seed" --out-root "$ROOT" --device cuda --quiet "${sets[@]}"
    echo "== $row seed $seed: $((SECONDS - t)) s (total $((SECONDS - t0)) s)"
  done
done
"$PY" benchmarks/study_report.py --root "$ROOT" --tag gpu --epochs 4,12,20
ssl compare docs/results/gpu/study --metric balanced_accuracy --format markdown
echo "gpu_study.sh: $((SECONDS - t0)) s"
