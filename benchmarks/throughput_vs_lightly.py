"""Training throughput of ``ssl-bench run`` against lightly's documented BYOL loop and the pure model step.

For each image size (default 28 and 64 px), on the same data — the 7,030 training images of the
real HAM10000 JPEGs (``../shared/data/subsets/ham10000_200x150_jpeg.zip``), decoded and resized once
through the ``isic`` adapter's cache — with the same model (timm ResNet-18, standard stem, BYOL
heads 512 → 4096 → 256), batch (256) and number of steps (one epoch: 27 steps), three variants are
run, each in a fresh process, interleaved A B C A B C … so that machine load hits them alike:

(a) ``lightly``: lightly's documented BYOL loop — a per-sample ``BYOLTransform`` (view 1 / view 2,
    with the ops and probabilities of ssl-bench's ``byol`` set: random resized crop 0.08–1, h/v
    flips, ±45° rotation, colour jitter 0.8, grayscale 0.2, blur 1.0 / 0.1, solarize 0 / 0.2) in a
    ``torch.utils.data.DataLoader`` with 2 workers (``--workers``) over the images held in memory as uint8 (as
    torchvision's CIFAR-10 dataset in lightly's examples), lightly's heads,
    ``NegativeCosineSimilarity``, ``update_momentum`` and ``cosine_schedule``;
(b) ``ssl-bench``: ``ssl-bench run recipes/ham10000/byol_ham28.yaml`` itself, as a user starts it,
    one epoch, no evaluation; its own ``images_per_s`` is read from ``metrics.jsonl``, so every
    process-level setting of the CLI is part of what is timed;
(b') ``ssl-bench-fp32``: the same command with ``--set train.precision=32-true`` (the default
    ``train.precision: auto`` is bf16-mixed where the CPU or GPU has native bf16: AVX512-BF16 here);
(c) ``ceiling``: the pure fp32 model step on pre-made (already augmented, normalised) tensors — forward
    of both views through online and target networks, loss, backward, SGD step, EMA update —
    with nothing else in the loop: what the hardware allows for this model in fp32;
(c') ``ceiling-bf16``: the same step under bf16 autocast (the loss in fp32): what the number format
    alone gives this model at this size, the ceiling of the default.

Each variant's epoch is timed as a whole (first step included, as a user's epoch is).  Printed per
size: the median images/s of each variant, ``vs_lightly=`` (b/a), ``vs_ceiling=`` (b/c: the default
against the fp32 ceiling), ``fp32_vs_ceiling=`` (b'/c), ``bf16_speedup=`` (b/b'), ``bf16_ceiling=`` (c'/c),
``vs_bf16_ceiling=`` (b/c'), the precision the
default resolved to, and the peak resident memory of each variant's process (lightly's: main process;
its loader workers' largest peak is printed beside it).  Targets on 2 CPU cores with bf16: vs_lightly
≥ 2.0 at 28 px, vs_ceiling ≥ 1.4 at 28 px and ≥ 1.7 at 64 px; fp32_vs_ceiling ≥ 0.95.

Usage:  python benchmarks/throughput_vs_lightly.py [--sizes 28,64] [--reps 2] [--batch 256] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SSL_BENCH_SHARED_DATA", REPO.parent / "shared" / "data"))
HAM_ZIP = DATA / "subsets" / "ham10000_200x150_jpeg.zip"
RECIPE = REPO / "recipes" / "ham10000" / "byol_ham28.yaml"
VARIANTS = ("lightly", "ssl-bench", "ssl-bench-fp32", "ceiling", "ceiling-bf16")


def _rss_mib(who=resource.RUSAGE_SELF) -> float:
    r = resource.getrusage(who).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 2**10


# -------------------------------------------------------------------------------------------------
# Workers (each runs in its own process)
# -------------------------------------------------------------------------------------------------
def _train_images(size: int):
    sys.path.insert(0, str(REPO))
    from ssl_bench.data import DATASETS

    data = DATASETS.build({"name": "isic", "root": str(HAM_ZIP), "size": size})
    return data.train.images, data.train.labels


def _byol_model(device):
    """timm ResNet-18 (standard stem, no classifier) + lightly's BYOL heads, as lightly's example builds it."""
    import copy

    import timm
    from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
    from lightly.models.utils import deactivate_requires_grad
    from torch import nn

    class BYOL(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = timm.create_model("resnet18", pretrained=False, num_classes=0)
            self.projection_head = BYOLProjectionHead(512, 4096, 256)
            self.prediction_head = BYOLPredictionHead(256, 4096, 256)
            self.backbone_momentum = copy.deepcopy(self.backbone)
            self.projection_head_momentum = copy.deepcopy(self.projection_head)
            deactivate_requires_grad(self.backbone_momentum)
            deactivate_requires_grad(self.projection_head_momentum)

        def forward(self, x):
            return self.prediction_head(self.projection_head(self.backbone(x)))

        def forward_momentum(self, x):
            return self.projection_head_momentum(self.backbone_momentum(x)).detach()

    return BYOL().to(device)


def worker_lightly(size: int, batch: int, steps: int, device: str, workers: int = 2) -> dict:
    """lightly's documented BYOL loop (docs: examples/pytorch/byol.py), on the in-memory images."""
    import numpy as np
    import torch
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.utils import update_momentum
    from lightly.transforms.byol_transform import BYOLTransform, BYOLView1Transform, BYOLView2Transform
    from lightly.utils.scheduler import cosine_schedule
    from PIL import Image

    images, labels = _train_images(size)
    arr = images.permute(0, 2, 3, 1).numpy()  # HWC uint8, as torchvision's CIFAR-10 holds its images
    ops = dict(input_size=size, vf_prob=0.5, rr_prob=1.0, rr_degrees=45.0)  # the byol set's flips and rotation
    transform = BYOLTransform(
        view_1_transform=BYOLView1Transform(**ops, gaussian_blur=1.0, solarization_prob=0.0),
        view_2_transform=BYOLView2Transform(**ops, gaussian_blur=0.1, solarization_prob=0.2),
    )

    class InMemory(torch.utils.data.Dataset):
        def __len__(self):
            return len(arr)

        def __getitem__(self, i):
            return transform(Image.fromarray(arr[i])), int(labels[i])

    dev = torch.device(device)
    model = _byol_model(dev)
    loader = torch.utils.data.DataLoader(
        InMemory(), batch_size=batch, shuffle=True, drop_last=True, num_workers=workers, pin_memory=dev.type == "cuda"
    )
    criterion = NegativeCosineSimilarity()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    epochs, done = 1, 0
    sync()
    t0 = time.perf_counter()
    for epoch in range(epochs):
        momentum_val = cosine_schedule(epoch, epochs, 0.996, 1)
        for (x0, x1), _ in loader:
            update_momentum(model.backbone, model.backbone_momentum, m=momentum_val)
            update_momentum(model.projection_head, model.projection_head_momentum, m=momentum_val)
            x0, x1 = x0.to(dev), x1.to(dev)
            p0, z0 = model(x0), model.forward_momentum(x0)
            p1, z1 = model(x1), model.forward_momentum(x1)
            loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            done += 1
            if done == steps:
                break
    sync()
    dt = time.perf_counter() - t0
    del loader
    return {
        "images_per_s": done * batch / dt,
        "steps": done,
        "peak_rss_mb": _rss_mib(),
        "workers_peak_rss_mb": _rss_mib(resource.RUSAGE_CHILDREN),
        "peak_gpu_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None,
        "loss": float(loss),
        "np": np.__version__,
    }


