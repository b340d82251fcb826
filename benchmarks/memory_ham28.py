"""Peak memory of a BYOL run on HAM10000 at 28 px: target < 2 GiB resident (standard ResNet stem).

Runs ``ssl-bench run recipes/ham10000/byol_ham28.yaml`` (ResNet-18, batch 256, hidden 4096, the
recipe's linear + kNN evaluation; the real HAM10000 JPEGs read from the zip by the isic adapter at
28 px) in a fresh process, so that the figure is that run's alone, and
prints the peak RSS the run reports (``results.json`` → ``peak_rss_mb``, from ``getrusage`` in the
run), for two backbones: timm's standard ResNet-18 stem (the configuration of the speed benchmarks;
target < 2 GiB) and the recipe's own small-image stem (3×3 conv + max-pool: layer 1 at 14×14 px, 4×
the activations; reported, no target).  The whole 10,015-image set lives in memory as uint8
(23.6 MB); what dominates is the imported libraries (≈ 1.05 GiB: the CUDA build of torch alone
maps ≈ 0.68 GiB) and the network's activations at batch 256.

Usage:  python benchmarks/memory_ham28.py [--stem standard|small|both] [--epochs 1] [--threads N]
            [--device cpu] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SSL_BENCH_SHARED_DATA", REPO.parent / "shared" / "data"))
HAM = DATA / "subsets" / "ham10000_200x150_jpeg.zip"
LIMIT_MIB = 2048


STEMS = {
    # the configuration of the speed benchmarks (timm's standard ResNet stem): the run that must stay < 2 GiB
    "standard": ["backbone.small_image_stem=false", "backbone.stem_pool=false"],
    # the recipe as shipped: 3×3 stem + max-pool, layer 1 at 14×14 px — 4× the activations of the standard stem
    "small": [],
}


def measure(stem: str, args) -> float:
    env = {**os.environ, "SSL_BENCH_HAM10000_ROOT": str(HAM),
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    sets = [*STEMS[stem], f"train.epochs={args.epochs}", *([f"train.threads={args.threads}"] if args.threads else []),
            *args.overrides]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "ssl_bench.cli", "run", str(REPO / "recipes" / "ham10000" / "byol_ham28.yaml"),
               *[x for s in sets for x in ("--set", s)], "--device", args.device, "--out", str(out), "--quiet"]
        print(f"== {stem} stem · command: ssl-bench " + " ".join(cmd[3:]), flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise SystemExit(proc.returncode)
        res = json.loads((out / "results.json").read_text())
    print(f"dataset {res['dataset']} · {res['method']} · backbone {res['backbone']} · {res['epochs']} epoch(s), "
          f"{res['train']['steps']} steps · {res['train']['images_per_s']:.0f} img/s · device {res['device']} · "
          f"wall {wall:.0f} s")
    print(f"peak RSS (run, results.json): {res['peak_rss_mb']:.0f} MiB = {res['peak_rss_mb'] * 2**20 / 1e9:.2f} GB")
    if res.get("peak_gpu_memory_mb") is not None:
        print(f"peak GPU memory:              {res['peak_gpu_memory_mb']:.0f} MiB")
    return res["peak_rss_mb"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--stem", choices=["standard", "small", "both"], default="both")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    peaks = {stem: measure(stem, args) for stem in (STEMS if args.stem == "both" else [args.stem])}
    for stem, peak in peaks.items():
        verdict = (f"target < 2 GiB ({LIMIT_MIB} MiB): {'PASS' if peak < LIMIT_MIB else 'FAIL'}" if stem == "standard"
                   else "(no target)")
        print(f"peak_rss_mb_{stem}_stem={peak:.0f}  {verdict}")
    return 0 if peaks.get("standard", 0) < LIMIT_MIB else 1


if __name__ == "__main__":
    raise SystemExit(main())
