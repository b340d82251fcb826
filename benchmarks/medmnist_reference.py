"""Validate the fine-tuning protocols against a published table: MedMNIST v2's ResNet-18 (28) rows.

Trains a randomly initialised ResNet-18 (3×3 stride-1 stem, no max-pool: MedMNIST's "ResNet-18 (28)")
on the official MedMNIST splits in ../shared/data/medmnist with a fine-tuning protocol of ssl-bench
(default ``finetune_medmnist``, MedMNIST's own recipe), several seeds, and prints test ACC and AUC
beside the published values (Yang et al., "MedMNIST v2", Scientific Data 2023, Table 3):

    BreastMNIST 0.863 / 0.901   PneumoniaMNIST 0.854 / 0.944   RetinaMNIST 0.524 / 0.717

The test metrics are ssl-bench's (scikit-learn) and, from the same predictions, ``medmnist.Evaluator``'s;
the two must agree.  Also printed: BMA, the majority-class accuracy and how many classes were predicted.
Each finished (dataset, seed) is appended to ``--out`` (JSON lines), so an interrupted call resumes.

Usage:
  python benchmarks/medmnist_reference.py                                  # 3 datasets × 3 seeds × 100 epochs
  python benchmarks/medmnist_reference.py --epochs pneumoniamnist=10 --out docs/results/validation/medmnist.jsonl
  python benchmarks/medmnist_reference.py --protocol finetune --report docs/results/validation/*.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ROOT = Path(os.environ.get("SSL_BENCH_MEDMNIST_ROOT", REPO.parent / "shared" / "data" / "medmnist"))
os.environ["SSL_BENCH_MEDMNIST_ROOT"] = str(ROOT)

# MedMNIST v2 (Scientific Data 2023), Table 3, ResNet-18 (28): (ACC, AUC) on the test split
PUBLISHED = {"breastmnist": (0.863, 0.901), "pneumoniamnist": (0.854, 0.944), "retinamnist": (0.524, 0.717)}
TOLERANCE = 0.03
DEFAULT_EPOCHS = {"finetune_medmnist": 100, "finetune": 20}  # the protocols' defaults (evaluate/finetune.py)


def run_one(flag: str, seed: int, protocol: dict, device: str, log) -> dict:
    import numpy as np
    import torch
    from medmnist import Evaluator

    from ssl_bench.data import DATASETS
    from ssl_bench.evaluate import EVALUATIONS, EvalContext

    data = DATASETS.build({"name": "medmnist", "flag": flag, "size": 28}, key="data")
    ctx = EvalContext.from_scratch(data, {"name": "resnet18", "small_image_stem": True}, torch.device(device),
                                   channels_last=True, log=log)
    ev = EVALUATIONS.build({**protocol, "from_scratch": True}, key="protocol")
    t0 = time.perf_counter()
    m = ev.run_seed(ctx, seed, test_proba=True)
    proba = m.pop("proba")
    auc_ev, acc_ev = Evaluator(flag, "test", root=str(ROOT)).evaluate(proba)
    return {
        "dataset": data.name, "flag": flag, "seed": seed, "protocol": protocol,
        "minutes": (time.perf_counter() - t0) / 60,
        "accuracy": m["accuracy"], "auc": m["auc"], "balanced_accuracy": m["balanced_accuracy"],
        "evaluator_accuracy": float(acc_ev), "evaluator_auc": float(auc_ev),
        "majority_accuracy": m["majority_accuracy"], "predicted_classes": m["predicted_classes"],
        "pred_histogram": m["pred_histogram"], "chosen_epoch": m["chosen_epoch"], "val_history": m["val_history"],
        "labels": np.bincount(data.test.labels.numpy().reshape(-1)).tolist(),
    }


def report(records: list[dict]) -> str:
    """The markdown table: mean ± std over seeds per (protocol, dataset) beside the published row."""
    groups: dict = {}
    for r in records:
        epochs = r["protocol"].get("epochs") or DEFAULT_EPOCHS.get(r["protocol"]["name"])
        groups.setdefault((r["protocol"]["name"], epochs, r["flag"]), []).append(r)
    lines = ["| protocol | dataset | epochs | seeds | ACC | AUC | published ACC / AUC | Δ ACC / Δ AUC | "
             "within 0.03 or 2 std | BMA | "
             "majority ACC | Evaluator agrees | minutes/seed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (name, epochs, flag), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], list(PUBLISHED).index(kv[0][2]))):
        def ms(k):
            v = [r[k] for r in rs]
            return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)

        (acc, acc_s), (auc, auc_s), (bma, bma_s) = ms("accuracy"), ms("auc"), ms("balanced_accuracy")
        pa, pu = PUBLISHED[flag]
        ok = all(abs(v - p) <= max(TOLERANCE, 2 * s) for v, p, s in ((acc, pa, acc_s), (auc, pu, auc_s)))
        agree = all(abs(r["accuracy"] - r["evaluator_accuracy"]) < 1e-4
                    and abs(r["auc"] - r["evaluator_auc"]) < 1e-4 for r in rs)
        lines.append(
            f"| {name} | {rs[0]['dataset']} | {epochs} | {len(rs)} | {acc:.3f} ± {acc_s:.3f} | "
            f"{auc:.3f} ± {auc_s:.3f} | "
            f"{pa:.3f} / {pu:.3f} | {acc - pa:+.3f} / {auc - pu:+.3f} | {'yes' if ok else 'no'} | "
            f"{bma:.3f} ± {bma_s:.3f} | {rs[0]['majority_accuracy']:.3f} | "
            f"{'yes' if agree else 'NO'} | {statistics.mean(r['minutes'] for r in rs):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="breastmnist,pneumoniamnist,retinamnist")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--protocol", default="finetune_medmnist", help="finetune_medmnist (MedMNIST's recipe) or finetune")
    ap.add_argument("--epochs", action="append", default=[],
                    help="FLAG=N: fewer epochs for one dataset (say so when publishing)")
    ap.add_argument("--set", action="append", default=[], dest="sets",
                    help="KEY=VALUE: another protocol option (YAML value)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="JSON lines: finished (dataset, seed) records; resumes")
    ap.add_argument("--report", nargs="*", default=None, help="only print the table of these JSON-lines files")
    args = ap.parse_args()
    if args.report is not None:
        records = {f: [json.loads(line) for line in Path(f).read_text().splitlines() if line.strip()]
                   for f in args.report}
        # the validation folder also holds other benchmarks' files: a glob of it must not end in a KeyError
        other = [f for f, recs in records.items() if not all("protocol" in r and "dataset" in r for r in recs)]
        if other:
            print(f"left out (not this script's records): {', '.join(other)}", file=sys.stderr)
        print(report([r for f, recs in records.items() if f not in other for r in recs]))
        return
    import torch
    import yaml

    if args.threads:
        torch.set_num_threads(args.threads)
    epochs = {k: int(v) for k, v in (e.split("=", 1) for e in args.epochs)}
    extra = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.sets)}
    records = []
    if args.out and Path(args.out).is_file():
        records = [json.loads(line) for line in Path(args.out).read_text().splitlines() if line.strip()]
    for flag in args.datasets.split(","):
        protocol = {"name": args.protocol, **({"epochs": epochs[flag]} if flag in epochs else {}), **extra}
        for seed in range(args.seeds):
            if any(r["flag"] == flag and r["seed"] == seed and r["protocol"] == protocol for r in records):
                continue
            r = run_one(flag, seed, protocol, args.device,
                        log=lambda line: print(line, flush=True)
                        if " epoch " in line and (line.split(" epoch ")[1].split("/")[0].endswith("0")) else None)
            records.append(r)
            print(f"{r['dataset']} seed {seed}: "
                  f"ACC {r['accuracy']:.3f} AUC {r['auc']:.3f} (Evaluator {r['evaluator_accuracy']:.3f} / "
                  f"{r['evaluator_auc']:.3f}) BMA {r['balanced_accuracy']:.3f} epoch {r['chosen_epoch']} · "
                  f"{r['minutes']:.1f} min", flush=True)
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(r) + "\n")
    print(report(records))


if __name__ == "__main__":
    main()
