"""Wall time of data-parallel training: 1 process vs ``--devices N`` processes, same recipe, same
global batch.

    python benchmarks/ddp_walltime.py [--devices 2] [--epochs 2] [--batch 128] [--cores 2] [--reps 1]

Runs ``python -m ssl_bench.cli run`` (BYOL+TracIn on BreastMNIST, light views, no evaluation) once
with one process and once with ``--devices N`` (CPU, gloo), alternating for ``--reps`` rounds.
``--cores`` is shared fairly: one process gets ``train.threads = cores``, each of N processes
``cores / N``; a control run of one process with ``cores / N`` threads separates the cost of
intra-op threading (large on an oversubscribed machine) from that of DDP.  Printed per run:
the command's wall time (start-up, imports, process launch and
training) and the loop's own ``train.wall_time_s`` from results.json; the last lines are the
medians and the ratio (N processes / 1 process).  On a CPU-only machine DDP cannot beat one
process using the same cores (the work is the same, plus gradient all-reduce and the selectors'
all-gathers); the figure shows the overhead.  On N GPUs it is the speed-up that matters.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "medmnist" / "byol_breastmnist.yaml"


def one_run(devices: int, threads: int, args, root: Path) -> tuple[float, float]:
    out = root / f"d{devices}-{time.time_ns()}"
    cmd = [
        sys.executable, "-m", "ssl_bench.cli", "run", str(RECIPE), "--quiet", "--out", str(out),
        "--set", f"train.epochs={args.epochs}", "--set", f"train.batch_size={args.batch}",
        "--set", "selector.name=tracin", "--set", f"objective.hidden_dim={args.hidden}",
        "--set", f"train.threads={threads}", "--set", "evaluate=[]", "--set", "train.device=cpu",
    ]
    if devices > 1:
        cmd += ["--devices", str(devices)]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"run failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    train = json.loads((out / "results.json").read_text())["train"]["wall_time_s"]
    return wall, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=128, help="global batch")
    p.add_argument("--hidden", type=int, default=1024, help="objective.hidden_dim")
    p.add_argument("--cores", type=int, default=2, help="CPU threads shared by the processes")
    p.add_argument("--reps", type=int, default=1)
    args = p.parse_args()
    per_proc = max(args.cores // args.devices, 1)
    print(f"BYOL+TracIn, BreastMNIST, {args.epochs} epochs, global batch {args.batch}, {args.cores} cores; "
          f"load average {os.getloadavg()[0]:.1f}")
    configs = [(1, args.cores), (args.devices, per_proc), (1, per_proc)]  # the last: the threading control
    res: dict[tuple[int, int], list[tuple[float, float]]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for devices, threads in configs:
                wall, train = one_run(devices, threads, args, Path(tmp))
                res[devices, threads].append((wall, train))
                print(f"rep {rep}  processes {devices}  threads/process {threads}  command {wall:.1f} s  training loop "
                      f"{train:.1f} s",
                      flush=True)
    med = {c: (statistics.median(w for w, _ in r), statistics.median(t for _, t in r)) for c, r in res.items()}
    for (d, th), (w, t) in med.items():
        print(f"median processes={d} threads={th}: command {w:.1f} s, training loop {t:.1f} s")
    one, ddp = med[configs[0]], med[configs[1]]
    print(f"ratio_command={ddp[0] / one[0]:.2f}")
    print(f"ratio_train={ddp[1] / one[1]:.2f}")
    print(f"ratio_train_vs_1proc_{per_proc}thread={ddp[1] / med[configs[2]][1]:.2f}")


if __name__ == "__main__":
    main()
