"""Seeded, group-disjoint train / val / test splits for datasets without official ones.

No patient or lesion is ever in two splits: the *groups* (``lesion_id``, ``Patient ID``, or the
image itself when there is none) are shuffled with ``numpy.random.RandomState(seed)`` and cut by
the recipe's ratios (``data.split_ratios: [train, val, test]``): the first ``round(r_train·G)``
groups go to train, the next ``round(r_val·G)`` to val and the rest to test.  This is the recipe
the shared ``ham10000_lesions_28.npz`` split was made with (see ``../shared/data/PROVENANCE.md``),
so the isic adapter with seed 0 and ``[0.7, 0.1, 0.2]`` reproduces that file's split exactly.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ssl_bench.errors import SSLBenchError

__all__ = [
    "SPLITS", "check_ratios", "group_split", "stratified_group_split", "carve_val", "assert_group_disjoint",
]

SPLITS = ("train", "val", "test")


def check_ratios(ratios: Sequence[float], key: str = "data.split_ratios", need_test: bool = True) -> tuple[float, ...]:
    """Three non-negative fractions summing to 1, train > 0 (and test > 0 unless ``need_test`` is False)."""
    r = tuple(float(x) for x in ratios)
    if len(r) != 3 or any(x < 0 for x in r) or abs(sum(r) - 1.0) > 1e-6:
        raise SSLBenchError(f"recipe key {key} must be three fractions [train, val, test] ≥ 0 summing to 1, got "
                            f"{list(ratios)}")
    if r[0] <= 0 or (need_test and r[2] <= 0):
        raise SSLBenchError(f"recipe key {key} must give train{' and test' if need_test else ''} a share > 0, got "
                            f"{list(ratios)}")
    return r


def group_split(groups: Sequence, ratios: Sequence[float], seed: int = 0, key: str = "data.split_ratios") -> np.ndarray:
    """Split names (``train``/``val``/``test``) per sample such that no group spans two splits."""
    r = check_ratios(ratios, key, need_test=False)
    g = np.asarray(groups)
    uniq, inverse = np.unique(g, return_inverse=True)
    n = len(uniq)
    order = np.random.RandomState(seed).permutation(n)
    n_train = round(r[0] * n)
    n_val = round(r[1] * n) if r[2] > 0 else n - n_train
    n_train, n_val = min(n_train, n), min(n_val, n - min(n_train, n))
    which = np.empty(n, dtype="<U5")
    which[order[:n_train]] = "train"
    which[order[n_train : n_train + n_val]] = "val"
    which[order[n_train + n_val :]] = "test"
    return which[inverse.reshape(-1)]


def stratified_group_split(labels: Sequence, groups: Sequence, ratios: Sequence[float], seed: int = 0,
                           key: str = "data.split_ratios") -> np.ndarray:
    """A seeded split that keeps each class's share in every split (stratified) and no group in two
    splits: each group takes the label of its first image, and the groups of each class are cut
    by :func:`group_split` with the same ratios (each image is its own group when there are none)."""
    y = np.asarray(labels).reshape(len(labels), -1)[:, 0]
    g = np.asarray(groups)
    uniq, first = np.unique(g, return_index=True)
    group_label = dict(zip(uniq.tolist(), y[first].tolist()))
    out = np.empty(len(g), dtype="<U5")
    for c in sorted(set(group_label.values())):
        rows = np.nonzero(np.isin(g, [k for k, v in group_label.items() if v == c]))[0]
        out[rows] = group_split(g[rows], ratios, seed + int(c) if isinstance(c, (int, np.integer)) else seed, key)
    return out


def carve_val(split: np.ndarray, groups: Sequence, fraction: float, seed: int = 0,
              key: str = "data.val_fraction") -> np.ndarray:
    """Move a group-disjoint ``fraction`` of the ``train`` rows to ``val`` (an official train set
    with no validation split, e.g. ChestX-ray14's ``train_val_list.txt``)."""
    if not 0 <= fraction < 1:
        raise SSLBenchError(f"recipe key {key} must be in [0, 1), got {fraction}")
    out = np.asarray(split).astype("<U5").copy()
    if fraction == 0:
        return out
    rows = np.nonzero(out == "train")[0]
    inner = group_split(np.asarray(groups)[rows], (1 - fraction, fraction, 0.0), seed, key)
    out[rows] = inner
    return out


def assert_group_disjoint(split: np.ndarray, groups: Sequence) -> None:
    """Raise if a group appears in two splits (an official split file that mixes patients, say)."""
    g = np.asarray(groups)
    seen: dict = {}
    for s in SPLITS:
        for grp in np.unique(g[split == s]):
            if grp in seen and seen[grp] != s:
                raise SSLBenchError(f"group {grp!r} is in both the {seen[grp]} and the {s} split")
            seen[grp] = s
