"""HAM10000 epoch time at 64 px with and without the decode cache.

    python benchmarks/decode_cache.py [--size 64] [--batch 128] [--steps 6] [--threads 2] [--device cpu]

Data: the 10,015 real HAM10000 JPEGs (200×150) read straight from
``../shared/data/subsets/ham10000_200x150_jpeg.zip`` (``$SSL_BENCH_SHARED_DATA`` overrides), the
7,030-image lesion-disjoint training split of the ``isic`` adapter.

An epoch = getting the training images as uint8 ``[N, 3, size, size]`` + the BYOL training steps
(``flagship recipe``: ResNet-18, BYOL 256/4096, batch ``--batch``, light-view TracIn off).

* **no cache** — every epoch decodes and resizes the 7,030 JPEGs again (Pillow, a thread pool with
  one worker per core, JPEG draft mode on: the fastest plain decode we have), as a per-epoch
  ``Dataset`` over image files would;
* **cache** — the first run decodes once into the memory-mapped uint8 file; a later run reads the
  split from it when the dataset is built (``reopen``), and an epoch only gathers each batch's rows
  from memory (timed: a full pass).

The training compute is the same in both, so it is timed once: ``--steps`` optimisation steps after
one warm-up step, extrapolated to the epoch's ``N // batch`` steps.  Printed figures are seconds.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SSL_BENCH_SHARED_DATA", REPO.parent / "shared" / "data"))
ZIP = SHARED / "subsets" / "ham10000_200x150_jpeg.zip"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from ssl_bench.data import DATASETS
    from ssl_bench.data.images import ImageStore, decode_all

    with tempfile.TemporaryDirectory() as cache_dir:
        cfg = {"name": "isic", "root": str(ZIP), "size": args.size, "cache_dir": cache_dir, "workers": args.threads}
        t0 = time.perf_counter()
        data = DATASETS.build(cfg)
        first_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        data = DATASETS.build(cfg)  # cache hit: CSV + zip index + memory map
        reopen = time.perf_counter() - t0
        members = data.files["train"]
        n = len(members)

        # no cache: decode the training JPEGs again (what every epoch would cost)
        store = ImageStore(ZIP)
        out = np.zeros((n, 3, args.size, args.size), np.uint8)
        t0 = time.perf_counter()
        decode_all(store, members, out, args.size, 3, "center_crop", workers=args.threads, progress=False)
        decode_epoch = time.perf_counter() - t0
        assert np.array_equal(out, data.train.images.numpy()), "cache and fresh decode differ"

        # cache: the split was read from the memory map once when the dataset was built (``reopen``);
        # an epoch only gathers each batch's rows
        gen = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        for idx in torch.randperm(n, generator=gen).split(args.batch):
            batch = data.train.images[idx]  # the loader's whole work  # noqa: F841
        cache_epoch = time.perf_counter() - t0
        train_epoch, steps_per_epoch, step_s, dev = train_compute(args, cache_dir, gen)

    print(f"HAM10000 train split: {n} images, {args.size} px, batch {args.batch}, {args.threads} threads, device {dev}")
    print(f"cache first build (10,015 images, decode + write): {first_build:.1f} s; reopen: {reopen:.2f} s")
    print(f"data per epoch, no cache (decode 7,030 JPEGs): {decode_epoch:.1f} s")
    print(f"data per epoch, cache (gather batch rows):    {cache_epoch:.2f} s")
    print(f"training compute per epoch ({steps_per_epoch} steps × {step_s:.2f} s): {train_epoch:.1f} s")
    print(f"epoch_no_cache_s={train_epoch + decode_epoch:.1f}")
    print(f"epoch_cache_s={train_epoch + cache_epoch:.1f}")
    print(f"data_speedup={decode_epoch / max(cache_epoch, 1e-9):.0f}x")


def train_compute(args, cache_dir: str, gen: torch.Generator):
    """Seconds of BYOL training compute for one epoch (median step × steps per epoch)."""
    # the training compute of one epoch (same with or without the cache)
    from ssl_bench.recipe import load_recipe
    from ssl_bench.step import Batch
    from ssl_bench.train import training_step

    recipe = load_recipe(
        REPO / "recipes" / "isic" / "byol_isic.yaml",
        [f"data.root={ZIP}", f"data.size={args.size}", f"augment.size={args.size}", f"train.batch_size={args.batch}",
         f"data.cache_dir={cache_dir}", f"train.device={args.device}"],
    )
    step, comp = training_step(recipe, total_steps=1000)  # the step `ssl-bench run` trains with
    dev = step.aug_gen.device
    images = comp.data.train.images
    steps_per_epoch = len(images) // args.batch
    times = []
    for s in range(args.steps + 1):
        idx = torch.randint(len(images), (args.batch,), generator=gen)
        t0 = time.perf_counter()
        step(Batch(images[idx].to(dev), comp.data.train.labels[idx].to(dev), idx.to(dev)), 0.1, s)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    step_s = float(np.median(times[1:]))
    return step_s * steps_per_epoch, steps_per_epoch, step_s, dev


if __name__ == "__main__":
    main()
