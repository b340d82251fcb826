"""Cost as the data grows: ``ssl-bench run`` at 64 px on 10 k, 25 k and 100 k images, ``train.data_on: host``.

The images are the 10,015 HAM10000 JPEGs (../shared/data/subsets/ham10000_200x150_jpeg.zip),
**repeated** to reach 25 k and 100 k (hard links, each copy its own file name, in class folders by
diagnosis: the ``folder`` adapter, as a user's own images would be read).  Per size, three processes:

1. ``train.epochs: 0`` with a cold decode cache: the process's wall time minus (2)'s is the cache build;
2. the same again, warm: start-up, the carved split and the cache read;
3. 2 epochs of ``train.limit_batches`` steps each (a fresh random subset of the whole split per epoch):
   the second epoch's images/s (``metrics.jsonl``) and the run's peak RSS (``results.json``).

Printed beside the peak RSS: the uint8 image store the run must hold (N·72·72·3 bytes: images are
decoded at 72 px, as the study's 36 → 32, doubled) and the RSS the smallest size plus that growth
allows.  Targets (issue #27): images/s flat within 5 %, RSS growing only by the store, cache build linear.

    python benchmarks/scaling.py                         # 10k, 25k, 100k (≈ 25 min on 2 cores; 1.6 GB in --work)
    python benchmarks/scaling.py --sizes 10000,25000 --json docs/results/validation/scaling.json
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HAM = REPO.parent / "shared" / "data" / "subsets" / "ham10000_200x150_jpeg.zip"
DATA_SIZE, VIEW = 72, 64


def extract(work: Path) -> list[tuple[str, Path]]:
    """The JPEGs, once, under ``work/src``; ``[(diagnosis, path)]``."""
    src = work / "src"
    with zipfile.ZipFile(HAM) as z:
        meta = next(n for n in z.namelist() if n.endswith("HAM10000_metadata.csv"))
        dx = {r["image_id"]: r["dx"] for r in csv.DictReader(io.TextIOWrapper(z.open(meta), encoding="utf-8"))}
        if not src.is_dir():
            tmp = work / "src.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            for n in z.namelist():
                if n.endswith(".jpg"):
                    (tmp / Path(n).name).parent.mkdir(parents=True, exist_ok=True)
                    (tmp / Path(n).name).write_bytes(z.read(n))
            tmp.rename(src)
    files = sorted(src.glob("*.jpg"))
    return [(dx[f.stem], f) for f in files]


def build_folder(work: Path, files: list[tuple[str, Path]], n: int) -> Path:
    """``n`` images as class folders of hard links (copy c of file i is ``r<c>_<name>``)."""
    root = work / f"folder_{n}"
    if root.is_dir() and sum(1 for _ in root.rglob("*.jpg")) == n:
        return root
    shutil.rmtree(root, ignore_errors=True)
    for i in range(n):
        label, f = files[i % len(files)]
        dest = root / label / f"r{i // len(files):02d}_{f.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(f, dest)
    return root


def run(args: list[str], out: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["ssl-bench", "run", *args, "--out", str(out), "--quiet"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def measure(work: Path, root: Path, n: int, steps: int, threads: int | None) -> dict:
    cache = work / f"cache_{n}"
    shutil.rmtree(cache, ignore_errors=True)
    runs = work / "runs" / str(n)
    shutil.rmtree(runs, ignore_errors=True)
    data = (f"data={{name: folder, root: {root}, size: {DATA_SIZE}, cache_dir: {cache}, "
            f"split_ratios: [0.98, 0.01, 0.01]}}")
    base = ["recipes/ham10000/byol_ham28.yaml", "--set", data, "--set", f"augment.size={VIEW}",
            "--set", "backbone.small_image_stem=false", "--set", "evaluate=[]", "--set", "train.data_on=host"]
    if threads:
        base += ["--set", f"train.threads={threads}"]
    cold = run([*base, "--set", "train.epochs=0"], runs / "cold")
    warm = run([*base, "--set", "train.epochs=0"], runs / "warm")
    run([*base, "--set", "train.epochs=2", "--set", f"train.limit_batches={steps}"], runs / "train")
    metrics = [json.loads(x) for x in (runs / "train" / "metrics.jsonl").read_text().splitlines()]
    res = json.loads((runs / "train" / "results.json").read_text())
    return {"images": n, "cache_build_s": cold - warm, "startup_warm_s": warm,
            "images_per_s": metrics[-1]["images_per_s"],
            "peak_rss_mb": res["peak_rss_mb"], "store_mb": n * DATA_SIZE * DATA_SIZE * 3 / 2**20,
            "precision": res.get("precision")}


def report(rows: list[dict]) -> str:
    first = rows[0]
    lines = ["| images | decode-cache build (s) | s per 1k images | warm start-up (s) | images/s (epoch 2) | "
             "vs smallest | "
             "peak RSS (MiB) | uint8 store (MiB) | RSS bound: smallest + store growth (MiB) | within bound |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bound = first["peak_rss_mb"] + (r["store_mb"] - first["store_mb"])
        lines.append(f"| {r['images']:,} | {r['cache_build_s']:.1f} | {1000 * r['cache_build_s'] / r['images']:.2f} | "
                     f"{r['startup_warm_s']:.1f} | {r['images_per_s']:.1f} | "
                     f"{r['images_per_s'] / first['images_per_s']:.3f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['store_mb']:.0f} | {bound:.0f} | "
                     f"{'yes' if r['peak_rss_mb'] <= bound * 1.02 else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,25000,100000")
    ap.add_argument("--steps", type=int, default=6, help="train.limit_batches: steps per epoch (batch 256)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work", default="/tmp/ssl_bench_scaling", help="extracted JPEGs, folders, caches, runs")
    ap.add_argument("--json", default=None)
    ap.add_argument("--report", default=None, help="print the table of a --json file and exit")
    args = ap.parse_args()
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = extract(work)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        root = build_folder(work, files, n)
        rows.append(measure(work, root, n, args.steps, args.threads))
        print(json.dumps(rows[-1]), flush=True)
    print(report(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    print(f"(machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
