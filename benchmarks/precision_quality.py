"""Does bf16-mixed (the default where the hardware has bf16) change what a run learns?  fp32 vs bf16.

Pre-trains the study's BYOL and BYOL-TracIn rows (recipes/study/study_byol.yaml and study_tracin.yaml:
HAM10000 at 32 px, 10 epochs, ResNet-18) with ``train.precision: 32-true`` and ``bf16-mixed``, same
seeds, then compares the linear probe's and fine-tuning's (100 % labels, 5 epochs, the validated
``finetune``) test balanced accuracy and the selector's precision (share of same-label positives)
between the two precisions, seed by seed.  The question (docs/performance.md): is the paired
difference smaller than the spread over seeds?

Runs go through ``ssl-bench sweep`` (resumable: re-running skips finished runs), one directory per
precision under ``--out-root``.  The transfer columns are left out to fit a sitting.

    python benchmarks/precision_quality.py                       # seeds 0 1 2, both rows (≈ 2 h on 2 cores)
    python benchmarks/precision_quality.py --report              # the table from finished runs
    python benchmarks/precision_quality.py --report --json docs/results/validation/precision_quality.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROWS = {"BYOL": "study_byol", "BYOL-TracIn": "study_tracin"}
PRECISIONS = ("32-true", "bf16-mixed")
EVALUATE = ("evaluate=[{name: linear}, {name: finetune, label_fraction: 1.0, epochs: 5, seeds: 1, "
            "select_metric: balanced_accuracy}]")
METRICS = {"linear BMA": ("eval", "linear", "balanced_accuracy"),
           "fine-tune BMA (100 %)": ("eval", "finetune@1", "balanced_accuracy"),
           "selector precision": ("train", "selector_precision"),
           "final loss": ("train", "final_loss"),
           "images/s": ("train", "images_per_s")}


def run_dir(root: Path, precision: str, row: str, seed: int) -> Path:
    return root / precision / ROWS[row] / "default" / f"seed{seed}"


def train(root: Path, seeds: list[int], rows: list[str], threads: int | None) -> None:
    env = {**os.environ,
           "SSL_BENCH_MEDMNIST_ROOT": os.environ.get("SSL_BENCH_MEDMNIST_ROOT", "../shared/data/medmnist")}
    for seed in seeds:                      # seed-major and precision-inner: a sitting that stops early has pairs
        for row in rows:
            for precision in PRECISIONS:
                cmd = ["ssl-bench", "sweep", f"recipes/study/{ROWS[row]}.yaml", "--seeds", str(seed),
                       "--out-root", str(root / precision), "--quiet",
                       "--set", f"train.precision={precision}", "--set", EVALUATE, "--set", "train.save_epochs=[]",
                       # a checkpoint every epoch: a sitting that ends mid-run loses at most an epoch (it changes
                       # nothing the run computes; resume is bit-identical)
                       "--set", "train.checkpoint_every=1"]
                if threads:
                    cmd += ["--set", f"train.threads={threads}"]
                print("==", row, precision, "seed", seed, flush=True)
                subprocess.run(cmd, cwd=REPO, env=env, check=True)


def value(results: dict, path: tuple) -> float | None:
    v = results
    for k in path:
        v = v.get(k) if isinstance(v, dict) else None
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def collect(root: Path, seeds: list[int], rows: list[str]) -> dict:
    out: dict = {}
    for row in rows:
        for precision in PRECISIONS:
            for seed in seeds:
                f = run_dir(root, precision, row, seed) / "results.json"
                if f.is_file():
                    r = json.loads(f.read_text())
                    out.setdefault(row, {}).setdefault(precision, {})[seed] = {m: value(r, p)
                                                                               for m, p in METRICS.items()}
    return out


def ms(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{statistics.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")


def report(data: dict) -> tuple[str, list[dict]]:
    lines = ["| row | metric | seeds (paired) | fp32 | bf16 | bf16 − fp32 (paired) | seed spread (max std) | "
             "within spread |",
             "|---|---|---|---|---|---|---|---|"]
    records = []
    for row, by_prec in data.items():
        fp32, bf16 = by_prec.get("32-true", {}), by_prec.get("bf16-mixed", {})
        paired = sorted(set(fp32) & set(bf16))
        for metric in METRICS:
            a = [fp32[s][metric] for s in paired if fp32[s][metric] is not None and bf16[s][metric] is not None]
            b = [bf16[s][metric] for s in paired if fp32[s][metric] is not None and bf16[s][metric] is not None]
            if not a:
                continue
            diffs = [y - x for x, y in zip(a, b)]
            spread = max(statistics.stdev(a), statistics.stdev(b)) if len(a) > 1 else float("nan")
            d = statistics.mean(diffs)
            if metric == "images/s":
                verdict = f"× {statistics.mean(b) / statistics.mean(a):.2f}"
            elif metric == "selector precision":
                verdict = "yes" if abs(d) < 0.01 else "no"          # the bound: within 0.01
            elif metric == "final loss":
                verdict = ""
            else:
                verdict = ("yes" if abs(d) < spread else "no") if math.isfinite(spread) else "n/a (one seed)"
            lines.append(f"| {row} | {metric} | {len(a)} | {ms(a)} | {ms(b)} | {d:+.3f} "
                         f"({', '.join(f'{x:+.3f}' for x in diffs)}) | {spread:.3f} | {verdict} |")
            records.append({"row": row, "metric": metric, "seeds": paired, "fp32": a, "bf16": b, "mean_diff": d,
                            "spread": spread, "verdict": verdict})
    return "\n".join(lines), records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated: " + ", ".join(ROWS))
    ap.add_argument("--out-root", default="runs/precision_quality")
    ap.add_argument("--threads", type=int, default=None, help="train.threads for every run (default: the recipe's)")
    ap.add_argument("--report", action="store_true", help="only print the table from finished runs")
    ap.add_argument("--json", default=None, help="also write the table's figures to this JSON file")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = args.rows.split(",")
    root = (REPO / args.out_root).resolve()
    if not args.report:
        train(root, seeds, rows, args.threads)
    table, records = report(collect(root, seeds, rows))
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
