"""A generic NumPy ``.npz`` array file with images, labels, optional group ids and split names.

Made for arrays such as the 28 px lesion-grouped HAM10000 file (keys ``images`` [N,H,W,3] uint8,
``labels`` [N,1], ``group`` [N] lesion index, ``split`` ∈ train/val/test) but any layout works by
naming its keys.  Images may be [N,H,W], [N,H,W,C] or [N,C,H,W] with C = 1 or 3, uint8.

Every array is checked before it is used, each problem one line naming the file and the recipe key:
labels are class indices 0 … C−1 (integers, or integral floats; C ≤ :data:`MAX_CLASSES`), or for
``task: multi-label`` a [N, L] array of 0/1; group ids are numbers or strings, a NaN (or empty) id
meaning "no group" (the image is its own group, as in the CSV adapters); split names are train, val
or test.  Object, string-where-numbers-are-expected, empty and wrongly shaped arrays are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch

from ssl_bench.data.base import DATASETS, DataSplits, ImageSet
from ssl_bench.errors import SSLBenchError

__all__ = ["npz_dataset"]

MAX_CLASSES = 100_000  # a label at or above this is a corrupt file, not a class (1e9 would make 1e9 class names)


@DATASETS.register("npz")
def npz_dataset(
    path: str,
    images: str = "images",
    labels: str = "labels",
    group: Optional[str] = "group",
    split: str = "split",
    class_names: Optional[list[str]] = None,
    display_name: Optional[str] = None,
    task: Literal["binary-class", "multi-class", "multi-label", "ordinal-regression"] = "multi-class",
    split_ratios: tuple[float, float, float] = (0.7, 0.1, 0.2),
    split_seed: int = 0,
) -> DataSplits:
    """Images, labels, groups and splits from one .npz file (e.g. the 28 px HAM10000 lesion array).

    ``split``: the array of split names (train / val / test); a file without one (only ``images``
    and ``labels``) is split here, seeded (``split_seed``) and stratified by label, by
    ``split_ratios``, keeping each ``group`` (patient, lesion) in one split when the file has one."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise SSLBenchError(f"npz file not found: {p} (recipe key data.path)")
    try:
        z = np.load(p, allow_pickle=False)
        if not hasattr(z, "files"):
            raise ValueError("a single .npy array, not an .npz archive of named arrays")
    except Exception as e:
        raise SSLBenchError(f"npz file {p} could not be read: {e}") from e
    carve = split == "split" and "split" not in z.files  # no split array: carve one (the default name only)
    for key, what in ((images, "images"), (labels, "labels")) + (() if carve else ((split, "split"),)):
        if key not in z.files:
            raise SSLBenchError(f"npz file {p} has no array '{key}' (recipe key data.{what}; arrays: "
                                f"{', '.join(z.files)})")
    imgs = _images(_array(z, images, "images", p), images, p)
    n = len(imgs)
    lab = _array(z, labels, "labels", p)
    if group == "group" and group not in z.files:  # the default name, absent: no groups
        group = None
    if group and group not in z.files:
        raise SSLBenchError(f"npz file {p} has no array '{group}' (recipe key data.group; set it to null for none)")
    grp = _groups(_array(z, group, "group", p), group, p) if group else None
    split_vals = None if carve else _array(z, split, "split", p).reshape(-1)
    lengths = {"images": n, "labels": len(lab)} | ({"group": len(grp)} if grp is not None else {})
    lengths |= {"split": len(split_vals)} if split_vals is not None else {}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k} {v}" for k, v in lengths.items())
        raise SSLBenchError(f"npz file {p}: arrays differ in length ({shown})")
    lab_t = _labels(lab, labels, task, p)
    if carve:
        from ssl_bench.data.splits import group_split, stratified_group_split

        ids = grp.numpy() if grp is not None else np.arange(n)
        if task == "multi-label":
            split_vals = group_split(ids, split_ratios, split_seed)
        else:
            split_vals = stratified_group_split(lab_t.numpy(), ids, split_ratios, split_seed)
    splits_arr = np.asarray(split_vals).astype(str)
    unknown = sorted(set(np.unique(splits_arr).tolist()) - {"train", "val", "test"})
    if unknown:
        raise SSLBenchError(f"npz file {p}: '{split}' (recipe key data.split) holds '{unknown[0]}' "
                            f"({int(np.isin(splits_arr, unknown).sum())} rows); split names are train, val and test")
    out = {}
    images_t = torch.from_numpy(np.ascontiguousarray(imgs))
    for s in ("train", "val", "test"):
        idx = torch.from_numpy(np.nonzero(splits_arr == s)[0])
        if len(idx) == 0:
            if s == "val":
                continue
            raise SSLBenchError(f"npz file {p}: no rows with {split} == '{s}'")
        out[s] = ImageSet(images_t[idx], lab_t[idx], None if grp is None else grp[idx])
    n_classes = int(lab_t.max()) + 1 if task != "multi-label" else lab_t.shape[1]
    names = list(class_names) if class_names else [str(i) for i in range(n_classes)]
    if len(names) != n_classes:
        raise SSLBenchError(f"recipe key data.class_names has {len(names)} names for {n_classes} classes "
                            f"(npz file {p})")
    return DataSplits(name=display_name or p.stem, task=task, class_names=names, source=str(p), **out)


