"""Batched image augmentations with per-sample random parameters (functional ops).

Why hand-written batched ops? torchvision's transforms draw ONE set of random parameters per call,
so per-sample randomness means a Python loop over the batch (the usual ``Dataset.__getitem__``).
For the BYOL views of 28 px MedMNIST images that runs at ~500–700 images/s on a 2-core machine,
which would starve a GPU that trains a small ResNet on such images at tens of thousands per second.
Here every op draws a *vector* of parameters (one row per sample) and applies it to the whole batch
with a handful of tensor ops, on whatever device the batch lives on: ~10 000 images/s (both views)
on the same 2 cores, ~20× more (``benchmarks/augment_throughput.py``).

The geometric part (random resized crop, flips, 90° rotations, arbitrary rotation) is composed
into ONE affine matrix per sample and applied by a single bilinear ``grid_sample``, which also
avoids the blur of resampling an image several times.

Conventions

- images are float tensors ``[B, C, H, W]`` in ``[0, 1]`` with ``C`` = 1 (grey) or 3 (RGB);
- every ``random_*`` op takes a ``torch.Generator`` on the images' device and draws all its numbers
  from it, so a seed fixes the output;
- the deterministic cores (:func:`adjust_brightness`, ..., :func:`gaussian_blur`,
  :func:`affine_theta`) take per-sample factor tensors; they follow the documented semantics of
  ``torchvision.transforms.v2.functional`` and are compared with it op by op in the tests.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ssl_bench.errors import SSLBenchError

__all__ = [
    "PADDING_MODES", "check_generator", "uniform", "bernoulli", "sample_crop", "affine_theta",
    "affine_resample", "antialias_prefilter", "masked", "grayscale", "adjust_brightness", "adjust_contrast",
    "adjust_saturation", "adjust_hue", "color_jitter", "solarize", "blur_kernel_size", "gaussian_blur",
    "sample_color_jitter", "sample_gaussian_blur", "random_color_jitter", "random_grayscale",
    "random_gaussian_blur", "random_solarize",
]

PADDING_MODES = ("zeros", "border", "reflection")

# ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale.
LUMA_WEIGHTS = (0.2989, 0.587, 0.114)

Pair = Sequence[float]


# -------------------------------------------------------------------------------------------------
# Random numbers: all drawn from the caller's generator, on the images' device
# -------------------------------------------------------------------------------------------------
def check_generator(generator: Optional[torch.Generator], device: torch.device) -> None:
    """Fail in one line if ``generator`` lives on another device than the images."""
    if generator is None:
        return
    g, d = torch.device(generator.device), torch.device(device)
    if g.type != d.type or (g.index is not None and d.index is not None and g.index != d.index):
        raise SSLBenchError(
            f"augmentation generator is on {g} but the images are on {d}; "
            f"create it with torch.Generator(device=images.device)"
        )


def uniform(
    low: float, high: float, shape, generator: Optional[torch.Generator], device: torch.device
) -> torch.Tensor:
    """``shape`` samples of U(low, high) (float32)."""
    if isinstance(shape, int):
        shape = (shape,)
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def bernoulli(p: float, n: int, generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """``n`` booleans, each True with probability ``p``.

    p = 0 and p = 1 draw nothing from the generator, so deterministic settings (the 'light' views'
    certain flip) leave its state, and hence the other views' randomness, unchanged.
    """
    if p <= 0 or p >= 1:
        return torch.full((n,), p >= 1, dtype=torch.bool, device=device)
    return torch.rand(n, generator=generator, device=device) < p


def _per_sample(t: torch.Tensor) -> torch.Tensor:
    """[B] → [B, 1, 1, 1], to broadcast a per-sample value over an image batch."""
    return t.reshape(-1, 1, 1, 1)


# -------------------------------------------------------------------------------------------------
# Geometry: one affine matrix per sample, one grid_sample for the whole batch
# -------------------------------------------------------------------------------------------------
# theta maps OUTPUT normalised coordinates (x, y) ∈ [-1, 1]² to INPUT normalised coordinates
# (F.affine_grid convention, align_corners=False: ±1 are the outer pixel edges). A crop of the input
# is a scale + shift of the coordinates; flips and rotations act on the output coordinates first,
# i.e. the image is cropped-and-resized first and then flipped/rotated, as in torchvision's
# RandomResizedCrop → RandomHorizontalFlip → RandomRotation.
def sample_crop(
    n: int,
    in_hw: tuple[int, int],
    scale: Pair,
    ratio: Pair,
    generator: Optional[torch.Generator],
    device: torch.device,
    tries: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random resized crop boxes, vectorised (torchvision ``RandomResizedCrop`` semantics).

    Like torchvision, the area fraction is U(scale) and the aspect ratio log-uniform in ``ratio``,
    with up to ``tries`` attempts to get a box that fits the image; all attempts are drawn at once
    and the first fitting one is kept. Where none fits, the box is clamped to the image (torchvision
    falls back to a centre crop). Boxes are continuous (sub-pixel), not rounded to whole pixels.

    Returns ``(size, centre)``, each ``[n, 2]`` (x, y) in normalised coordinates: the crop spans
    ``centre ± size`` of the input's ``[-1, 1]`` extent.
    """
    h_in, w_in = in_hw
    area = uniform(scale[0], scale[1], (n, tries), generator, device) * (h_in * w_in)
    log_r = uniform(math.log(ratio[0]), math.log(ratio[1]), (n, tries), generator, device)
    w = torch.sqrt(area * torch.exp(log_r))
    h = torch.sqrt(area / torch.exp(log_r))
    fits = (w <= w_in) & (h <= h_in)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first fitting try (0 if none)
    w = w.gather(1, first).squeeze(1).clamp(max=w_in)
    h = h.gather(1, first).squeeze(1).clamp(max=h_in)
    # top-left corner uniform over the positions that keep the box inside the image
    x0 = torch.rand(n, generator=generator, device=device) * (w_in - w)
    y0 = torch.rand(n, generator=generator, device=device) * (h_in - h)
    size = torch.stack([w / w_in, h / h_in], dim=1)
    centre = torch.stack([(2 * x0 + w) / w_in - 1, (2 * y0 + h) / h_in - 1], dim=1)
    return size, centre