def worker_ceiling(size: int, batch: int, steps: int, device: str, channels_last: bool = True,
                   bf16: bool = False) -> dict:
    """The model step alone on pre-made tensors: the ceiling of any loop around it (``bf16``: forward
    under bf16 autocast, the loss in fp32, as ``train.precision: bf16-mixed``)."""
    import torch
    import torch.nn.functional as F
    from lightly.models.utils import update_momentum

    images, _ = _train_images(size)
    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    made = []
    for _ in range(min(steps, 4)):  # a few distinct pre-made batches, cycled
        idx = torch.randperm(len(images), generator=g)[:batch]
        x = images[idx].float().div_(255)
        x1 = ((x - 0.5) / 0.25).to(dev).contiguous(memory_format=fmt)
        x2 = ((x.flip(3) - 0.5) / 0.25).to(dev).contiguous(memory_format=fmt)
        made.append((x1, x2))
    model = _byol_model(dev).to(memory_format=fmt)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-5)

    def loss_fn(p, z):
        return 2 - 2 * F.cosine_similarity(p.float(), z.float(), dim=-1).mean()

    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for step in range(steps):
        x1, x2 = made[step % len(made)]
        with autocast:
            p1, p2 = model(x1), model(x2)
            with torch.no_grad():
                z1, z2 = model.forward_momentum(x1), model.forward_momentum(x2)
        loss = 0.5 * (loss_fn(p1, z2) + loss_fn(p2, z1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        update_momentum(model.backbone, model.backbone_momentum, 0.99)
        update_momentum(model.projection_head, model.projection_head_momentum, 0.99)
    sync()
    dt = time.perf_counter() - t0
    return {
        "images_per_s": steps * batch / dt,
        "steps": steps,
        "peak_rss_mb": _rss_mib(),
        "peak_gpu_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None,
        "loss": float(loss),
    }


def run_ssl_bench(size: int, batch: int, device: str, cache_dir: str, extra_sets: list[str]) -> dict:
    """``ssl-bench run`` as a user starts it (a fresh process); its own figures from the run directory."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        sets = [
            f"data.root={HAM_ZIP}", f"data.size={size}", f"data.cache_dir={cache_dir}",
            "backbone.small_image_stem=false",
            "backbone.stem_pool=false", f"train.batch_size={batch}", "train.epochs=1", "evaluate=[]", *extra_sets,
        ]
        cmd = [sys.executable, "-m", "ssl_bench.cli", "run", str(RECIPE), *[x for s in sets for x in ("--set", s)],
               "--device", device, "--out", str(out), "--quiet"]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=_env())
        if proc.returncode != 0:
            raise RuntimeError(f"ssl-bench run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        rec = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][-1]
        res = json.loads((out / "results.json").read_text())
        return {
            "images_per_s": rec["images_per_s"],
            "steps": res["train"]["steps"],
            "peak_rss_mb": res["peak_rss_mb"],
            "peak_gpu_memory_mb": res.get("peak_gpu_memory_mb"),
            "loss": rec["loss"],
            "precision": res.get("precision"),
            "command": "ssl-bench run " + " ".join(cmd[4:]),
        }


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def run_worker(kind: str, size: int, batch: int, steps: int, device: str, cache_dir: str, workers: int = 2) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--sizes", str(size), "--batch", str(batch), "--steps",
           str(steps),
           "--device", device, "--workers", str(workers)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env={**_env(), "SSL_BENCH_CACHE_DIR": cache_dir})
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="28,64", help="image sizes in px (comma-separated)")
    ap.add_argument("--reps", type=int, default=2, help="interleaved repetitions of each variant (median reported)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=None,
                    help="steps per variant (default: one epoch of the training split)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=2,
                    help="DataLoader workers of lightly's loop (lightly's examples: 8 on a GPU machine)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="extra --set for ssl-bench run")
    ap.add_argument("--worker", choices=["lightly", "ceiling", "ceiling-bf16", "ceiling-contiguous"],
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"

    if args.worker:
        size = sizes[0]
        if args.worker == "lightly":
            out = worker_lightly(size, args.batch, args.steps, device, args.workers)
        else:
            out = worker_ceiling(size, args.batch, args.steps, device,
                                 channels_last=args.worker != "ceiling-contiguous", bf16=args.worker == "ceiling-bf16")
        print(json.dumps(out))
        return 0

    if not HAM_ZIP.is_file():
        sys.exit(f"HAM10000 zip not found at {HAM_ZIP}; set SSL_BENCH_SHARED_DATA to the folder holding subsets/")
    import torch

    with tempfile.TemporaryDirectory() as cache_dir:
        for size in sizes:
            sys.path.insert(0, str(REPO))
            os.environ["SSL_BENCH_CACHE_DIR"] = cache_dir
            from ssl_bench.data import DATASETS, num_batches

            n = len(DATASETS.build({"name": "isic", "root": str(HAM_ZIP), "size": size}).train)  # builds the cache once
            steps = args.steps or num_batches(n, args.batch)
            print(f"== {size} px: HAM10000 train split, {n} images, batch {args.batch}, {steps} steps per variant, "
                  f"device {device}, torch threads {torch.get_num_threads()}, lightly loader workers {args.workers}, "
                  f"{args.reps} interleaved reps", flush=True)
            got: dict[str, list[dict]] = {v: [] for v in VARIANTS}
            for rep in range(args.reps):
                for v in VARIANTS:
                    if v.startswith("ssl-bench"):
                        fp32 = ["train.precision=32-true"] if v == "ssl-bench-fp32" else []
                        r = run_ssl_bench(size, args.batch, device, cache_dir, [*args.sets, *fp32])
                        if steps != r["steps"]:
                            raise RuntimeError(f"ssl-bench ran {r['steps']} steps, the others {steps}")
                    else:
                        r = run_worker(v, size, args.batch, steps, device, cache_dir, args.workers)
                    got[v].append(r)
                    extra = f", loader workers {r['workers_peak_rss_mb']:.0f} MiB" if "workers_peak_rss_mb" in r else ""
                    gpu = f", peak GPU {r['peak_gpu_memory_mb']:.0f} MiB" if r.get("peak_gpu_memory_mb") else ""
                    print(f"  rep {rep + 1} {v:10s} {r['images_per_s']:7.1f} img/s  peak RSS {r['peak_rss_mb']:.0f} "
                          f"MiB{extra}{gpu}",
                          flush=True)
            med = {v: statistics.median(r["images_per_s"] for r in got[v]) for v in VARIANTS}
            rss = {v: max(r["peak_rss_mb"] for r in got[v]) for v in VARIANTS}
            print(f"  command (b): {got['ssl-bench'][0]['command']}")
            print(f"  median img/s: lightly {med['lightly']:.1f}  ssl-bench {med['ssl-bench']:.1f} "
                  f"({got['ssl-bench'][0]['precision']})  "
                  f"ssl-bench fp32 {med['ssl-bench-fp32']:.1f}  ceiling (fp32) {med['ceiling']:.1f}  "
                  f"ceiling (bf16) {med['ceiling-bf16']:.1f}")
            print(f"  peak RSS MiB: lightly {rss['lightly']:.0f} (+ workers "
                  f"{max(r['workers_peak_rss_mb'] for r in got['lightly']):.0f})"
                  f"  ssl-bench {rss['ssl-bench']:.0f}  ssl-bench fp32 {rss['ssl-bench-fp32']:.0f}  ceiling "
                  f"{rss['ceiling']:.0f}")
            print(f"size={size} vs_lightly={med['ssl-bench'] / med['lightly']:.3f} "
                  f"vs_ceiling={med['ssl-bench'] / med['ceiling']:.3f} "
                  f"fp32_vs_ceiling={med['ssl-bench-fp32'] / med['ceiling']:.3f} "
                  f"bf16_speedup={med['ssl-bench'] / med['ssl-bench-fp32']:.3f} "
                  f"bf16_ceiling={med['ceiling-bf16'] / med['ceiling']:.3f} "
                  f"vs_bf16_ceiling={med['ssl-bench'] / med['ceiling-bf16']:.3f} "
                  f"precision={got['ssl-bench'][0]['precision']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