def _array(z, key: str, what: str, p: Path) -> np.ndarray:
    """One array of the archive; an unreadable one (an object array, which would need pickle; a
    damaged member) is an error naming it."""
    try:
        a = z[key]
    except Exception as e:  # numpy raises ValueError, zipfile BadZipFile / zlib.error, EOFError, …
        first = str(e).splitlines()[0] if str(e) else ""
        raise SSLBenchError(f"npz file {p}: array '{key}' (recipe key data.{what}) could not be read: "
                            f"{type(e).__name__}: {first}") from e
    if a.ndim == 0:
        raise SSLBenchError(f"npz file {p}: '{key}' (recipe key data.{what}) is a single value, not an array with "
                            "a row per image")
    return a


def _images(imgs: np.ndarray, key: str, p: Path) -> np.ndarray:
    """uint8 [N, C, H, W] with C = 1 or 3, from [N,H,W], [N,H,W,C] or [N,C,H,W]."""
    if imgs.dtype != np.uint8:
        raise SSLBenchError(f"npz file {p}: '{key}' must be uint8, got {imgs.dtype}")
    if imgs.ndim == 3:
        imgs = imgs[:, None]
    elif imgs.ndim == 4 and imgs.shape[-1] in (1, 3) and imgs.shape[1] not in (1, 3):
        imgs = imgs.transpose(0, 3, 1, 2)
    if imgs.ndim != 4 or imgs.shape[1] not in (1, 3) or 0 in imgs.shape[2:]:
        raise SSLBenchError(f"npz file {p}: '{key}' (recipe key data.images) must be [N,H,W], [N,H,W,C] or [N,C,H,W] "
                            f"with C = 1 (grey) or 3 (RGB), got shape {tuple(imgs.shape)}")
    if len(imgs) == 0:
        raise SSLBenchError(f"npz file {p}: '{key}' (recipe key data.images) holds no images")
    return imgs


def _labels(lab: np.ndarray, key: str, task: str, p: Path) -> torch.Tensor:
    """Class indices (long [N]) or, for ``task: multi-label``, 0/1 label vectors (float [N, L])."""
    where = f"npz file {p}: '{key}' (recipe key data.labels)"
    if lab.dtype.kind not in "biuf":
        raise SSLBenchError(f"{where} must hold numbers (class indices; names go in data.class_names), got {lab.dtype}")
    if task == "multi-label":
        if lab.ndim != 2 or lab.shape[1] == 0:
            raise SSLBenchError(f"{where} must be [N, L] 0/1 label vectors for data.task multi-label, "
                                f"got shape {lab.shape}")
        bad = ~np.isin(lab, (0, 1))
        if bad.any():
            raise SSLBenchError(f"{where} must be 0 or 1 for data.task multi-label, got {lab[bad].flat[0].item()!r} "
                                f"({int(bad.sum())} of {lab.size} values)")
        return torch.from_numpy(lab.astype(np.float32))
    if lab.ndim > 2 or (lab.ndim == 2 and lab.shape[1] != 1):
        raise SSLBenchError(f"{where} must be one class index per image ([N] or [N, 1]) for data.task {task}, "
                            f"got shape {lab.shape} (label vectors: set data.task: multi-label)")
    flat = lab.reshape(-1)
    bad = (flat < 0) | (flat >= MAX_CLASSES)
    if flat.dtype.kind == "f":  # NaN, inf and 0.5 are no class index
        bad |= ~np.isfinite(flat) | (flat != np.round(flat))
    if bad.any():
        raise SSLBenchError(f"{where} must be class indices 0, 1, … below {MAX_CLASSES:,}, "
                            f"got {flat[bad][0].item()!r} ({int(bad.sum())} of {len(flat)} labels)")
    return torch.from_numpy(flat.astype(np.int64))


def _groups(g: np.ndarray, key: str, p: Path) -> torch.Tensor:
    """Integer codes of group ids (numbers or strings); a NaN or empty id makes the image its own group."""
    if g.dtype.kind not in "biufUS" or g.size != len(g):
        raise SSLBenchError(f"npz file {p}: '{key}' (recipe key data.group) must be one number or string per image, "
                            f"got {g.dtype} {g.shape}")
    g = g.reshape(-1)
    if g.dtype.kind in "biu":  # integer ids are kept as they are
        return torch.from_numpy(g.astype(np.int64))
    missing = ~np.isfinite(g) if g.dtype.kind == "f" else np.char.strip(g.astype(str)) == ""
    codes = np.empty(len(g), np.int64)
    if not missing.any():
        codes[:] = np.unique(g, return_inverse=True)[1].reshape(-1)
    else:
        known = np.unique(g[~missing], return_inverse=True)[1].reshape(-1)
        codes[~missing] = known
        codes[missing] = (known.max() + 1 if len(known) else 0) + np.arange(int(missing.sum()))
    return torch.from_numpy(codes)
