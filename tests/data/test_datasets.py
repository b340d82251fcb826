import numpy as np
import pytest
import torch

from ssl_bench.data import DATASETS, batches
from ssl_bench.errors import SSLBenchError


def test_breastmnist_matches_the_official_file(breast):
    assert breast.name == "BreastMNIST" and breast.task == "binary-class"
    assert breast.train.images.shape == (546, 1, 28, 28) and breast.train.images.dtype == torch.uint8
    assert (len(breast.val), len(breast.test)) == (78, 156)
    assert breast.train.labels.bincount().tolist() == [147, 399]  # PROVENANCE.md counts
    assert breast.test.labels.bincount().tolist() == [42, 114]
    assert breast.class_names == ["malignant", "normal, benign"]
    assert breast.label_chance_rate() == pytest.approx((147 / 546) ** 2 + (399 / 546) ** 2)


def test_retinamnist_is_rgb_ordinal(retina):
    assert retina.train.images.shape == (1080, 3, 28, 28)
    assert retina.task == "ordinal-regression" and retina.num_classes == 5
    assert retina.train.labels.bincount().tolist() == [486, 128, 206, 194, 66]
    raw = np.load(retina_path())["train_images"]
    assert torch.equal(retina.train.images[7], torch.from_numpy(raw[7]).permute(2, 0, 1))


def retina_path():
    import os

    return os.path.join(os.environ["SSL_BENCH_MEDMNIST_ROOT"], "retinamnist.npz")


def test_as_rgb_and_bad_flags(tmp_path):
    d = DATASETS.build({"name": "medmnist", "flag": "breastmnist", "as_rgb": True})
    assert d.channels == 3 and torch.equal(d.train.images[:, 0], d.train.images[:, 2])
    with pytest.raises(SSLBenchError, match="did you mean 'breastmnist'"):
        DATASETS.build({"name": "medmnist", "flag": "breastmnst"})
    with pytest.raises(SSLBenchError, match="3-D"):
        DATASETS.build({"name": "medmnist", "flag": "adrenalmnist3d"})
    with pytest.raises(SSLBenchError, match="data.size must be one of"):
        DATASETS.build({"name": "medmnist", "flag": "breastmnist", "size": 32})
    with pytest.raises(SSLBenchError, match=r"MedMNIST file not found: .*pneumoniamnist_64\.npz"):
        DATASETS.build({"name": "medmnist", "flag": "pneumoniamnist", "size": 64, "root": str(tmp_path),
                        "download": False})


def test_ham10000_28px_has_lesion_groups(ham):
    assert (len(ham.train), len(ham.val), len(ham.test)) == (7030, 996, 1989)
    assert ham.train.images.shape[1:] == (3, 28, 28)
    assert ham.class_names == ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]
    # the per-class counts of the 28 px array's training split (PROVENANCE.md), in ISIC 2019 order
    assert ham.train.labels.bincount().tolist() == [811, 4678, 380, 231, 742, 85, 103]
    # a lesion never crosses splits and all images of a lesion share the diagnosis
    tr, te = set(ham.train.groups.tolist()), set(ham.test.groups.tolist())
    assert not tr & te
    g, lab = ham.train.groups, ham.train.labels
    for lesion in g.unique()[:200]:
        assert lab[g == lesion].unique().numel() == 1


def test_npz_errors(tmp_path):
    with pytest.raises(SSLBenchError, match="npz file not found"):
        DATASETS.build({"name": "npz", "path": str(tmp_path / "x.npz")})
    p = tmp_path / "x.npz"
    np.savez(p, images=np.zeros((4, 8, 8), np.uint8), labels=np.zeros(4))
    with pytest.raises(SSLBenchError, match="has no array 'fold'"):  # a named split array must exist
        DATASETS.build({"name": "npz", "path": str(p), "split": "fold"})
    assert len(DATASETS.build({"name": "npz", "path": str(p)}).train) == 3  # none at all: carved (0.7 of 4)


def test_batches_cover_each_index_once_per_epoch():
    g = torch.Generator().manual_seed(0)
    got = torch.cat(list(batches(100, 32, g, drop_last=False)))
    assert sorted(got.tolist()) == list(range(100))
    assert [len(b) for b in batches(100, 32, g)] == [32, 32, 32]
    assert [len(b) for b in batches(10, 32, g)] == [10]  # fewer images than a batch: one batch
