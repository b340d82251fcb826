"""Seeded group-disjoint splits on real group ids (HAM10000 lesions)."""

import numpy as np
import pytest

from ssl_bench.data.splits import assert_group_disjoint, carve_val, group_split
from ssl_bench.errors import SSLBenchError
from tests.conftest import HAM_NPZ, needs_ham_npz
from tests.data.layouts import ham_metadata


@pytest.fixture(scope="module")
def lesions():
    """The lesion id of each of the 10,015 real HAM10000 images and its split (seed 0, 0.7/0.1/0.2)."""
    lesion_id = ham_metadata()["lesion_id"].to_numpy()
    return lesion_id, group_split(lesion_id, (0.7, 0.1, 0.2), seed=0)


@needs_ham_npz
def test_reproduces_the_published_lesion_split():
    z = np.load(HAM_NPZ)
    got = group_split(z["lesion_id"], (0.7, 0.1, 0.2), seed=0)
    assert np.array_equal(got, z["split"])  # PROVENANCE.md: RandomState(0) over sorted lesion ids


def test_lesion_split_sizes(lesions):
    _, split = lesions
    assert [(split == s).sum() for s in ("train", "val", "test")] == [7030, 996, 1989]


def test_group_disjoint_seeded_and_ratios(lesions):
    lesion_id, _ = lesions
    a = group_split(lesion_id, (0.6, 0.2, 0.2), seed=1)
    assert_group_disjoint(a, lesion_id)
    n_groups = {s: len(np.unique(lesion_id[a == s])) for s in ("train", "val", "test")}
    assert n_groups == {"train": round(0.6 * 7470), "val": round(0.2 * 7470),
                        "test": 7470 - round(0.6 * 7470) - round(0.2 * 7470)}
    assert np.array_equal(a, group_split(lesion_id, (0.6, 0.2, 0.2), seed=1))
    assert not np.array_equal(a, group_split(lesion_id, (0.6, 0.2, 0.2), seed=2))
    ids, counts = np.unique(lesion_id[a == "train"], return_counts=True)
    row = np.nonzero(lesion_id == ids[counts > 1][0])[0][0]
    mixed = a.copy()
    mixed[row] = "test"  # one image of a two-image training lesion moved to test
    with pytest.raises(SSLBenchError, match="is in both the train and the test split"):
        assert_group_disjoint(mixed, lesion_id)


def test_carve_val_keeps_test_and_groups(lesions):
    lesion_id, published = lesions
    out = carve_val(np.where(published == "test", "test", "train"), lesion_id, 0.125, seed=0)
    assert np.array_equal(out == "test", published == "test")
    assert_group_disjoint(out, lesion_id)
    assert abs((out == "val").sum() / (out != "test").sum() - 0.125) < 0.03
    with pytest.raises(SSLBenchError, match="data.val_fraction must be in"):
        carve_val(published, lesion_id, 1.0)
