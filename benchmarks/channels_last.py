"""channels_last or not, under the default precision (bf16-mixed on CPUs with bf16): ``ssl-bench run``
processes, interleaved A B A B, images/s of the second epoch (``metrics.jsonl``; the first warms up).

28 px: recipes/medmnist/byol_breastmnist.yaml (ResNet-18, small stem with its max-pool, batch 256).
64 px: recipes/study/study_byol.yaml at data.size 72, augment.size 64 (ResNet-18, timm's stem).
Each run trains 2 epochs of ``train.limit_batches`` steps with no evaluation.

    python benchmarks/channels_last.py --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {
    "28 px (BreastMNIST, small stem)": ["recipes/medmnist/byol_breastmnist.yaml", "--set", "train.batch_size=256"],
    "64 px (HAM10000, timm stem)": ["recipes/study/study_byol.yaml", "--set", "data.size=72", "--set",
                                    "augment.size=64",
                                    "--set", "train.save_epochs=[]"],
}


def images_per_s(args: list[str], channels_last: bool, steps: int, precision: str) -> float:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "run"
        env = {**os.environ,
               "SSL_BENCH_MEDMNIST_ROOT": os.environ.get("SSL_BENCH_MEDMNIST_ROOT", "../shared/data/medmnist")}
        subprocess.run(["ssl-bench", "run", *args, "--set", f"train.channels_last={str(channels_last).lower()}",
                        "--set", "train.epochs=2", "--set", f"train.limit_batches={steps}", "--set", "evaluate=[]",
                        "--set", f"train.precision={precision}", "--out", str(out), "--quiet"],
                       cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
        return json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["images_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    print("| setting | precision | channels_last img/s | contiguous img/s | "
          "ratio (median of pairs) |\n|---|---|---|---|---|")
    for name, recipe in SETTINGS.items():
        pairs = []
        for _ in range(args.repeats):
            a = images_per_s(recipe, True, args.steps, args.precision)
            b = images_per_s(recipe, False, args.steps, args.precision)
            pairs.append((a, b))
        ratio = statistics.median(a / b for a, b in pairs)
        print(f"| {name} | {args.precision} | {', '.join(f'{a:.1f}' for a, _ in pairs)} | "
              f"{', '.join(f'{b:.1f}' for _, b in pairs)} | {ratio:.3f} |", flush=True)


if __name__ == "__main__":
    main()
