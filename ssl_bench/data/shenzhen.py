"""Shenzhen chest X-ray set (Jaeger et al., "Two public chest X-ray datasets for computer-aided
screening of pulmonary diseases", Quant. Imaging Med. Surg. 4(6), 2014): 662 frontal X-rays, 326
normal and 336 with manifestations of tuberculosis.

``data.root`` (or ``$SSL_BENCH_SHENZHEN_ROOT``) is a folder or a .zip holding the release's PNGs
``CHNCXR_0001_0.png`` … (usually in ``CXR_png/``); the digit before ``.png`` is the label
(0 normal, 1 tuberculosis).  One image per patient, so each image is its own group and
train / val / test are a seeded split with the recipe's ratios.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import torch

from ssl_bench.data.base import DATASETS, DataSplits
from ssl_bench.data.images import ImageFiles, ImageStore, assemble, group_codes, resolve_root
from ssl_bench.data.splits import check_ratios, group_split
from ssl_bench.errors import SSLBenchError

__all__ = ["NAME", "ShenzhenDataset"]

ROOT_ENV = "SSL_BENCH_SHENZHEN_ROOT"
NAME = re.compile(r"^CHNCXR_(\d{4})_([01])\.png$", re.IGNORECASE)
HOWTO = (
    "download the Shenzhen set (ChinaSet_AllFiles.zip) from "
    "https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html#tuberculosis-image-data-sets and point data.root at the "
    "zip or at the folder with CXR_png/CHNCXR_NNNN_L.png"
)


@DATASETS.register("shenzhen")
@dataclass
class ShenzhenDataset(ImageFiles):
    """Shenzhen tuberculosis X-rays: label from the file name (``CHNCXR_0001_0.png``), seeded split."""

    size: int = 128
    split_ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)
    split_seed: int = 0

    def load(self) -> DataSplits:
        root, split_ratios, split_seed = self.root, self.split_ratios, self.split_seed
        check_ratios(split_ratios)  # before any file is read
        path = resolve_root(root, ROOT_ENV, "Shenzhen data", HOWTO)
        store = ImageStore(path)
        members = [m for m in store.images()
                   if m.lower().endswith(".png") and PurePosixPath(m).name.upper().startswith("CHNCXR_")]
        bad = [m for m in members if not NAME.match(PurePosixPath(m).name)]
        if bad:
            raise SSLBenchError(f"Shenzhen: file name {store.where(bad[0])} is not CHNCXR_NNNN_L.png with L = 0 or 1 "
                                "(the label)")
        if not members:
            raise SSLBenchError(f"Shenzhen: no CHNCXR_NNNN_L.png images in {path}; {HOWTO}")
        members = sorted(members, key=lambda m: PurePosixPath(m).name)
        labels = torch.tensor([int(NAME.match(PurePosixPath(m).name).group(2)) for m in members], dtype=torch.long)
        ids = [PurePosixPath(m).stem for m in members]
        split = group_split(np.asarray(ids), check_ratios(split_ratios), split_seed)
        return assemble(
            "Shenzhen", store, members, labels, split, "binary-class", ["normal", "tuberculosis"], group_codes(ids),
            self, channels=1, tag="shenzhen",
        )
