"""Batched augmentation ops against torch / torchvision references, on real MedMNIST images."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from ssl_bench.augment import ViewTransform, center_view, ops, pipeline
from ssl_bench.errors import SSLBenchError
from tests.conftest import load_medmnist_train

N = 32


def load(name: str, n: int = N) -> torch.Tensor:
    return load_medmnist_train(name, n)


@pytest.fixture(scope="module")
def breast_u8() -> torch.Tensor:
    return load("breastmnist")  # 1 channel


@pytest.fixture(scope="module")
def retina_u8() -> torch.Tensor:
    return load("retinamnist")  # 3 channels


@pytest.fixture(params=["breast_u8", "retina_u8"])
def images(request) -> torch.Tensor:
    return request.getfixturevalue(request.param)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unit(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255


FULL_RANDOM = dict(
    hflip=0.5, vflip=0.5, rot90=True, rotation=30.0, jitter=0.8, grayscale=0.3, blur=0.5, solarize=0.3
)


# -------------------------------------------------------------------------------------------------
# Geometry
# -------------------------------------------------------------------------------------------------
def test_identity_view_is_input_over_255(images):
    out = ViewTransform(crop_scale=None)(images, gen())
    assert out.dtype == torch.float32
    assert torch.equal(out, unit(images))


def test_resize_matches_bilinear_interpolate(images):
    out = ViewTransform(size=56, crop_scale=None)(images, gen())
    ref = F.interpolate(unit(images), size=(56, 56), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "hflip, vflip, dims", [(1.0, 0.0, (-1,)), (0.0, 1.0, (-2,)), (1.0, 1.0, (-2, -1))]
)
def test_flips_are_exact(images, hflip, vflip, dims):
    out = ViewTransform(crop_scale=None, hflip=hflip, vflip=vflip)(images, gen())
    torch.testing.assert_close(out, torch.flip(unit(images), dims), atol=1e-5, rtol=0)


def test_rot90_is_exact_per_sample(images):
    x = unit(images)
    k = torch.arange(len(x)) % 4  # a different k within the batch
    full, centre = torch.ones(len(x), 2), torch.zeros(len(x), 2)
    theta = ops.affine_theta(full, centre, (28, 28), rot90=k)
    out = ops.affine_resample(x, theta, (28, 28))
    ref = torch.stack([torch.rot90(x[i], int(k[i]), dims=(-2, -1)) for i in range(len(x))])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_arbitrary_angle_turns_the_same_way_as_rot90(retina_u8):
    x = unit(retina_u8)
    full, centre = torch.ones(len(x), 2), torch.zeros(len(x), 2)
    theta = ops.affine_theta(full, centre, (28, 28), angle=torch.full((len(x),), math.pi / 2))
    out = ops.affine_resample(x, theta, (28, 28))
    torch.testing.assert_close(out, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_random_rot90_view_gives_the_four_rotations(breast_u8):
    x = unit(breast_u8)
    out = ViewTransform(crop_scale=None, rot90=True)(breast_u8, gen())
    rotations = torch.stack([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])  # [4, B, C, H, W]
    err = (rotations - out.unsqueeze(0)).abs().amax(dim=(2, 3, 4))  # [4, B]
    assert (err.min(dim=0).values < 1e-5).all()  # every output is one of the rotations
    assert len(set(err.argmin(dim=0).tolist())) == 4  # and the batch uses all four


def test_crop_box_samples_the_right_pixels(images):
    # top-left quadrant: crop half-size 0.5 centred at (-0.5, -0.5), output 14 px = exact pixels
    n = len(images)
    theta = ops.affine_theta(torch.full((n, 2), 0.5), torch.full((n, 2), -0.5), (14, 14))
    out = ops.affine_resample(unit(images), theta, (14, 14))
    torch.testing.assert_close(out, unit(images)[..., :14, :14], atol=1e-5, rtol=0)


def test_random_resized_crop_boxes_follow_torchvision_ranges():
    n = 4096
    size, centre = ops.sample_crop(n, (28, 28), (0.08, 1.0), (3 / 4, 4 / 3), gen(), "cpu")
    assert ((centre.abs() + size) <= 1 + 1e-5).all()  # inside the image
    area = size.prod(dim=1)
    assert area.min() >= 0.08 - 1e-5 and area.max() <= 1 + 1e-6
    assert 0.45 < area.mean() < 0.6 and area.std() > 0.2  # spread over the whole range
    ratio = size[:, 0] / size[:, 1]
    in_range = (ratio >= 3 / 4 - 1e-4) & (ratio <= 4 / 3 + 1e-4)
    assert in_range.float().mean() > 0.99
    clamped = (size >= 1 - 1e-6).any(dim=1)  # no try fitted: the box was clamped to a full side
    assert clamped.float().mean() < 0.005  # retries make this rare (one try alone: ~7 %)
    assert centre.abs().max() > 0.5  # positions vary, not only centre crops


def test_rotation_fill_modes():
    white = torch.full((8, 1, 28, 28), 255, dtype=torch.uint8)
    filled = ViewTransform(crop_scale=None, rotation=180.0, padding_mode="reflection")(white, gen())
    black = ViewTransform(crop_scale=None, rotation=180.0, padding_mode="zeros")(white, gen())
    assert torch.allclose(filled, torch.ones_like(filled), atol=1e-5)
    assert (black < 0.5).any()  # corners brought in from outside are black


def test_antialiased_downscale_matches_interpolate(retina_u8):
    big = F.interpolate(unit(retina_u8), size=(112, 112), mode="bilinear", align_corners=False)
    big_u8 = (big * 255).round().to(torch.uint8)
    out = center_view(big_u8, 28)
    ref = F.interpolate(unit(big_u8), size=(28, 28), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


# -------------------------------------------------------------------------------------------------
# Randomness: per sample, from the generator only
# -------------------------------------------------------------------------------------------------
def test_same_seed_same_views_other_seed_other_views(images):
    view = ViewTransform(size=32, **FULL_RANDOM)
    a, b, c = view(images, gen(1)), view(images, gen(1)), view(images, gen(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_global_rng_is_not_touched(retina_u8):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ViewTransform(**FULL_RANDOM)(retina_u8, gen())
    assert torch.equal(torch.rand(3), expected)


def test_parameters_differ_within_a_batch(retina_u8):
    same = retina_u8[:1].expand(48, -1, -1, -1).contiguous()  # one image, 48 times
    out = ViewTransform(**FULL_RANDOM)(same, gen())
    flat = out.flatten(1)
    distinct = torch.cdist(flat, flat) + torch.eye(len(flat))
    assert distinct.min() > 1e-3  # 48 different views of the same image
    flipped = ViewTransform(crop_scale=None, hflip=0.5)(same, gen())
    is_flipped = (flipped - torch.flip(unit(same), (-1,))).abs().flatten(1).amax(1) < 1e-5
    assert 0 < is_flipped.sum() < len(same)


@pytest.mark.parametrize("size", [None, 20, 40])
def test_output_dtype_shape_range(images, size):
    out = ViewTransform(size=size, **FULL_RANDOM)(images, gen())
    s = size or 28
    assert out.shape == (len(images), images.shape[1], s, s) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1 + 1e-6


def test_chunking_does_not_change_the_result(retina_u8, monkeypatch):
    view = ViewTransform(size=32, **FULL_RANDOM)
    whole = view(retina_u8, gen(5))
    monkeypatch.setattr(pipeline, "CHUNK_ELEMENTS", 3 * 32 * 32 * 5)  # chunks of 5 images
    torch.testing.assert_close(view(retina_u8, gen(5)), whole, atol=1e-6, rtol=0)


def test_gpu_strategy_gives_the_cpu_result(retina_u8, monkeypatch):
    # On CUDA, masked ops run on the whole batch + torch.where instead of on the selected subset.
    view = ViewTransform(size=32, **FULL_RANDOM)
    subset = view(retina_u8, gen(6))
    monkeypatch.setattr(ops, "_run_on_subset", lambda images: False)
    torch.testing.assert_close(view(retina_u8, gen(6)), subset, atol=1e-6, rtol=0)


# -------------------------------------------------------------------------------------------------
# Colour ops vs torchvision.transforms.v2.functional, fixed (per-sample different) factors
# -------------------------------------------------------------------------------------------------
def per_sample_reference(fn, x, factors):
    return torch.stack([fn(x[i], float(factors[i])) for i in range(len(x))])


@pytest.mark.parametrize(
    "op, ref, lo, hi",
    [
        (ops.adjust_brightness, TF.adjust_brightness, 0.2, 1.8),
        (ops.adjust_contrast, TF.adjust_contrast, 0.2, 1.8),
        (ops.adjust_saturation, TF.adjust_saturation, 0.0, 2.0),
        (ops.adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
    ids=["brightness", "contrast", "saturation", "hue"],
)
def test_color_op_matches_torchvision(images, op, ref, lo, hi):
    x = unit(images)
    factors = torch.linspace(lo, hi, len(x))
    torch.testing.assert_close(op(x, factors), per_sample_reference(ref, x, factors), atol=2e-5, rtol=0)


def test_grayscale_matches_torchvision(retina_u8, breast_u8):
    x = unit(retina_u8)
    torch.testing.assert_close(ops.grayscale(x), TF.rgb_to_grayscale(x, num_output_channels=3), atol=1e-6, rtol=0)
    assert torch.equal(ops.grayscale(unit(breast_u8)), unit(breast_u8))  # grey stays grey, 1 channel
    where = torch.arange(len(x)) % 2 == 0
    out = ops.grayscale(x, where)
    assert torch.equal(out[1::2], x[1::2])
    torch.testing.assert_close(out[::2], TF.rgb_to_grayscale(x[::2], num_output_channels=3), atol=1e-6, rtol=0)


def test_color_jitter_only_touches_selected_samples(retina_u8):
    x = unit(retina_u8)
    where = torch.arange(len(x)) % 3 == 0
    params = ops.sample_color_jitter(len(x), gen(), "cpu", 1.0, 0.4, 0.4, 0.2, 0.1)
    params["where"] = where
    out = ops.color_jitter(x, **params)
    assert torch.equal(out[~where], x[~where])
    assert (out[where] - x[where]).abs().flatten(1).amax(1).min() > 1e-3
    # the composition equals the four torchvision ops in our fixed order
    i = int(where.nonzero()[0])
    ref = TF.adjust_brightness(x[i], float(params["brightness"][i]))
    ref = TF.adjust_contrast(ref, float(params["contrast"][i]))
    ref = TF.adjust_saturation(ref, float(params["saturation"][i]))
    ref = TF.adjust_hue(ref, float(params["hue"][i]))
    torch.testing.assert_close(out[i], ref, atol=2e-5, rtol=0)


def test_solarize_matches_torchvision(images):
    x = unit(images)
    torch.testing.assert_close(ops.solarize(x, 0.5), TF.solarize(x, 0.5), atol=0, rtol=0)


@pytest.mark.parametrize("side", [28, 64])
def test_blur_matches_torchvision(images, side):
    x = F.interpolate(unit(images), size=(side, side), mode="bilinear", align_corners=False)
    sigma = torch.linspace(0.3, 2.0, len(x))
    k = ops.blur_kernel_size(side)
    assert k == {28: 3, 64: 7}[side]
    ref = torch.stack([TF.gaussian_blur(x[i], [k, k], [float(sigma[i])] * 2) for i in range(len(x))])
    torch.testing.assert_close(ops.gaussian_blur(x, sigma), ref, atol=1e-5, rtol=0)


def test_blur_where_leaves_other_samples_untouched(retina_u8):
    x = unit(retina_u8)
    where = torch.arange(len(x)) < 5
    out = ops.gaussian_blur(x, torch.full((len(x),), 1.5), where=where)
    assert torch.equal(out[5:], x[5:])
    assert not torch.allclose(out[:5], x[:5])


def test_random_ops_with_probability_zero_and_one(retina_u8):
    x = unit(retina_u8)
    assert torch.equal(ops.random_solarize(x, gen(), p=0.0), x)
    assert torch.equal(ops.random_gaussian_blur(x, gen(), p=0.0), x)
    assert torch.equal(ops.random_color_jitter(x, gen(), p=0.0), x)
    assert torch.equal(ops.random_grayscale(x, gen(), p=1.0), ops.grayscale(x))
    assert torch.equal(ops.random_solarize(x, gen(), p=1.0), ops.solarize(x))


# -------------------------------------------------------------------------------------------------
# Errors and devices
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, option",
    [
        ({"size": 0}, "size"),
        ({"crop_scale": (0.5, 0.1)}, "crop_scale"),
        ({"crop_scale": (0.0, 1.0)}, "crop_scale"),
        ({"crop_ratio": (2.0,)}, "crop_ratio"),
        ({"hflip": 1.5}, "hflip"),
        ({"rot90": 1}, "rot90"),
        ({"rotation": -5}, "rotation"),
        ({"padding_mode": "wrap"}, "padding_mode"),
        ({"jitter": "high"}, "jitter"),
        ({"hue": 0.7}, "hue"),
        ({"brightness": -0.1}, "brightness"),
        ({"blur_sigma": (2.0, 1.0)}, "blur_sigma"),
        ({"center_crop": 0.0}, "center_crop"),
    ],
)
def test_bad_option_is_a_one_line_error(kwargs, option):
    with pytest.raises(SSLBenchError, match=rf"augmentation option {option} must be") as e:
        ViewTransform(**kwargs)
    assert "\n" not in str(e.value)


def test_bad_input_is_a_one_line_error(retina_u8):
    view = ViewTransform()
    with pytest.raises(SSLBenchError, match="C = 1 or 3"):
        view(torch.zeros(2, 4, 28, 28, dtype=torch.uint8), gen())
    with pytest.raises(SSLBenchError, match="uint8"):
        view(retina_u8.to(torch.int32), gen())
    with pytest.raises(SSLBenchError, match="crop"):
        center_view(retina_u8, 28, crop=1.2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_views_are_on_device_and_deterministic(retina_u8):
    x = retina_u8.cuda()
    view = ViewTransform(size=32, **FULL_RANDOM)
    a = view(x, torch.Generator(device="cuda").manual_seed(0))
    b = view(x, torch.Generator(device="cuda").manual_seed(0))
    assert a.device.type == "cuda" and a.shape == (N, 3, 32, 32)
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1 + 1e-6
    # deterministic ops agree with the CPU
    torch.testing.assert_close(center_view(x, 40, 0.875).cpu(), center_view(retina_u8, 40, 0.875), atol=1e-5, rtol=0)
    params = torch.linspace(-0.5, 0.5, N)
    on_gpu = ops.adjust_hue(unit(x), params.cuda()).cpu()
    torch.testing.assert_close(on_gpu, ops.adjust_hue(unit(retina_u8), params), atol=1e-5, rtol=0)
    with pytest.raises(SSLBenchError, match="generator is on cpu"):
        view(x, gen())
