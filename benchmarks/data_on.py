"""``train.data_on: host`` against ``device``: throughput of ``ssl-bench run`` in each mode.

Runs ``ssl-bench run recipes/ham10000/byol_ham28.yaml`` (the real HAM10000 JPEGs through the isic
adapter, timm ResNet-18 standard stem, batch 256, one epoch, no evaluation) with
``--set train.data_on=device`` and ``=host``, each in a fresh process, interleaved A B B A …, and
prints the median ``images_per_s`` of each and ``host_vs_device=`` (host ÷ device).  On a CPU both
keep the split in host memory; host mode gathers each step's images one step ahead (the order of
the GPU's asynchronous prefetch), target ≥ 0.97.  On a GPU, device mode copies the split to GPU
memory once; host mode gathers into pinned memory and copies each batch on a side stream while the
previous step runs.

Usage:  python benchmarks/data_on.py [--size 28] [--reps 4] [--device auto] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput_vs_lightly import HAM_ZIP, run_ssl_bench  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not HAM_ZIP.is_file():
        sys.exit(f"HAM10000 zip not found at {HAM_ZIP}; set SSL_BENCH_SHARED_DATA to the folder holding subsets/")
    got: dict[str, list[dict]] = {"device": [], "host": []}
    with tempfile.TemporaryDirectory() as cache_dir:
        print(f"== {args.size} px, batch {args.batch}, device {device}, {args.reps} interleaved reps", flush=True)
        for rep in range(args.reps):
            for mode in (("device", "host") if rep % 2 == 0 else ("host", "device")):  # A B B A: no mode always first
                r = run_ssl_bench(args.size, args.batch, device, cache_dir, [*args.sets, f"train.data_on={mode}"])
                got[mode].append(r)
                gpu = f", peak GPU {r['peak_gpu_memory_mb']:.0f} MiB" if r.get("peak_gpu_memory_mb") else ""
                print(f"  rep {rep + 1} data_on={mode:6s} {r['images_per_s']:7.1f} img/s  loss {r['loss']:.6f}  "
                      f"peak RSS {r['peak_rss_mb']:.0f} MiB{gpu}", flush=True)
    med = {m: statistics.median(r["images_per_s"] for r in rs) for m, rs in got.items()}
    same = all(a["loss"] == b["loss"] for a, b in zip(got["device"], got["host"]))
    print(f"  command: {got['host'][0]['command']}")
    print(f"  median img/s: device {med['device']:.1f}  host {med['host']:.1f}  · "
          f"same epoch loss in both modes: {same}")
    print(f"size={args.size} host_vs_device={med['host'] / med['device']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