def _rotation(cos: torch.Tensor, sin: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """[n, 2, 2] rotation acting on normalised output coordinates.

    For a non-square output the normalised axes have different pixel lengths, so the rotation is
    conjugated by the aspect ratio to stay a true (pixel-space) rotation.
    """
    h, w = out_hw
    return torch.stack(
        [torch.stack([cos, -sin * (h / w)], dim=-1), torch.stack([sin * (w / h), cos], dim=-1)], dim=-2
    )


def affine_theta(
    crop_size: torch.Tensor,
    crop_centre: torch.Tensor,
    out_hw: tuple[int, int],
    hflip: Optional[torch.Tensor] = None,
    vflip: Optional[torch.Tensor] = None,
    rot90: Optional[torch.Tensor] = None,
    angle: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Compose crop, flips and rotations into one ``[n, 2, 3]`` matrix for ``F.affine_grid``.

    Args:
        crop_size, crop_centre: ``[n, 2]`` (x, y) normalised crop half-extent and centre
            (full image: size 1, centre 0).
        hflip, vflip: ``[n]`` bool, flip the view left-right / up-down.
        rot90: ``[n]`` int k ∈ {0, 1, 2, 3}: rotate like ``torch.rot90(img, k, dims=(-2, -1))``.
        angle: ``[n]`` radians, counter-clockwise (as torchvision's ``rotate``).
    """
    n = crop_size.shape[0]
    dev, dt = crop_size.device, crop_size.dtype
    lin = torch.eye(2, device=dev, dtype=dt).expand(n, 2, 2)
    # applied to output coordinates right-to-left: arbitrary rotation, rot90, flips, then the crop
    if angle is not None:
        lin = _rotation(torch.cos(angle), torch.sin(angle), out_hw) @ lin
    if rot90 is not None:
        k = rot90.long() % 4
        cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=dev, dtype=dt)[k]  # exact, no sin(π/2) round-off
        sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=dev, dtype=dt)[k]
        lin = _rotation(cos, sin, out_hw) @ lin
    signs = torch.ones(n, 2, device=dev, dtype=dt)
    if hflip is not None:
        signs[:, 0] = 1.0 - 2.0 * hflip.to(dt)
    if vflip is not None:
        signs[:, 1] = 1.0 - 2.0 * vflip.to(dt)
    lin = (crop_size * signs).unsqueeze(-1) * lin  # diag(crop·signs) @ lin
    return torch.cat([lin, crop_centre.unsqueeze(-1)], dim=-1)


def affine_resample(
    images: torch.Tensor, theta: torch.Tensor, out_hw: tuple[int, int], padding_mode: str = "reflection"
) -> torch.Tensor:
    """Resample a float batch through per-sample affine maps (bilinear, align_corners=False).

    ``padding_mode`` fills what a rotation brings in from outside the image: 'reflection' (default:
    mirrored tissue instead of black corners that a network could use as an orientation cue),
    'border' (edge pixels repeated) or 'zeros' (black).
    """
    b, c = images.shape[:2]
    grid = F.affine_grid(theta.to(images.dtype), [b, c, *out_hw], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def antialias_prefilter(images: torch.Tensor, out_hw: tuple[int, int], min_side: float) -> torch.Tensor:
    """Shrink (antialiased) an input that is far larger than the output before ``grid_sample``.

    Bilinear sampling aliases when it downsamples. The smallest crop spans ``min_side`` of the input
    side, so resizing the whole batch (one antialiased ``interpolate``) to ``out / min_side`` loses
    nothing for that crop and removes most of the aliasing for larger ones. The normalised crop
    coordinates are unchanged by the resize. No-op when the input is not larger than that.
    """
    h, w = images.shape[-2:]
    th = min(h, math.ceil(out_hw[0] / max(min_side, 1e-6)))
    tw = min(w, math.ceil(out_hw[1] / max(min_side, 1e-6)))
    if (th, tw) == (h, w):
        return images
    return F.interpolate(images, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)


# -------------------------------------------------------------------------------------------------
# Applying an op to the samples drawn for it
# -------------------------------------------------------------------------------------------------
def _run_on_subset(images: torch.Tensor) -> bool:
    return images.device.type == "cpu"


def masked(
    fn, images: torch.Tensor, where: Optional[torch.Tensor], *per_sample: Optional[torch.Tensor]
) -> torch.Tensor:
    """``fn(images, *per_sample)`` for the samples in ``where`` (``[B]`` bool; None = all), others unchanged.

    Every op here treats each sample on its own, so on CPU ``fn`` is run on the selected samples
    only (a 10 % blur costs 10 %). On CUDA it runs on the whole batch followed by a ``torch.where``:
    that avoids the device→host sync of ``nonzero`` and the GPU has the width to spare.
    """
    if where is None:
        return fn(images, *per_sample)
    if not _run_on_subset(images):
        return torch.where(_per_sample(where), fn(images, *per_sample), images)
    idx = where.nonzero().squeeze(1)
    if idx.numel() == images.shape[0]:
        return fn(images, *per_sample)
    out = images.clone()
    if idx.numel():
        out[idx] = fn(images[idx], *(None if t is None else t[idx] for t in per_sample))
    return out


# -------------------------------------------------------------------------------------------------
# Colour (torchvision.transforms.v2.functional semantics, factors given per sample)
# -------------------------------------------------------------------------------------------------
def rgb_to_gray(images: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` → ``[B, 1, H, W]`` luma (ITU-R 601-2 weights); grey input is returned as is."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(dim=1)
    return r.mul(LUMA_WEIGHTS[0]).add_(g, alpha=LUMA_WEIGHTS[1]).add_(b, alpha=LUMA_WEIGHTS[2]).unsqueeze(1)


def grayscale(images: torch.Tensor, where: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Grey version of the (``where``-selected) images, keeping the channel count (``RandomGrayscale``)."""
    if images.shape[1] == 1:
        return images
    return masked(lambda x: rgb_to_gray(x).expand_as(x).contiguous(), images, where)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """f·a + (1 − f)·b, clamped to [0, 1], written as b + f·(a − b) in place (3 passes, not 5)."""
    return (a - b).mul_(_per_sample(factor)).add_(b).clamp_(0.0, 1.0)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Multiply each image by its factor (``[B]``), clamp to [0, 1]."""
    return (images * _per_sample(factor)).clamp_(0.0, 1.0)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its mean grey level (one scalar per image)."""
    mean = rgb_to_gray(images).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(images, mean, factor)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each RGB image with its grey version; grey images are returned unchanged."""
    if images.shape[1] == 1:
        return images
    return _blend(images, rgb_to_gray(images), factor)


def _hue_sextant(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB → (6·hue, value, chroma), each ``[B, 1, H, W]``; 6·hue is in (−1, 5], 0 for grey pixels."""
    r, g, b = images.unbind(dim=1)
    value = images.amax(dim=1)
    chroma = images.amin(dim=1).neg_().add_(value)
    # the sector of the hue circle is given by the channel holding the maximum; where two channels
    # tie, both formulas give the same hue, so the tie order does not matter. Grey pixels have
    # chroma 0 and a 0 numerator: 0 / tiny = 0.
    num = torch.where(value == g, (b - r).add_(chroma, alpha=2.0), (r - g).add_(chroma, alpha=4.0))
    num = torch.where(value == r, g - b, num)
    h6 = num.div_(chroma.clamp(min=1e-12))
    return h6.unsqueeze(1), value.unsqueeze(1), chroma.unsqueeze(1)


def _from_sextant(h6: torch.Tensor, value: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_hue_sextant`, branch-free: channel n ∈ (5, 3, 1) (R, G, B) is
    value − chroma·clamp(min(k, 4 − k), 0, 1) with k = (n + 6·hue) mod 6 (chroma = value·saturation)."""
    n = torch.tensor([5.0, 3.0, 1.0], device=h6.device, dtype=h6.dtype).view(1, 3, 1, 1)
    k = (h6 + n).remainder_(6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return ramp.mul_(chroma).neg_().add_(value)


def adjust_hue(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each RGB image by its factor (``[B]``, fraction of the circle, in [-0.5, 0.5]).

    Same result as converting to HSV, shifting H modulo 1 and converting back, but done on 6·hue
    and chroma directly, which saves the saturation division and several full-size passes.
    """
    if images.shape[1] == 1:
        return images
    h6, value, chroma = _hue_sextant(images)
    return _from_sextant(h6.add_(6.0 * _per_sample(factor)), value, chroma)


def color_jitter(
    images: torch.Tensor,
    brightness: Optional[torch.Tensor] = None,
    contrast: Optional[torch.Tensor] = None,
    saturation: Optional[torch.Tensor] = None,
    hue: Optional[torch.Tensor] = None,
    where: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Apply the given per-sample factors (None = skip that op) to the ``where``-selected images.

    The order is fixed (brightness, contrast, saturation, hue). torchvision's ``ColorJitter``
    shuffles the four ops on every call; a per-sample order would need 24 branches or a loop, and
    the order matters little for the learned invariance.
    """
    return masked(_jitter, images, where, brightness, contrast, saturation, hue)


def _jitter(images, brightness, contrast, saturation, hue) -> torch.Tensor:
    if brightness is not None:
        images = adjust_brightness(images, brightness)
    if contrast is not None:
        images = adjust_contrast(images, contrast)
    if saturation is not None:
        images = adjust_saturation(images, saturation)
    if hue is not None:
        images = adjust_hue(images, hue)
    return images


def solarize(images: torch.Tensor, threshold: float = 0.5, where: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Invert pixels at or above ``threshold`` (in the ``where``-selected images)."""
    return masked(lambda x: torch.where(x >= threshold, 1.0 - x, x), images, where)


# -------------------------------------------------------------------------------------------------
# Blur: separable Gaussian with one kernel per sample
# -------------------------------------------------------------------------------------------------
def blur_kernel_size(side: int) -> int:
    """Odd kernel size ≈ 10 % of the image side, at least 3 (SimCLR/BYOL: 23 px at 224 px).

    Capped at 2·side − 1, the most that reflect padding allows (only matters below 3 px).
    """
    k = int(round(0.1 * side))
    k += 1 - k % 2
    return min(max(3, k), 2 * side - 1)


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """``[B]`` sigmas (pixels) → ``[B, kernel_size]`` normalised 1-D Gaussian kernels."""
    t = torch.arange(kernel_size, device=sigma.device, dtype=sigma.dtype) - (kernel_size - 1) / 2
    w = torch.exp(-0.5 * (t / sigma.unsqueeze(1)) ** 2)
    return w / w.sum(dim=1, keepdim=True)


def separable_filter(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Filter each image with its own 1-D kernel (``[B, k]``) along columns then rows, reflect padding.

    A sum over the k taps of shifted views, accumulated in place (a loop over taps, not samples):
    for the small kernels used here this beats a grouped convolution with one group per
    (sample, channel) on CPU.
    """
    k = kernels.shape[1]
    pad = k // 2
    h, w = images.shape[-2:]
    x = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    taps = kernels.to(images.dtype).reshape(-1, k, 1, 1, 1)  # taps[:, i] is [B, 1, 1, 1]
    cols = x[..., 0:h, :] * taps[:, 0]
    for i in range(1, k):
        cols.addcmul_(x[..., i : i + h, :], taps[:, i])
    out = cols[..., 0:w] * taps[:, 0]
    for i in range(1, k):
        out.addcmul_(cols[..., i : i + w], taps[:, i])
    return out


def gaussian_blur(
    images: torch.Tensor,
    sigma: torch.Tensor,
    kernel_size: Optional[int] = None,
    where: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Gaussian blur with per-sample ``sigma`` (``[B]``, pixels), reflect padding (as torchvision).

    ``kernel_size`` defaults to :func:`blur_kernel_size` of the smaller image side; samples not in
    ``where`` are left unchanged.
    """
    k = kernel_size or blur_kernel_size(min(images.shape[-2:]))
    return masked(lambda x, s: separable_filter(x, gaussian_kernels(s.to(x.dtype), k)), images, where, sigma)


# -------------------------------------------------------------------------------------------------
# Random parameters (one row per sample) and the random ops built on them
# -------------------------------------------------------------------------------------------------
# The sample_* functions return the keyword arguments of the matching deterministic op, so that a
# pipeline can draw everything for a batch first and then apply it in memory-friendly chunks.
def _factor(strength: float, n: int, generator, device) -> Optional[torch.Tensor]:
    """torchvision ColorJitter factor range: U(max(0, 1 − s), 1 + s); None when s = 0."""
    return uniform(max(0.0, 1.0 - strength), 1.0 + strength, n, generator, device) if strength > 0 else None


def sample_color_jitter(
    n: int,
    generator: Optional[torch.Generator],
    device,
    p: float = 0.8,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.2,
    hue: float = 0.1,
) -> dict[str, Optional[torch.Tensor]]:
    """Per-sample jitter factors (torchvision ``ColorJitter`` ranges) and which samples get them."""
    return {
        "where": bernoulli(p, n, generator, device),
        "brightness": _factor(brightness, n, generator, device),
        "contrast": _factor(contrast, n, generator, device),
        "saturation": _factor(saturation, n, generator, device),
        "hue": uniform(-hue, hue, n, generator, device) if hue > 0 else None,
    }


def sample_gaussian_blur(
    n: int, generator: Optional[torch.Generator], device, p: float = 0.5, sigma: Pair = (0.1, 2.0)
) -> dict[str, torch.Tensor]:
    """Which samples are blurred, and their σ ~ U(sigma) pixels."""
    return {"where": bernoulli(p, n, generator, device), "sigma": uniform(sigma[0], sigma[1], n, generator, device)}


def random_color_jitter(
    images: torch.Tensor,
    generator: Optional[torch.Generator],
    p: float = 0.8,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.2,
    hue: float = 0.1,
) -> torch.Tensor:
    """With probability ``p`` per sample, jitter brightness, contrast, saturation and hue, with
    per-sample factors drawn as torchvision's ``ColorJitter`` (fixed order, see :func:`color_jitter`)."""
    params = sample_color_jitter(images.shape[0], generator, images.device, p, brightness, contrast, saturation, hue)
    return color_jitter(images, **params)


def random_grayscale(images: torch.Tensor, generator: Optional[torch.Generator], p: float = 0.2) -> torch.Tensor:
    """With probability ``p`` per sample, replace an RGB image by its grey version (3 channels kept)."""
    return grayscale(images, where=bernoulli(p, images.shape[0], generator, images.device))


def random_gaussian_blur(
    images: torch.Tensor,
    generator: Optional[torch.Generator],
    p: float = 0.5,
    sigma: Pair = (0.1, 2.0),
    kernel_size: Optional[int] = None,
) -> torch.Tensor:
    """With probability ``p`` per sample, blur with σ ~ U(sigma) pixels."""
    params = sample_gaussian_blur(images.shape[0], generator, images.device, p, sigma)
    return gaussian_blur(images, kernel_size=kernel_size, **params)


def random_solarize(
    images: torch.Tensor, generator: Optional[torch.Generator], p: float = 0.2, threshold: float = 0.5
) -> torch.Tensor:
    """With probability ``p`` per sample, solarize (BYOL's second-view asymmetry, arXiv 2006.07733)."""
    return solarize(images, threshold, where=bernoulli(p, images.shape[0], generator, images.device))
