"""Shared fixtures: the real data in ../shared/data (never downloaded, never copied)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SSL_BENCH_SHARED_DATA", REPO.parent / "shared" / "data"))
MEDMNIST_ROOT = SHARED_DATA / "medmnist"
HAM_ZIP = SHARED_DATA / "subsets" / "ham10000_200x150_jpeg.zip"  # all 10,015 HAM10000 JPEGs (PROVENANCE.md)
# the 28 px lesion-grouped array made from the same JPEGs; optional (it is being retired from
# ../shared/data): the tests that compare against it skip when it is gone
HAM_NPZ = SHARED_DATA / "subsets" / "ham10000_lesions_28.npz"

if not (MEDMNIST_ROOT / "breastmnist.npz").is_file():  # fail loudly: tests need the real data
    raise RuntimeError(f"real test data not found at {MEDMNIST_ROOT}; set SSL_BENCH_SHARED_DATA")

# Every dataset built in tests reads the shared files; nothing is ever downloaded.
os.environ["SSL_BENCH_MEDMNIST_ROOT"] = str(MEDMNIST_ROOT)
# decoded-image caches of the test session go to one temporary folder, never to ~/.cache
if "SSL_BENCH_CACHE_DIR" not in os.environ:
    os.environ["SSL_BENCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="ssl-bench-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SSL_BENCH_CACHE_DIR"], ignore_errors=True)
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def breast():
    from ssl_bench.data import DATASETS

    return DATASETS.build({"name": "medmnist", "flag": "breastmnist", "download": False})


@pytest.fixture(scope="session")
def retina():
    from ssl_bench.data import DATASETS

    return DATASETS.build({"name": "medmnist", "flag": "retinamnist", "download": False})


@pytest.fixture(scope="session")
def pneumonia():
    from ssl_bench.data import DATASETS

    return DATASETS.build({"name": "medmnist", "flag": "pneumoniamnist", "download": False})


@pytest.fixture(scope="session")
def ham():
    """HAM10000 at 28 px, lesion-disjoint splits, read from the real JPEG zip by the isic adapter."""
    from ssl_bench.data import DATASETS

    return DATASETS.build({"name": "isic", "root": str(HAM_ZIP), "size": 28})


needs_ham_npz = pytest.mark.skipif(not HAM_NPZ.is_file(), reason=f"{HAM_NPZ.name} is not in {HAM_NPZ.parent} (retired)")


@pytest.fixture(autouse=True)
def _no_registrations_leak_between_tests():
    """What a test registers (a plug-in file it loads, a class of its own) is undone after it, and a
    component it replaced is put back, so that no test sees another's: the suite passes in any order
    (`pytest -p randomly`). A built-in module first imported during the test keeps its entries (it is
    not imported again)."""
    from ssl_bench import registry

    before, loaded = registry.registrations(), set(registry._LOADED_FILES)
    yield
    registry.undo_registrations(before,
                                lambda entry: not getattr(entry.factory, "__module__", "").startswith("ssl_bench."))
    for path in set(registry._LOADED_FILES) - loaded:  # loaded again (and registered again) when asked
        del registry._LOADED_FILES[path]


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory, request):
    """A folder for the runs a module's tests share, deleted after the module's last test when none of
    them failed (kept to look at otherwise), as a passing test's ``tmp_path`` is (pyproject's
    ``tmp_path_retention_policy``). Kept to the end of the session, these runs' checkpoints made the
    suite's temporary files peak at 2.3 GB."""
    failed = request.session.testsfailed
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield path
    if request.session.testsfailed == failed:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tiny_resnet():
    """A real timm ResNet-18 with the small-image stem (what the recipes use)."""
    from ssl_bench.backbones import build_backbone

    def make(in_chans: int = 1):
        torch.manual_seed(0)
        return build_backbone({"name": "resnet18", "small_image_stem": True}, in_chans=in_chans)

    return make


def real_batch(data, n: int = 16, size: int | None = None, seed: int = 0):
    """A normalised float batch of ``n`` real training images and their labels."""
    from ssl_bench.augment import center_view

    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.train), generator=g)[:n]
    x = center_view(data.train.images[idx], size or data.image_size)
    return (x - 0.5) / 0.25, data.train.labels[idx]


def load_medmnist_train(name: str, n: int) -> torch.Tensor:
    """uint8 [n, C, H, W]: the first ``n`` training images of a real MedMNIST file."""
    x = torch.from_numpy(np.load(MEDMNIST_ROOT / f"{name}.npz")["train_images"][:n])
    return x.unsqueeze(1).contiguous() if x.dim() == 3 else x.permute(0, 3, 1, 2).contiguous()
