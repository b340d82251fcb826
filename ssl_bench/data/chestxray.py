"""NIH ChestX-ray14 (Wang et al., "ChestX-ray8: Hospital-scale Chest X-ray Database …", CVPR 2017;
arXiv 1705.02315): 112,120 frontal chest X-rays of 30,805 patients, 14 findings, multi-label.

``data.root`` (or ``$SSL_BENCH_CHESTXRAY14_ROOT``) is a folder or a .zip with the files of the NIH
release (https://nihcc.app.box.com/v/ChestXray-NIHCC), found by name anywhere inside it:

* the PNGs ``00000001_000.png`` … (``images/`` or the release's ``images_001/images/`` …);
* ``Data_Entry_2017.csv`` (or ``Data_Entry_2017_v2020.csv``): ``Image Index``, ``Finding Labels``
  (findings joined by ``|``, or ``No Finding`` — an all-zero label row, which is valid here),
  ``Patient ID``, …;
* ``train_val_list.txt`` and ``test_list.txt``: the official patient-disjoint split.

``Patient ID`` is the group id (MICLe partners: another X-ray of the same patient).  The validation
split is carved patient-disjointly from ``train_val`` (``val_fraction``).  Images listed in the CSV
but in neither split file are ignored (the NIH lists cover every image of the release).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ssl_bench.data.base import DATASETS, DataSplits
from ssl_bench.data.images import ImageFiles, ImageStore, assemble, group_codes, resolve_root
from ssl_bench.data.splits import carve_val
from ssl_bench.errors import SSLBenchError

__all__ = ["FINDINGS", "ChestXray14Dataset"]

ROOT_ENV = "SSL_BENCH_CHESTXRAY14_ROOT"
FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
ENTRY_FILES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
HOWTO = (
    "download ChestX-ray14 from https://nihcc.app.box.com/v/ChestXray-NIHCC and put images/*.png (or the "
    "images_0NN/images/ folders), Data_Entry_2017.csv, train_val_list.txt and test_list.txt in one folder (or a .zip)"
)


def _read_list(store: ImageStore, name: str, root) -> list[str]:
    member = store.find(name)
    if member is None:
        raise SSLBenchError(f"ChestX-ray14: {name} not found in {root} (the official split file); {HOWTO}")
    return [ln.strip() for ln in store.read_text(member).splitlines() if ln.strip()]


@DATASETS.register("chestxray14")
@dataclass
class ChestXray14Dataset(ImageFiles):
    """NIH ChestX-ray14: 14 findings (multi-label), official split, patient-disjoint val, grey 1-channel."""

    size: int = 128
    val_fraction: float = 0.1
    split_seed: int = 0

    def load(self) -> DataSplits:
        root, val_fraction, split_seed = self.root, self.val_fraction, self.split_seed
        path = resolve_root(root, ROOT_ENV, "ChestX-ray14 data", HOWTO)
        store = ImageStore(path)
        entry = store.find(*ENTRY_FILES)
        if entry is None:
            raise SSLBenchError(f"ChestX-ray14: {ENTRY_FILES[0]} not found in {path}; {HOWTO}")
        df = store.read_csv(entry, dtype={"Image Index": str, "Finding Labels": str})
        where = store.where(entry)
        missing = [c for c in ("Image Index", "Finding Labels", "Patient ID") if c not in df.columns]
        if missing:
            raise SSLBenchError(f"{where} lacks column(s) {', '.join(missing)}")
        train_val, test = (
            set(_read_list(store, "train_val_list.txt", path)), set(_read_list(store, "test_list.txt", path))
        )
        both = train_val & test
        if both:
            raise SSLBenchError(f"ChestX-ray14: {len(both)} image(s) are in both train_val_list.txt and test_list.txt, "
                                f"e.g. {min(both)}")
        index = {f: j for j, f in enumerate(FINDINGS)}
        ids, rows, split = [], [], []
        for i, (img, findings) in enumerate(zip(df["Image Index"], df["Finding Labels"].fillna(""))):
            s = "train" if img in train_val else "test" if img in test else None
            if s is None:
                continue
            y = np.zeros(len(FINDINGS), np.float32)
            for f in str(findings).split("|"):
                f = f.strip()
                if f in ("No Finding", ""):
                    continue
                if f not in index:
                    raise SSLBenchError(f"{where} line {i + 2}: unknown finding '{f}' (expected one of "
                                        f"{', '.join(FINDINGS)} or No Finding)")
                y[index[f]] = 1.0
            ids.append(img)
            rows.append(y)
            split.append(s)
        listed = train_val | test
        unknown = listed - set(df["Image Index"])
        if unknown:
            raise SSLBenchError(f"ChestX-ray14: {len(unknown)} image(s) of the split lists are not in {where}, e.g. "
                                f"{min(unknown)}")
        members = store.locate(ids, where)
        patients = df.set_index("Image Index").loc[ids, "Patient ID"].tolist()
        groups = group_codes(patients)
        split_arr = carve_val(np.asarray(split), groups.numpy(), val_fraction, split_seed)
        labels = torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, len(FINDINGS))
        return assemble(
            "ChestX-ray14", store, members, labels, split_arr, "multi-label", list(FINDINGS), groups, self, channels=1,
            tag="chestxray14",
        )
