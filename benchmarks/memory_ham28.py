"""Peak memory of a BYOL run on the 28 px HAM10000 array: target < 2 GB resident (issue #7).

Runs ``ssl-bench run recipes/ham10000/byol_ham28.yaml`` (ResNet-18, batch 256, hidden 4096, the
recipe's linear + kNN evaluation) in a fresh process, so that the figure is that run's alone, and
prints its peak RSS twice: as the run reports it (``results.json`` → ``peak_rss_mb``, from
``getrusage`` in the run) and as the operating system reports it for the finished child process
(``RUSAGE_CHILDREN``).  The whole 10,015-image array lives in memory as uint8 (23.6 MB); what
dominates is the network's activations at batch 256, torch's allocator and the imported libraries.

Usage:  python benchmarks/memory_ham28.py [--epochs 1] [--threads N] [--device cpu] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SSL_BENCH_SHARED_DATA", REPO.parent / "shared" / "data"))
HAM = DATA / "subsets" / "ham10000_lesions_28.npz"
LIMIT_MIB = 2048


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    env = {**os.environ, "SSL_BENCH_HAM28": str(HAM), "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    sets = [f"train.epochs={args.epochs}", *( [f"train.threads={args.threads}"] if args.threads else []), *args.overrides]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "ssl_bench.cli", "run", str(REPO / "recipes" / "ham10000" / "byol_ham28.yaml"),
               *[x for s in sets for x in ("--set", s)], "--device", args.device, "--out", str(out), "--quiet"]
        print("command:", " ".join(cmd[1:]))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        res = json.loads((out / "results.json").read_text())
    child_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    peak = max(res["peak_rss_mb"], child_mib)
    print(f"dataset {res['dataset']} · {res['method']} · backbone {res['backbone']} · {res['epochs']} epoch(s), "
          f"{res['train']['steps']} steps · device {res['device']} · wall {wall:.0f} s")
    print(f"peak RSS (run, results.json):   {res['peak_rss_mb']:.0f} MiB")
    print(f"peak RSS (OS, child process):   {child_mib:.0f} MiB")
    if res.get("peak_gpu_memory_mb") is not None:
        print(f"peak GPU memory:                {res['peak_gpu_memory_mb']:.0f} MiB")
    ok = peak < LIMIT_MIB
    print(f"peak {peak:.0f} MiB = {peak * 2**20 / 1e9:.2f} GB · target < 2 GiB ({LIMIT_MIB} MiB): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
