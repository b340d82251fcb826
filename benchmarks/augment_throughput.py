"""Throughput of the batched ``byol`` augmentation vs the same ops in torchvision v2, per sample.

    python benchmarks/augment_throughput.py [--device cpu|cuda] [--batch 256] [--reps 5]

Images/s counts source images, each turned into BOTH views. Data: the RetinaMNIST training images
(28 px RGB, so that saturation/hue jitter and grayscale do real work); the 128 px case is the same
images upsampled bilinearly to 128 px once, before timing.

(a) ours: ``AUGMENTATIONS.build({"name": "byol"})`` on a uint8 batch → two float views, in one call.
(b) torchvision: a ``transforms.v2`` pipeline with the same ops and probabilities (random resized
    crop, h/v flips, ±45° rotation, colour jitter p = 0.8, grayscale p = 0.2, blur p = 1.0 / 0.1,
    solarize p = 0 / 0.2, ToDtype) applied image by image to uint8 tensors — the usual
    ``Dataset.__getitem__`` way of getting per-sample random parameters.

Timings are medians over ``--reps`` repetitions, (a) and (b) interleaved, after a warm-up, with
torch's default number of threads. The last lines are ``ratio_28=...`` and ``ratio_128=...``.
"""

from __future__ import annotations

import argparse
import os
import sys
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from ssl_bench.augment import AUGMENTATIONS
from ssl_bench.augment.ops import blur_kernel_size

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SSL_BENCH_SHARED_DATA", REPO.parent / "shared" / "data")) / "medmnist" / "retinamnist.npz"


def load_images(n: int, size: int, device: torch.device) -> tuple[torch.Tensor, str]:
    """uint8 [n, 3, size, size]: real RetinaMNIST images (upsampled to ``size``)."""
    if not DATA.exists():
        sys.exit(f"RetinaMNIST not found at {DATA}; set SSL_BENCH_SHARED_DATA to the folder holding medmnist/")
    arr = np.load(DATA)["train_images"][:n]
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    source = f"RetinaMNIST train[:{n}]"
    if size != x.shape[-1]:
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)
        x = x.round().clamp(0, 255).to(torch.uint8)
        source += f", upsampled to {size} px"
    return x.to(device), source


def torchvision_view(size: int, blur: float, solarize: float) -> v2.Compose:
    """The byol set's view in torchvision v2 (one random draw per call, i.e. per image)."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
            v2.RandomHorizontalFlip(0.5),
            v2.RandomVerticalFlip(0.5),
            v2.RandomRotation(45.0, interpolation=v2.InterpolationMode.BILINEAR),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            v2.RandomGrayscale(0.2),
            v2.RandomApply([v2.GaussianBlur(blur_kernel_size(size), sigma=(0.1, 2.0))], p=blur),
            v2.RandomSolarize(threshold=128, p=solarize),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def bench_size(size: int, args, device: torch.device) -> float:
    x, source = load_images(args.batch, size, device)
    ours = AUGMENTATIONS.build({"name": "byol"})
    gen = torch.Generator(device=device).manual_seed(0)
    tv1, tv2 = torchvision_view(size, 1.0, 0.0), torchvision_view(size, 0.1, 0.2)
    n_tv = min(args.tv_images, len(x))

    def run_ours():
        ours(x, gen)

    def run_tv():
        for img in x[:n_tv]:
            tv1(img), tv2(img)

    run_ours(), run_tv()  # warm-up
    t_ours, t_tv = [], []
    for _ in range(args.reps):  # interleaved, so that a slow phase of the machine hits both
        t_ours.append(timed(run_ours, device))
        t_tv.append(timed(run_tv, device))
    ours_ips = len(x) / statistics.median(t_ours)
    tv_ips = n_tv / statistics.median(t_tv)
    ratio = ours_ips / tv_ips
    print(f"size={size}px  data: {source}")
    print(f"  (a) batched byol, batch {len(x)}, both views: {ours_ips:10.0f} images/s")
    print(f"  (b) torchvision v2 per sample, both views:    {tv_ips:10.0f} images/s")
    print(f"  ratio (a)/(b) = {ratio:.1f}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tv-images", type=int, default=256, help="images per torchvision repetition")
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 128])
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"device={device} ({name}), torch {torch.__version__}")
    ratios = {size: bench_size(size, args, device) for size in args.sizes}
    for size, ratio in ratios.items():
        print(f"ratio_{size}={ratio:.1f}")


if __name__ == "__main__":
    main()
