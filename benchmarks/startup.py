"""How long a recipe command takes before it answers: fresh processes, median of N, on this machine.

Times what users type (``ssl-bench`` as a process): ``--help``; ``show`` of a shipped recipe; a typo
in a recipe key, a component name and a component option; ``list selectors``; and, as the floor that
any command building a network pays, ``python -c "import torch"``.  Run it on an idle machine.

    python benchmarks/startup.py                 # 5 runs each
    python benchmarks/startup.py --runs 9 --json docs/results/validation/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = "recipes/byol_tracin_isic.yaml"
CASES = {
    "ssl-bench --help": ["--help"],
    "show (typo in a train key)": ["show", RECIPE, "--set", "train.epohcs=2"],
    "show (unknown selector name)": ["show", RECIPE, "--set", "selector.name=orcle"],
    "show (typo in a selector option)": ["show", RECIPE, "--set", "selector.kk=1"],
    f"show {RECIPE}": ["show", RECIPE],
    "list selectors": ["list", "selectors"],
}


def timed(cmd: list[str]) -> tuple[float, int]:
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "COLUMNS": "120"})
    return time.perf_counter() - t, p.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    exe = shutil.which("ssl-bench") or sys.exit("ssl-bench is not on PATH (pip install -e .)")
    cases = {"python -c 'import torch' (the floor)": [sys.executable, "-c", "import torch"]}
    cases |= {name: [exe, *argv] for name, argv in CASES.items()}
    for cmd in cases.values():  # warm the file cache (and the timm name cache) once
        timed(cmd)
    out = {}
    print(f"{'command':<48} {'median s':>9} {'min s':>7}  exit")
    for name, cmd in cases.items():
        times, codes = zip(*(timed(cmd) for _ in range(args.runs)))
        out[name] = {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3), "exit": codes[0]}
        print(f"{name:<48} {out[name]['median_s']:>9.2f} {out[name]['min_s']:>7.2f}  {codes[0]}")
    if args.json:
        summary = {"runs": args.runs, "cpus": os.cpu_count(), "results": out}
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
