"""A generic NumPy ``.npz`` array file with images, labels, optional group ids and split names.

Made for arrays such as the 28 px lesion-grouped HAM10000 file (keys ``images`` [N,H,W,3] uint8,
``labels`` [N,1], ``group`` [N] lesion index, ``split`` ∈ train/val/test) but any layout works by
naming its keys.  Images may be [N,H,W], [N,H,W,C] or [N,C,H,W].
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch

from ssl_bench.data.base import DATASETS, DataSplits, ImageSet
from ssl_bench.errors import SSLBenchError


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
    except Exception as e:
        raise SSLBenchError(f"npz file {p} could not be read: {e}") from e
    carve = split == "split" and "split" not in z.files  # no split array: carve one (the default name only)
    for key, what in ((images, "images"), (labels, "labels")) + (() if carve else ((split, "split"),)):
        if key not in z.files:
            raise SSLBenchError(f"npz file {p} has no array '{key}' (recipe key data.{what}; arrays: {', '.join(z.files)})")
    imgs = z[images]
    if imgs.dtype != np.uint8:
        raise SSLBenchError(f"npz file {p}: '{images}' must be uint8, got {imgs.dtype}")
    if imgs.ndim == 3:
        imgs = imgs[:, None]
    elif imgs.ndim == 4 and imgs.shape[-1] in (1, 3) and imgs.shape[1] not in (1, 3):
        imgs = imgs.transpose(0, 3, 1, 2)
    lab = z[labels]
    if task == "multi-label":
        lab_t = torch.from_numpy(lab.astype(np.float32))
    else:
        lab_t = torch.from_numpy(lab.reshape(len(lab), -1)[:, 0].astype(np.int64))
    grp = None
    if group == "group" and group not in z.files:  # the default name, absent: no groups
        group = None
    if group:
        if group not in z.files:
            raise SSLBenchError(f"npz file {p} has no array '{group}' (recipe key data.group; set it to null for none)")
        g = z[group]
        if g.dtype.kind in "US":  # string ids → integer codes
            _, g = np.unique(g, return_inverse=True)
        grp = torch.from_numpy(g.astype(np.int64).reshape(-1))
    if carve:
        from ssl_bench.data.splits import group_split, stratified_group_split

        if len(imgs) != len(lab) or (grp is not None and len(grp) != len(imgs)):
            raise SSLBenchError(f"npz file {p}: arrays differ in length (images {len(imgs)}, labels {len(lab)}"
                                + (f", group {len(grp)})" if grp is not None else ")"))
        ids = grp.numpy() if grp is not None else np.arange(len(imgs))
        if task == "multi-label":
            split_vals = group_split(ids, split_ratios, split_seed)
        else:
            split_vals = stratified_group_split(lab_t.numpy(), ids, split_ratios, split_seed)
    else:
        split_vals = z[split]
    if not (len(imgs) == len(lab) == len(split_vals) and (grp is None or len(grp) == len(imgs))):
        raise SSLBenchError(
            f"npz file {p}: arrays differ in length (images {len(imgs)}, labels {len(lab)}, split {len(split_vals)}"
            + (f", group {len(grp)})" if grp is not None else ")")
        )
    splits_arr = np.asarray(split_vals).astype(str)
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
        raise SSLBenchError(f"recipe key data.class_names has {len(names)} names for {n_classes} classes")
    return DataSplits(name=display_name or p.stem, task=task, class_names=names, **out)
