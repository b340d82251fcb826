"""Writers of small on-disk datasets in the official layouts, made from real images in ../shared/data.

Nothing here is committed data: every test writes its folder into ``tmp_path`` from the real
HAM10000 JPEGs (``subsets/ham10000_200x150_jpeg.zip``) or real PneumoniaMNIST chest X-rays
(``medmnist/pneumoniamnist.npz``, saved as PNG).
"""

from __future__ import annotations

import functools
import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tests.conftest import MEDMNIST_ROOT, SHARED_DATA

HAM_ZIP = SHARED_DATA / "subsets" / "ham10000_200x150_jpeg.zip"
HAM_PREFIX = "ham10000_200x150/"
DX_TO_ISIC2019 = {"akiec": "AK", "bcc": "BCC", "bkl": "BKL", "df": "DF", "mel": "MEL", "nv": "NV", "vasc": "VASC"}


@functools.lru_cache(maxsize=1)
def _ham_zip() -> zipfile.ZipFile:
    return zipfile.ZipFile(HAM_ZIP)  # opened once: its 10,016-entry directory is read once


def ham_metadata() -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(_ham_zip().read(HAM_PREFIX + "HAM10000_metadata.csv")))


def ham_rows(n: int = 48) -> pd.DataFrame:
    """``n`` real metadata rows: whole lesions (some with several images), every diagnosis present."""
    return _ham_rows(n).copy()


@functools.lru_cache(maxsize=8)
def _ham_rows(n: int) -> pd.DataFrame:
    meta = ham_metadata()
    multi = meta[meta.duplicated("lesion_id", keep=False)]
    picked = []
    for dx in sorted(meta["dx"].unique()):  # one multi-image lesion per diagnosis where there is one
        lesions = multi[multi["dx"] == dx]["lesion_id"].unique()
        if len(lesions):
            picked.append(meta[meta["lesion_id"] == lesions[0]])
        else:
            picked.append(meta[meta["dx"] == dx].head(1))
    rows = pd.concat(picked)
    rest = meta[~meta["lesion_id"].isin(rows["lesion_id"])].head(max(0, n - len(rows)))
    return pd.concat([rows, rest]).reset_index(drop=True)


def ham_jpeg(image_id: str) -> bytes:
    return _ham_zip().read(f"{HAM_PREFIX}images/{image_id}.jpg")


def copy_jpegs(ids, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in ids:
        (folder / f"{i}.jpg").write_bytes(ham_jpeg(i))


def write_ham10000(root: Path, rows: pd.DataFrame) -> Path:
    """The HAM10000 layout: ``HAM10000_metadata.csv`` + ``HAM10000_images_part_1/ISIC_*.jpg``."""
    root.mkdir(parents=True, exist_ok=True)
    rows.to_csv(root / "HAM10000_metadata.csv", index=False)
    copy_jpegs(rows["image_id"], root / "HAM10000_images_part_1")
    return root


def write_isic2019(root: Path, rows: pd.DataFrame, metadata: bool = True) -> Path:
    """The ISIC 2019 layout: one-hot ground truth, optional metadata with lesion_id, the images."""
    root.mkdir(parents=True, exist_ok=True)
    classes = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    gt = pd.DataFrame({"image": rows["image_id"]})
    for c in classes:
        gt[c] = [1.0 if DX_TO_ISIC2019[d] == c else 0.0 for d in rows["dx"]]
    gt.to_csv(root / "ISIC_2019_Training_GroundTruth.csv", index=False)
    if metadata:
        pd.DataFrame(
            {
                "image": rows["image_id"],
                "age_approx": rows["age"],
                "anatom_site_general": rows["localization"],
                "lesion_id": rows["lesion_id"],
                "sex": rows["sex"],
            }
        ).to_csv(root / "ISIC_2019_Training_Metadata.csv", index=False)
    copy_jpegs(rows["image_id"], root / "ISIC_2019_Training_Input")
    return root


def write_isic2016(root: Path, train: pd.DataFrame, test: pd.DataFrame | None = None) -> Path:
    """The ISIC 2016 Part 3 layout: header-less ``image,label`` CSVs (benign/malignant for training,
    0.0/1.0 for test, as the official files) and the two image folders."""
    root.mkdir(parents=True, exist_ok=True)
    lab = ["malignant" if d == "mel" else "benign" for d in train["dx"]]
    pd.DataFrame({"image": train["image_id"], "label": lab}).to_csv(
        root / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv", index=False, header=False
    )
    copy_jpegs(train["image_id"], root / "ISBI2016_ISIC_Part3_Training_Data")
    if test is not None:
        pd.DataFrame({"image": test["image_id"], "label": [float(d == "mel") for d in test["dx"]]}).to_csv(
            root / "ISBI2016_ISIC_Part3_Test_GroundTruth.csv", index=False, header=False
        )
        copy_jpegs(test["image_id"], root / "ISBI2016_ISIC_Part3_Test_Data")
    return root


def pneumonia_xrays(n: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """``n`` real PneumoniaMNIST chest X-rays (uint8 [n,28,28]) and labels (0 normal, 1 pneumonia)."""
    z = np.load(MEDMNIST_ROOT / "pneumoniamnist.npz")
    return z[f"{split}_images"][:n], z[f"{split}_labels"][:n, 0]


def save_png(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
