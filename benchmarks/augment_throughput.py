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
(c) kornia: ``kornia.augmentation`` with the same ops and probabilities, batched with per-sample
    parameters (kornia's own way), on the batch converted to float — the library ssl-bench would use
    instead of its own pipeline if it were faster.

Timings are medians over ``--reps`` repetitions, (a), (b) and (c) interleaved, after a warm-up, with
torch's default number of threads. The last lines are ``ratio_28=...`` / ``ratio_128=...`` (ours ÷
torchvision) and ``kornia_ratio_28=...`` / ``kornia_ratio_128=...`` (ours ÷ kornia).
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


def kornia_view(size: int, blur: float, solarize: float):
    """The byol set's view in kornia.augmentation (batched, per-sample parameters), on float input."""
    import kornia.augmentation as K

    k = blur_kernel_size(size)
    return torch.nn.Sequential(
        K.RandomResizedCrop((size, size), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
        K.RandomHorizontalFlip(p=0.5),
        K.RandomVerticalFlip(p=0.5),
        K.RandomRotation(degrees=45.0, p=1.0),
        K.ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
        K.RandomGaussianBlur((k, k), sigma=(0.1, 2.0), p=blur),
        K.RandomSolarize(thresholds=0.0, additions=0.0, p=solarize),  # threshold 0.5 = 128/255
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


def bench_size(size: int, args, device: torch.device) -> tuple[float, float]:
    x, source = load_images(args.batch, size, device)
    ours = AUGMENTATIONS.build({"name": "byol"})
    gen = torch.Generator(device=device).manual_seed(0)
    tv1, tv2 = torchvision_view(size, 1.0, 0.0), torchvision_view(size, 0.1, 0.2)
    n_tv = min(args.tv_images, len(x))
    kv1, kv2 = kornia_view(size, 1.0, 0.0).to(device), kornia_view(size, 0.1, 0.2).to(device)

    def run_ours():
        ours(x, gen)

    def run_tv():
        for img in x[:n_tv]:
            tv1(img), tv2(img)

    def run_kornia():
        xf = x.float().div_(255)
        kv1(xf), kv2(xf)

    run_ours(), run_tv(), run_kornia()  # warm-up
    t_ours, t_tv, t_k = [], [], []
    for _ in range(args.reps):  # interleaved, so that a slow phase of the machine hits all alike
        t_ours.append(timed(run_ours, device))
        t_tv.append(timed(run_tv, device))
        t_k.append(timed(run_kornia, device))
    ours_ips = len(x) / statistics.median(t_ours)
    tv_ips = n_tv / statistics.median(t_tv)
    k_ips = len(x) / statistics.median(t_k)
    ratio, k_ratio = ours_ips / tv_ips, ours_ips / k_ips
    print(f"size={size}px  data: {source}")
    print(f"  (a) batched byol, batch {len(x)}, both views: {ours_ips:10.0f} images/s")
    print(f"  (b) torchvision v2 per sample, both views:    {tv_ips:10.0f} images/s")
    print(f"  (c) kornia batched, batch {len(x)}, both views: {k_ips:10.0f} images/s")
    print(f"  ratio (a)/(b) = {ratio:.1f}   (a)/(c) = {k_ratio:.2f}")
    return ratio, k_ratio


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
    for size, (ratio, k_ratio) in ratios.items():
        print(f"ratio_{size}={ratio:.1f}")
        print(f"kornia_ratio_{size}={k_ratio:.2f}")


if __name__ == "__main__":
    main()
