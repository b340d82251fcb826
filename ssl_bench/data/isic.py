"""ISIC dermoscopy: the ISIC 2019 training set, HAM10000 and ISIC 2016, from a folder or a .zip.

BYOL-TracIn (Zeng et al., MICCAI 2023; arXiv 2306.00112, §4.1) pre-trains and fine-tunes on the
ISIC 2019 training set (Tschandl et al. 2018, HAM10000; Codella et al. 2018; Combalia et al. 2019)
and transfers to ISIC 2016 (Gutman et al. 2016).  ``data.root`` (or ``$SSL_BENCH_ISIC_ROOT``) is a
folder or a .zip holding one of these layouts; files are found by name anywhere inside it:

* ``layout: isic2019`` — ``ISIC_2019_Training_GroundTruth.csv`` (columns
  ``image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK``, one-hot floats), the images
  ``ISIC_xxxxxxx.jpg`` (e.g. in ``ISIC_2019_Training_Input/``) and, optionally,
  ``ISIC_2019_Training_Metadata.csv`` (``image,age_approx,anatom_site_general,lesion_id,sex``)
  whose ``lesion_id`` is the group id (MICLe partners; splits never separate a lesion).
* ``layout: ham10000`` — ``HAM10000_metadata.csv`` (``lesion_id,image_id,dx,dx_type,age,sex,
  localization``) and the images ``ISIC_xxxxxxx.jpg`` (``HAM10000_images_part_{1,2}/`` or
  ``images/``); ``dx`` ∈ akiec, bcc, bkl, df, mel, nv, vasc is mapped onto the ISIC 2019 classes
  AK, BCC, BKL, DF, MEL, NV, VASC; ``lesion_id`` is the group id.
* ``layout: isic2016`` — ``ISBI2016_ISIC_Part3_Training_GroundTruth.csv`` (two columns
  ``image,label``, header optional, label benign/malignant or 0/1) with its images and, optionally,
  ``ISBI2016_ISIC_Part3_Test_GroundTruth.csv`` (the official test split; else one is carved).

``layout: auto`` picks the first of these whose label file exists.  Classes are the ISIC 2019
columns that have at least one training image (SCC and UNK are empty in HAM10000; UNK is empty in
the 2019 training set), in ISIC 2019 order.  ISIC 2019 and HAM10000 have no public labelled test
split, so train / val / test are a seeded lesion-disjoint split (``split_ratios``, ``split_seed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ssl_bench.data.base import DATASETS, DataSplits
from ssl_bench.data.images import ImageFiles, ImageStore, assemble, group_codes, resolve_root
from ssl_bench.data.splits import carve_val, check_ratios, group_split
from ssl_bench.errors import SSLBenchError

__all__ = ["ISICDataset"]

ROOT_ENV = "SSL_BENCH_ISIC_ROOT"
ISIC2019_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
HAM_TO_ISIC2019 = {"akiec": "AK", "bcc": "BCC", "bkl": "BKL", "df": "DF", "mel": "MEL", "nv": "NV", "vasc": "VASC"}
ISIC2019_GT = "ISIC_2019_Training_GroundTruth.csv"
ISIC2019_META = "ISIC_2019_Training_Metadata.csv"
HAM_META = "HAM10000_metadata.csv"
ISIC2016_TRAIN = "ISBI2016_ISIC_Part3_Training_GroundTruth.csv"
ISIC2016_TEST = "ISBI2016_ISIC_Part3_Test_GroundTruth.csv"
HOWTO = (
    "download the ISIC 2019 training set from https://challenge.isic-archive.com/data/#2019 and put "
    f"ISIC_2019_Training_Input/*.jpg, {ISIC2019_GT} and {ISIC2019_META} in one folder (or a .zip), or "
    f"HAM10000 from https://doi.org/10.7910/DVN/DBW86T ({HAM_META} + the ISIC_*.jpg images), or ISIC 2016 "
    f"from https://challenge.isic-archive.com/data/#2016 ({ISIC2016_TRAIN} + ISBI2016_ISIC_Part3_Training_Data/)"
)


def _line(i: int) -> int:
    return i + 2  # DataFrame row → 1-based CSV line, after the header


def _read_isic2019(store: ImageStore, gt: str):
    df = store.read_csv(gt)
    where = store.where(gt)
    missing = [c for c in ("image", *ISIC2019_CLASSES[:-1]) if c not in df.columns]
    if missing:
        raise SSLBenchError(f"{where} lacks column(s) {', '.join(missing)} (expected "
                            f"image,{','.join(ISIC2019_CLASSES)})")
    cols = [c for c in ISIC2019_CLASSES if c in df.columns]
    try:
        onehot = df[cols].to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as e:
        raise SSLBenchError(f"{where}: class columns must be numbers (one-hot 0.0/1.0): {e}") from e
    sums = onehot.sum(1)
    bad = np.nonzero(sums == 0)[0]
    if len(bad):
        i = bad[0]
        raise SSLBenchError(f"{where} line {_line(i)}: label row of {df['image'].iloc[i]} is all zeros ({len(bad)} "
                            "such row(s))")
    bad = np.nonzero((sums != 1) | ~np.isin(onehot, (0.0, 1.0)).all(1))[0]
    if len(bad):
        i = bad[0]
        raise SSLBenchError(f"{where} line {_line(i)}: label row of {df['image'].iloc[i]} is not one-hot ({len(bad)} "
                            "such row(s))")
    ids = df["image"].astype(str).tolist()
    label_names = [cols[j] for j in onehot.argmax(1)]
    groups = [None] * len(ids)
    meta = store.find(ISIC2019_META)
    if meta is not None:
        m = store.read_csv(meta)
        if "image" not in m.columns or "lesion_id" not in m.columns:
            raise SSLBenchError(f"{store.where(meta)} lacks column image or lesion_id")
        lesion = dict(zip(m["image"].astype(str), m["lesion_id"]))
        groups = [lesion.get(i) for i in ids]
    return ids, label_names, groups, None, gt


def _read_ham10000(store: ImageStore, meta: str):
    df = store.read_csv(meta)
    where = store.where(meta)
    missing = [c for c in ("lesion_id", "image_id", "dx") if c not in df.columns]
    if missing:
        raise SSLBenchError(f"{where} lacks column(s) {', '.join(missing)} (expected lesion_id,image_id,dx,…)")
    label_names = []
    for i, dx in enumerate(df["dx"].astype(str)):
        if dx not in HAM_TO_ISIC2019:
            raise SSLBenchError(f"{where} line {_line(i)}: unknown class '{dx}' (dx must be one of "
                                f"{', '.join(HAM_TO_ISIC2019)})")
        label_names.append(HAM_TO_ISIC2019[dx])
    return df["image_id"].astype(str).tolist(), label_names, df["lesion_id"].tolist(), None, meta


def _read_two_column(store: ImageStore, member: str) -> tuple[list[str], list[int]]:
    """An ISIC 2016 label file: ``image,label`` with benign/malignant or 0/1 (header optional)."""
    df = store.read_csv(member, header=None, dtype=str, skip_blank_lines=True)
    where = store.where(member)
    if df.shape[1] < 2:
        raise SSLBenchError(f"{where} must have two columns image,label")
    first = str(df.iloc[0, 1]).strip().lower()
    if first not in ("benign", "malignant") and not _is_number(first):
        df = df.iloc[1:]  # a header row
    ids, labels = [], []
    for i, (img, lab) in enumerate(zip(df.iloc[:, 0], df.iloc[:, 1])):
        s = str(lab).strip().lower()
        if s in ("benign", "malignant"):
            labels.append(int(s == "malignant"))
        elif _is_number(s) and float(s) in (0.0, 1.0):
            labels.append(int(float(s)))
        else:
            raise SSLBenchError(f"{where} line {int(df.index[i]) + 1}: unknown class '{lab}' (expected "
                                "benign/malignant or 0/1)")
        ids.append(str(img).strip())
    return ids, labels


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


@DATASETS.register("isic")
@dataclass
class ISICDataset(ImageFiles):
    """ISIC 2019 / HAM10000 / ISIC 2016 dermoscopy (folder or .zip), lesion-disjoint splits, cached decode."""

    layout: Literal["auto", "isic2019", "ham10000", "isic2016"] = "auto"
    size: int = 140
    split_ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)
    split_seed: int = 0

    def load(self) -> DataSplits:
        root, layout, split_ratios, split_seed = self.root, self.layout, self.split_ratios, self.split_seed
        check_ratios(split_ratios)  # before any file is read
        path = resolve_root(root, ROOT_ENV, "ISIC data", HOWTO)
        store = ImageStore(path)
        found = {
            "isic2019": store.find(ISIC2019_GT),
            "ham10000": store.find(HAM_META),
            "isic2016": store.find(ISIC2016_TRAIN),
        }
        if layout == "auto":
            layout = next((k for k, v in found.items() if v is not None), None)
            if layout is None:
                raise SSLBenchError(f"no ISIC label file in {path}: expected {ISIC2019_GT}, {HAM_META} or "
                                    f"{ISIC2016_TRAIN}; {HOWTO}")
        elif found[layout] is None:
            want = {"isic2019": ISIC2019_GT, "ham10000": HAM_META, "isic2016": ISIC2016_TRAIN}[layout]
            raise SSLBenchError(f"data.layout {layout}: {want} not found in {path}; {HOWTO}")
        ratios = check_ratios(split_ratios)

        if layout == "isic2016":
            ids, y = _read_two_column(store, found["isic2016"])
            members = store.locate(ids, store.where(found["isic2016"]))
            split = group_split(ids, ratios, split_seed)
            test_csv = store.find(ISIC2016_TEST)
            if test_csv is not None:  # official test split; val carved from the official training set
                t_ids, t_y = _read_two_column(store, test_csv)
                t_members = store.locate(t_ids, store.where(test_csv))
                val_frac = ratios[1] / (ratios[0] + ratios[1])
                split = np.concatenate([carve_val(np.full(len(ids), "train"), ids, val_frac, split_seed),
                                        np.full(len(t_ids), "test")])
                ids, y, members = ids + t_ids, y + t_y, members + t_members
            return assemble(
                "ISIC2016", store, members, torch.tensor(y, dtype=torch.long), split, "binary-class",
                ["benign", "malignant"], group_codes(ids), self, channels=3, tag="isic2016",
            )

        ids, label_names, groups, _, listed = (_read_isic2019 if layout == "isic2019" else _read_ham10000)(
            store, found[layout]
        )
        members = store.locate(ids, store.where(listed))
        classes = [c for c in ISIC2019_CLASSES if c in set(label_names)]
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[c] for c in label_names], dtype=torch.long)
        grp = group_codes(groups)
        split = group_split(grp.numpy(), ratios, split_seed)
        name = {"isic2019": "ISIC2019", "ham10000": "HAM10000"}[layout]
        return assemble(
            name, store, members, labels, split, "multi-class", classes, grp, self, channels=3, tag=name.lower(),
        )
