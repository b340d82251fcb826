"""Every registered augmentation set, on real BreastMNIST (grey) and RetinaMNIST (RGB) batches."""

from __future__ import annotations

import inspect
import typing

import pytest
import torch
import torch.nn.functional as F

from ssl_bench.augment import AUGMENTATIONS, TwoViews, center_view
from ssl_bench.errors import SSLBenchError
from tests.conftest import load_medmnist_train

N = 24


def load(name: str, n: int = N) -> torch.Tensor:
    return load_medmnist_train(name, n)


@pytest.fixture(scope="module", params=["breastmnist", "retinamnist"])
def images(request) -> torch.Tensor:
    return load(request.param)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


SETS = AUGMENTATIONS.names()
RANDOM_SETS = [n for n in SETS if n not in ("light", "none")]


def test_the_expected_sets_are_registered():
    assert set(SETS) >= {"byol", "simclr", "light", "rot90", "randrot", "none"}


@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("size", [None, 32])
def test_set_gives_two_float_views(images, name, size):
    views = AUGMENTATIONS.build({"name": name, "size": size})
    assert isinstance(views, TwoViews)
    v1, v2 = views(images, gen())
    s = size or images.shape[-1]
    for v in (v1, v2):
        assert v.shape == (len(images), images.shape[1], s, s)
        assert v.dtype == torch.float32
        assert torch.isfinite(v).all() and v.min() >= 0 and v.max() <= 1 + 1e-6


@pytest.mark.parametrize("name", SETS)
def test_set_factory_is_documented_and_typed(name):
    entry = next(e for e in AUGMENTATIONS.entries() if e.name == name)
    assert entry.summary  # first docstring line, shown by `ssl-bench list`
    sig = inspect.signature(entry.factory)
    hints = typing.get_type_hints(entry.factory)
    assert "size" in sig.parameters and sig.parameters["size"].default is None
    for p in sig.parameters.values():
        assert p.name in hints, f"{name}.{p.name} has no type annotation"
        assert p.default is not inspect.Parameter.empty, f"{name}.{p.name} has no default"
    AUGMENTATIONS.check({"name": name})  # buildable with defaults only


@pytest.mark.parametrize("name", RANDOM_SETS)
def test_random_set_is_reproducible_and_random(name, images):
    views = AUGMENTATIONS.build({"name": name})
    a1, a2 = views(images, gen(3))
    b1, b2 = views(images, gen(3))
    c1, _ = views(images, gen(4))
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.allclose(a1, c1)
    assert not torch.allclose(a1, a2)  # the two views differ


@pytest.mark.parametrize("size", [None, 56])
def test_light_views_are_identity_and_flipped_centre_crop(images, size):
    views = AUGMENTATIONS.build({"name": "light", "size": size})
    v1, v2 = views(images, gen(0))
    w1, w2 = views(images, gen(1))
    assert torch.equal(v1, w1) and torch.equal(v2, w2)  # deterministic
    s = size or 28
    torch.testing.assert_close(v1, center_view(images, s), atol=0, rtol=0)
    torch.testing.assert_close(v2, torch.flip(center_view(images, s, 0.875), (-1,)), atol=1e-5, rtol=0)
    if size is None:
        assert torch.equal(v1, images.float() / 255)


@pytest.mark.parametrize("name", ["light", "none"])
def test_deterministic_sets_leave_the_generator_alone(images, name):
    g = gen(7)
    state = g.get_state()
    AUGMENTATIONS.build({"name": name, "size": 32})(images, g)
    assert torch.equal(g.get_state(), state)


def test_light_view2_against_an_explicit_crop(images):
    # crop 0.5 of 28 px = pixels 7..20; resized back to 28 px and flipped. Away from the border the
    # bilinear samples only use pixels of the crop, so they match crop + interpolate exactly.
    _, v2 = AUGMENTATIONS.build({"name": "light", "crop": 0.5})(images, gen())
    crop = images[..., 7:21, 7:21].float() / 255
    ref = torch.flip(F.interpolate(crop, size=(28, 28), mode="bilinear", align_corners=False), (-1,))
    torch.testing.assert_close(v2[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5, rtol=0)


def test_none_views_are_the_images(images):
    v1, v2 = AUGMENTATIONS.build({"name": "none"})(images, gen())
    assert torch.equal(v1, images.float() / 255) and torch.equal(v2, v1)


def test_byol_views_are_asymmetric():
    views = AUGMENTATIONS.build({"name": "byol"})
    assert (views.view1.blur, views.view2.blur) == (1.0, 0.1)
    assert (views.view1.solarize, views.view2.solarize) == (0.0, 0.2)
    assert views.view1.vflip == 0.5 and views.view1.rotation == 45.0 and views.view1.jitter == 0.8


def test_overrides_reach_the_views():
    views = AUGMENTATIONS.build({"name": "randrot", "rotation": 90, "padding_mode": "zeros", "size": 40})
    assert views.view1.rotation == 90.0 and views.view1.padding_mode == "zeros" and views.view1.size == 40
    assert AUGMENTATIONS.build({"name": "rot90"}).view1.rot90 is True
    assert AUGMENTATIONS.build({"name": "simclr", "crop_scale": [0.2, 1.0]}).view1.crop_scale == (0.2, 1.0)


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"name": "byol", "crop_scale": [0.5, 0.1]}, "augmentation option crop_scale must be"),
        ({"name": "simclr", "jiter": 0.5}, "did you mean 'jitter'"),
        ({"name": "randrot", "padding_mode": "wrap"}, "padding_mode must be"),
        ({"name": "byol", "size": "big"}, "size must be"),
        ({"name": "light", "crop": 1.5}, "augmentation option crop must be"),
        ({"name": "byol", "blur": [1.0]}, "blur must be"),
        ({"name": "simclrr"}, "did you mean 'simclr'"),
    ],
)
def test_bad_recipe_options_are_one_line_errors(cfg, message):
    with pytest.raises(SSLBenchError, match=message) as e:
        AUGMENTATIONS.build(cfg, key="augment")
    assert "\n" not in str(e.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", SETS)
def test_set_runs_on_cuda(name):
    x = load("retinamnist").cuda()
    v1, v2 = AUGMENTATIONS.build({"name": name, "size": 32})(x, torch.Generator(device="cuda").manual_seed(0))
    assert v1.device.type == "cuda" and v2.shape == (N, 3, 32, 32)
    assert torch.isfinite(v1).all() and torch.isfinite(v2).all()


@pytest.mark.parametrize("name", ["simclr", "rot90", "randrot"])
def test_tsimcne_ablation_options_switch_ops_off(name):
    """The poster's ablations (arXiv 2402.14566): no crops / no colour jitter / no grayscale."""
    x = load("breastmnist", 8)
    plain = AUGMENTATIONS.build({"name": name, "crop": False, "jitter": 0, "grayscale": 0, "hflip": 0.0})
    v, _ = plain(x, gen(0))
    if name == "simclr":  # nothing random is left: the views are the images
        assert torch.equal(v, x.float() / 255)
    else:  # only the rotation is left: same pixel histogram up to resampling, not the same images
        assert not torch.equal(v, x.float() / 255)
    cropped, _ = AUGMENTATIONS.build({"name": name, "jitter": 0, "grayscale": 0, "hflip": 0.0})(x, gen(0))
    assert not torch.allclose(cropped, v)
    with pytest.raises(SSLBenchError, match="crop"):
        AUGMENTATIONS.build({"name": name, "crop": "no"})
