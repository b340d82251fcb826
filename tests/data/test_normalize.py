"""Per-channel standardisation with the training split's statistics."""

import numpy as np
import pytest
import torch

from ssl_bench.data.normalize import Normalize


def test_fit_is_the_mean_and_std_of_a_seeded_subsample(retina):
    images = retina.train.images  # real RGB, 1,080 images
    norm = Normalize.fit(images, max_images=500, seed=3)
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(3))[:500].numpy()
    x = images.numpy()[idx].astype(np.float64) / 255
    assert np.allclose(norm.mean.flatten().numpy(), x.mean(axis=(0, 2, 3)), atol=1e-6)
    assert np.allclose(norm.std.flatten().numpy(), x.std(axis=(0, 2, 3), ddof=1), atol=1e-5)
    assert not np.allclose(norm.mean.flatten().numpy()[0], norm.mean.flatten().numpy()[1])  # per channel
    z = norm(images[:256].float() / 255)
    assert abs(float(z.mean())) < 0.1 and abs(float(z.std()) - 1) < 0.1
    again = Normalize(norm.state_dict()["mean"], norm.state_dict()["std"])
    assert torch.equal(again(z), norm(z))


def test_a_constant_channel_is_not_divided_by_zero():
    images = torch.full((10, 1, 4, 4), 7, dtype=torch.uint8)
    norm = Normalize.fit(images)
    assert float(norm.std) == pytest.approx(1e-3) and torch.isfinite(norm(images.float() / 255)).all()
