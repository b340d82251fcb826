"""The measurements behind the default fine-tuning protocol (docs/validation.md, section 2).

Fine-tunes an untrained ResNet-18 (the study's Random row: recipes/study/study_random.yaml, HAM10000 at
32 px, lesion-disjoint splits, 7 classes) with variants of ``finetune`` and prints test BMA, AUC,
accuracy and how many classes were predicted, best epoch by validation BMA.  Settings: all labels for 5
epochs and 10 % of the labels for 20 epochs (the study's two fine-tuning columns).  One JSON line per
(variant, setting, seed) goes to ``--out`` (resumable).

    python benchmarks/finetune_defaults.py --out docs/results/validation/ham_finetune_defaults.jsonl
    python benchmarks/finetune_defaults.py --report docs/results/validation/ham_finetune_defaults.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {
    "default (flips, balanced loss)": {},
    "no augmentation, balanced loss": {"augment": {"name": "none"}},
    "h+v flips, balanced loss": {"augment": {"name": "flip", "vflip": 0.5}},
    "flips, plain loss": {"class_weight": "none"},
    "old default (SGD 0.01 cosine, BYOL views)": {"optimizer": "sgd", "lr": 0.01, "weight_decay": 1e-4,
                                                  "schedule": "cosine", "class_weight": "none",
                                                  "augment": {"name": "byol", "size": 32, "blur": 0.0,
                                                              "solarize": 0.0}},
}
SETTINGS = {"100 % labels, 5 epochs": (1.0, 5), "10 % labels, 20 epochs": (0.1, 20)}


def report(records: list[dict]) -> str:
    lines = ["| variant | setting | seeds | test BMA | AUC | accuracy | classes predicted |",
             "|---|---|---|---|---|---|---|"]
    groups: dict = {}
    for r in records:
        groups.setdefault((r["variant"], r["setting"]), []).append(r)
    for (variant, setting), rs in groups.items():
        def ms(k):
            v = [r[k] for r in rs]
            return f"{statistics.mean(v):.3f}" + (f" ± {statistics.stdev(v):.3f}" if len(v) > 1 else "")

        lines.append(f"| {variant} | {setting} | {len(rs)} | {ms('balanced_accuracy')} | {ms('auc')} | "
                     f"{ms('accuracy')} | "
                     f"{'/'.join(str(r['predicted_classes']) for r in rs)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--report", nargs="*", default=None)
    args = ap.parse_args()
    if args.report is not None:
        print(report([json.loads(x) for f in args.report for x in Path(f).read_text().splitlines() if x.strip()]))
        return
    import torch

    from ssl_bench.data import DATASETS
    from ssl_bench.evaluate import EVALUATIONS, EvalContext
    from ssl_bench.recipe import load_recipe

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_recipe(REPO / "recipes" / "study" / "study_random.yaml").cfg
    data = DATASETS.build(cfg["data"], key="data")
    records = []
    if args.out and Path(args.out).is_file():
        records = [json.loads(x) for x in Path(args.out).read_text().splitlines() if x.strip()]
    for setting in args.settings.split(","):
        fraction, epochs = SETTINGS[setting]
        for seed in (int(s) for s in args.seeds.split(",")):
            for variant in args.variants.split(","):
                if any(r["variant"] == variant and r["setting"] == setting and r["seed"] == seed for r in records):
                    continue
                ctx = EvalContext.from_scratch(data, cfg["backbone"], torch.device("cpu"),
                                               view_size=cfg["augment"]["size"], channels_last=True)
                ev = EVALUATIONS.build({"name": "finetune", "label_fraction": fraction, "epochs": epochs,
                                        "from_scratch": True,
                                        "select_metric": "balanced_accuracy", **VARIANTS[variant]}, key="finetune")
                t0 = time.perf_counter()
                m = ev.run_seed(ctx, seed)
                r = {"variant": variant, "setting": setting, "seed": seed, "seconds": time.perf_counter() - t0,
                     **{k: m[k] for k in ("balanced_accuracy", "auc", "accuracy", "predicted_classes", "pred_histogram",
                                          "chosen_epoch")}}
                records.append(r)
                print(json.dumps(r), flush=True)
                if args.out:
                    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                    with open(args.out, "a") as f:
                        f.write(json.dumps(r) + "\n")
    print(report(records))


if __name__ == "__main__":
    main()
