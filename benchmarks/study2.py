"""The study's second round (docs/results.md, "Round 2"): seven rows trained longer, 3 seeds, with the
networks of BYOL and BYOL-TracIn kept along the way and evaluated, resumable across sittings.

    python benchmarks/study2.py                       # all of it into runs/study2 (hours; resumable)
    python benchmarks/study2.py --dry-run             # the commands, nothing run
    python benchmarks/study2.py --seeds 0 --epochs 4  # a small trial
    python benchmarks/study_report.py --root runs/study2 --tag round2 --epochs 8,16,24,32,40   # publish

The rows are round 1's recipes (recipes/study/, the flagship scaled to HAM10000 at 32 px) with only
``train.epochs`` changed (``--epochs``; round 1: 10) — Random, BYOL, BYOL-Sup, FS, BYOL-TracIn,
BYOL-TracIn-pretrained and BYOL-TracIn-cos — plus what the round needs to be resumable and drawn:
``train.checkpoint_every=1`` (a sitting that stops loses at most one epoch) and, for BYOL and
BYOL-TracIn, ``train.save_epochs`` at every fifth of the run.  Each of those kept networks is then
evaluated with ``ssl-bench evaluate RUN --epoch E`` (linear probe and fine-tuning with 100 % of the
labels, the validated protocol of the recipes): BMA vs pre-training epoch.  The pretrained row
scores with the BYOL run of its own seed at its last epoch, as in round 1.

Seed-major order: a sitting that stops early has every row of the first seeds.  Every step is skipped
when its output exists (``ssl-bench sweep`` skips finished runs and resumes interrupted ones; an
evaluation is skipped when the run holds a results file of that epoch).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# row → recipe under recipes/study/; the order within a seed: the producer (BYOL) first, then the rows
# of the round's question (BYOL-TracIn, its pretrained form after its producer), then the others
ROWS = {
    "random": "study_random.yaml",
    "byol": "study_byol.yaml",
    "tracin": "study_tracin.yaml",
    "tracin_pre": "study_tracin_pre.yaml",
    "fs": "study_fs.yaml",
    "tracin_cos": "study_tracin_cos.yaml",
    "sup": "study_sup.yaml",
}
CURVE_ROWS = ("byol", "tracin")
CURVE_EVALUATIONS = ("evaluate=[{name: linear}, "
                     "{name: finetune, label_fraction: 1.0, epochs: 5, seeds: 1, select_metric: balanced_accuracy}]")


def kept_epochs(epochs: int, points: int = 5) -> list[int]:
    """``points`` evenly spaced epochs ending at the last one (40 → 8, 16, 24, 32, 40)."""
    return sorted({max(1, round(epochs * i / points)) for i in range(1, points + 1)})


def run_dir(root: Path, row: str, seed: int) -> Path:
    """Where ``ssl-bench sweep`` puts the row's run of ``seed`` (its own plan, not a copy of its layout)."""
    if str(REPO) not in sys.path:  # run as a script from anywhere: import this checkout's package
        sys.path.insert(0, str(REPO))
    from ssl_bench.sweep import plan_sweep

    return plan_sweep(str(REPO / "recipes" / "study" / ROWS[row]), [], [seed], [], str(root))[0].out


def train_cmd(row: str, seed: int, args) -> list[str]:
    sets = ["train.checkpoint_every=1"]
    if row != "random":  # an untrained network (train.epochs: 0) has no pre-training to lengthen
        sets.insert(0, f"train.epochs={args.epochs}")
    if row in CURVE_ROWS:
        sets.append(f"train.save_epochs=[{', '.join(map(str, kept_epochs(args.epochs)))}]")
    if row == "tracin_pre":
        sets.append(f"selector.checkpoint={run_dir(args.root, 'byol', seed)}")
    if args.threads:
        sets.append(f"train.threads={args.threads}")
    cmd = ["ssl-bench", "sweep", f"recipes/study/{ROWS[row]}", "--seeds", str(seed), "--out-root", str(args.root),
           "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def evaluated_epochs(run: Path) -> set[int]:
    """Epochs of the run's kept networks that ``ssl-bench evaluate --epoch`` has already evaluated."""
    done = set()
    for f in run.glob("results-evaluate-*.json"):
        try:
            e = json.loads(f.read_text()).get("evaluated_epoch")
        except (OSError, ValueError):
            continue
        if isinstance(e, int):
            done.add(e)
    return done


def curve_cmds(row: str, seed: int, args, planned: bool = False) -> list[list[str]]:
    """The evaluations of the run's kept networks not made yet (``planned``: all of them)."""
    run = run_dir(args.root, row, seed)
    done = evaluated_epochs(run) if run.is_dir() and not planned else set()
    cmds = []
    for e in kept_epochs(args.epochs)[:-1]:  # the last epoch's network is the run's own evaluation
        if e not in done:
            cmds.append(["ssl-bench", "evaluate", str(run), "--epoch", str(e), "--set", CURVE_EVALUATIONS])
    return cmds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("runs/study2"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=40, help="pre-training epochs of every trained row")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"a subset of {','.join(ROWS)}")
    ap.add_argument("--threads", type=int, default=None, help="train.threads of every run (default: the recipe's)")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    unknown = [r for r in args.rows.split(",") if r not in ROWS]
    if unknown:
        raise SystemExit(f"--rows: unknown row {unknown[0]!r} (rows: {', '.join(ROWS)})")
    rows = [r for r in ROWS if r in args.rows.split(",")]
    os.chdir(REPO)
    os.environ.setdefault("SSL_BENCH_MEDMNIST_ROOT", "../shared/data/medmnist")
    for seed in [int(s) for s in args.seeds.split(",")]:
        for row in rows:
            step(train_cmd(row, seed, args), row, seed, args.dry_run)
            if row in CURVE_ROWS:  # listed after the run has trained: its kept networks exist then
                for cmd in curve_cmds(row, seed, args, planned=args.dry_run):
                    step(cmd, row, seed, args.dry_run)


def step(cmd: list[str], row: str, seed: int, dry_run: bool) -> None:
    print(f"== study2: {row} seed {seed} ({time.strftime('%H:%M:%S')}): {shlex.join(cmd)}", flush=True)
    if dry_run:
        return
    t0 = time.perf_counter()
    rc = subprocess.run(cmd).returncode
    print(f"== study2: {row} seed {seed}: exit {rc} after {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    if rc != 0:
        sys.exit(rc)

if __name__ == "__main__":
    main()
