#!/usr/bin/env bash
# The published study (docs/results.md): recipes/study/*.yaml, every row × seeds, resumable.
#
#   benchmarks/study_cpu.sh                 # all rows, seeds 0 1 2, into runs/study (≈ 4 h on 2 CPU cores)
#   STUDY_SEEDS="0" benchmarks/study_cpu.sh # one seed
#
# Seed-major order: a sitting that stops early has every row of the first seeds.  Re-running skips
# finished runs and resumes interrupted ones (ssl-bench sweep).  The pretrained rows score with the
# vanilla BYOL run of the same seed (study_byol, which keeps its epoch 2/4/6/8/10 networks).
# Then: `benchmarks/study_tables.sh` copies the small files to docs/results/ and prints the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${STUDY_ROOT:-runs/study}
SEEDS=${STUDY_SEEDS:-0 1 2}
DEVICE=${STUDY_DEVICE:-auto}
SETS=(${STUDY_SETS:-})          # extra --set KEY=VALUE for every run (the GPU study: sizes and epochs)
export SSL_BENCH_MEDMNIST_ROOT=${SSL_BENCH_MEDMNIST_ROOT:-../shared/data/medmnist}
ROWS="byol random fs tracin fs_pre tracin_pre tracin_cos tracin_cos_pre tracincp_pre fnc ft micle sup"
sets=(); for s in "${SETS[@]}"; do sets+=(--set "$s"); done
for seed in $SEEDS; do
  for row in $ROWS; do
    extra=()
    case $row in *_pre) extra=(--set "selector.checkpoint=$ROOT/study_byol/default/seed$seed");; esac
    echo "== study: $row seed $seed ($(date +%H:%M:%S))"
    ssl-bench sweep "recipes/study/study_$row.yaml" --seeds "$seed" --out-root "$ROOT" --device "$DEVICE" \
      --quiet "${sets[@]}" "${extra[@]}"
  done
done
