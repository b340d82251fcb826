"""Your own images: a CSV manifest or a torchvision-style ImageFolder, in a folder or a .zip.

What a hospital user brings.  ``data.root`` is the folder (or .zip) the image paths are relative to.

* **Manifest** (``manifest: labels.csv``, a path inside ``root`` or anywhere): columns
  ``path,label`` and optionally ``group`` (patient / lesion / study id — MICLe partners and
  group-disjoint splits) and ``split`` (``train``/``val``/``test``).  A label may be ``a|b`` for
  several findings: any ``|`` makes the task multi-label (an empty label is then "no finding").
  Class names are the sorted label strings unless ``class_names`` lists them (that order, and any
  other label is an error).
* **ImageFolder** (no manifest): ``root/<class>/<image>`` as torchvision's ``ImageFolder`` (classes
  = sorted folder names), or ``root/{train,val,test}/<class>/<image>`` for fixed splits.

Without a ``split`` column or split folders, train / val / test are a seeded group-disjoint split
with ``split_ratios``, stratified by label (each class's share in every split; multi-label: by group only).  Images are
decoded once into the cache (see :mod:`ssl_bench.data.images`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, Optional

import numpy as np
import torch

from ssl_bench.data.base import DATASETS, DataSplits
from ssl_bench.data.images import ImageFiles, ImageStore, assemble, group_codes, resolve_root
from ssl_bench.data.splits import SPLITS, check_ratios, group_split, stratified_group_split
from ssl_bench.errors import SSLBenchError

__all__ = ["HOWTO", "FolderDataset"]

HOWTO = ("point data.root at the folder (or .zip) of your images; see `ssl-bench list dataset` and the folder "
         "adapter's docstring")


def _manifest_frame(store: ImageStore, manifest: str, root: Path):
    import pandas as pd

    p = Path(manifest).expanduser()
    if p.is_file():
        try:
            return pd.read_csv(p, dtype=str, keep_default_na=False), str(p)
        except Exception as e:  # pandas raises several parser errors
            raise SSLBenchError(f"manifest {p} could not be read as CSV: {type(e).__name__}: {e}") from e
    member = manifest if manifest in store.files else store.find(manifest)
    if member is None:
        raise SSLBenchError(f"manifest {manifest} not found (recipe key data.manifest; neither a file nor inside "
                            f"{root})")
    return store.read_csv(member, dtype=str, keep_default_na=False), store.where(member)


def _class_index(values: list[str], class_names: Optional[list[str]], where: str, multilabel: bool) -> list[str]:
    seen = sorted({v for x in values for v in (x.split("|") if multilabel else [x]) if v != ""})
    if class_names is None:
        return seen
    unknown = [v for v in seen if v not in class_names]
    if unknown:
        raise SSLBenchError(f"{where}: unknown class '{unknown[0]}' (data.class_names: {', '.join(class_names)})")
    return list(class_names)


@DATASETS.register("folder")
@dataclass
class FolderDataset(ImageFiles):
    """Your own images: a CSV manifest (path,label[,group][,split]; labels a|b = multi-label) or an ImageFolder."""

    manifest: Optional[str] = None
    class_names: Optional[list[str]] = None
    task: Literal["auto", "binary-class", "multi-class", "multi-label"] = "auto"
    channels: int = 3
    size: int = 128
    split_ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)
    split_seed: int = 0
    display_name: Optional[str] = None

    def load(self) -> DataSplits:
        root = self.root
        manifest = self.manifest
        class_names = self.class_names
        task = self.task
        channels = self.channels
        split_ratios = self.split_ratios
        split_seed = self.split_seed
        display_name = self.display_name
        path = resolve_root(root, "SSL_BENCH_FOLDER_ROOT", "image folder", HOWTO)
        store = ImageStore(path)
        groups_raw: Optional[list] = None
        split: Optional[np.ndarray] = None
        if manifest:
            df, where = _manifest_frame(store, manifest, path)
            missing = [c for c in ("path", "label") if c not in df.columns]
            if missing:
                raise SSLBenchError(f"{where} lacks column(s) {', '.join(missing)} (expected "
                                    "path,label[,group][,split])")
            paths = df["path"].str.strip().tolist()
            values = df["label"].str.strip().tolist()
            if "group" in df.columns:
                groups_raw = [g if g.strip() else None for g in df["group"]]
            if "split" in df.columns:
                names = df["split"].str.strip().str.lower().tolist()
                bad = [i for i, s in enumerate(names) if s not in SPLITS]
                if bad:
                    raise SSLBenchError(f"{where} line {bad[0] + 2}: split must be train, val or test, got "
                                        f"'{df['split'][bad[0]]}'")
                split = np.asarray(names, dtype="<U5")
            empty = [i for i, p in enumerate(paths) if not p]
            if empty:
                raise SSLBenchError(f"{where} line {empty[0] + 2}: empty path")
            members = store.locate_paths(paths, where)
        else:
            where = str(path)
            files = store.images()
            if not files:
                raise SSLBenchError(f"no images in {path} (expected ImageFolder root/<class>/<image> or a "
                                    "data.manifest CSV)")
            parts = [PurePosixPath(f).parts for f in files]
            if all(len(p) >= 3 and p[-3].lower() in SPLITS for p in parts):  # root/{train,val,test}/<class>/<image>
                split = np.asarray([p[-3].lower() for p in parts]).astype("<U5")
            elif any(len(p) < 2 for p in parts):
                loose = next(f for f, p in zip(files, parts) if len(p) < 2)
                raise SSLBenchError(f"{store.where(loose)} is not inside a class folder (ImageFolder layout "
                                    "root/<class>/<image>)")
            members = files
            values = [p[-2] for p in parts]
        if task == "auto":
            multilabel = any("|" in v for v in values)
        else:
            multilabel = task == "multi-label"
        if not multilabel and any(v == "" for v in values):
            i = values.index("")
            raise SSLBenchError(f"{where} line {i + 2}: empty label")
        names = _class_index(values, class_names, where, multilabel)
        index = {c: j for j, c in enumerate(names)}
        if multilabel:
            y = np.zeros((len(values), len(names)), np.float32)
            for i, v in enumerate(values):
                for c in v.split("|"):
                    if c:
                        y[i, index[c]] = 1.0
            labels, kind = torch.from_numpy(y), "multi-label"
        else:
            labels = torch.tensor([index[v] for v in values], dtype=torch.long)
            kind = task if task != "auto" else ("binary-class" if len(names) == 2 else "multi-class")
        groups = group_codes(groups_raw if groups_raw is not None else [None] * len(members))
        if split is None:  # carved here: stratified by label as the npz adapter's (a rare class in every split)
            ratios = check_ratios(split_ratios)
            split = (group_split(groups.numpy(), ratios, split_seed) if multilabel
                     else stratified_group_split(labels.numpy(), groups.numpy(), ratios, split_seed))
        return assemble(
            display_name or path.stem, store, members, labels, split, kind, names,
            groups if groups_raw is not None else None, self, channels=channels,
            tag="folder-" + "".join(ch if ch.isalnum() else "_" for ch in path.stem)[:40],
        )
