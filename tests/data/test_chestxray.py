"""ChestX-ray14 and Shenzhen adapters on folders in the official layouts, made of real chest X-rays
(PneumoniaMNIST images saved as PNG)."""

import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from ssl_bench.data import DATASETS
from ssl_bench.data.chestxray import FINDINGS
from ssl_bench.errors import SSLBenchError
from tests.data.layouts import pneumonia_xrays, save_png


def write_chestxray14(root, n=40):
    """NIH layout: images in images_001/images/ and images_002/images/, Data_Entry_2017.csv, split lists."""
    x, y = pneumonia_xrays(n)
    rows, patients = [], []
    for i in range(n):
        patient, follow = 1 + i // 3, i % 3  # 3 X-rays per patient (the last has 1)
        name = f"{patient:08d}_{follow:03d}.png"
        save_png(x[i], root / f"images_00{1 + i % 2}" / "images" / name)
        findings = "No Finding" if y[i] == 0 else ("Pneumonia|Effusion" if i % 4 == 1 else "Pneumonia")
        rows.append({"Image Index": name, "Finding Labels": findings, "Follow-up #": follow, "Patient ID": patient,
                     "Patient Age": 50, "Patient Gender": "M", "View Position": "PA"})
        patients.append(patient)
    df = pd.DataFrame(rows)
    df.to_csv(root / "Data_Entry_2017.csv", index=False)
    test_patients = {2, 5, 9, 13}
    (root / "train_val_list.txt").write_text("\n".join(df["Image Index"][~df["Patient ID"].isin(test_patients)]) + "\n")
    (root / "test_list.txt").write_text("\n".join(df["Image Index"][df["Patient ID"].isin(test_patients)]) + "\n")
    return df, x, y


def build(kind, root, tmp_path, **kw):
    return DATASETS.build({"name": kind, "root": str(root), "size": 28, "cache_dir": str(tmp_path / "cache"), **kw})


def test_chestxray14_layout_labels_patients_and_official_split(tmp_path):
    root = tmp_path / "cxr14"
    df, x, y = write_chestxray14(root)
    d = build("chestxray14", root, tmp_path, val_fraction=0.25)
    assert d.name == "ChestX-ray14" and d.task == "multi-label" and d.class_names == list(FINDINGS)
    assert d.channels == 1 and d.train.labels.shape[1] == 14
    by_name = df.set_index("Image Index")
    for s in ("train", "val", "test"):
        names = [f.rsplit("/", 1)[-1] for f in d.files[s]]
        rows = [by_name.index.get_loc(n) for n in names]
        lab = d.split(s).labels
        assert lab[:, FINDINGS.index("Pneumonia")].tolist() == [float(y[r]) for r in rows]
        assert lab[:, FINDINGS.index("Effusion")].tolist() == [float("Effusion" in by_name["Finding Labels"].iloc[r])
                                                               for r in rows]
        assert torch.equal(d.split(s).images[:, 0], torch.from_numpy(x[rows]))  # 28 px PNG: no resize, exact
    assert sorted(f.rsplit("/", 1)[-1] for f in d.files["test"]) == sorted((root / "test_list.txt").read_text().split())
    pats = {s: {by_name.loc[f.rsplit("/", 1)[-1], "Patient ID"] for f in d.files[s]} for s in ("train", "val", "test")}
    assert pats["val"] and not pats["train"] & pats["val"] and not pats["train"] & pats["test"]
    assert d.train.groups.unique().numel() < len(d.train)  # several X-rays per patient share a group
    assert (d.train.labels.sum(1) == 0).any()  # "No Finding" rows are valid all-zero rows


def test_chestxray14_from_zip_equals_folder(tmp_path):
    root = tmp_path / "cxr14"
    write_chestxray14(root, n=18)
    zpath = tmp_path / "cxr14.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                z.write(f, "ChestX-ray14/" + f.relative_to(root).as_posix())
    a, b = build("chestxray14", root, tmp_path), build("chestxray14", zpath, tmp_path)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)


def test_chestxray14_bad_input(tmp_path, monkeypatch):
    monkeypatch.delenv("SSL_BENCH_CHESTXRAY14_ROOT", raising=False)
    with pytest.raises(SSLBenchError, match=r"SSL_BENCH_CHESTXRAY14_ROOT.*nihcc.app.box.com"):
        DATASETS.build({"name": "chestxray14"})
    root = tmp_path / "cxr14"
    df, _, _ = write_chestxray14(root, n=12)
    official = (root / "test_list.txt").read_text()
    (root / "test_list.txt").unlink()
    with pytest.raises(SSLBenchError, match="test_list.txt not found"):
        build("chestxray14", root, tmp_path)
    (root / "test_list.txt").write_text(df["Image Index"][0] + "\n")
    with pytest.raises(SSLBenchError, match="in both train_val_list.txt and test_list.txt"):
        build("chestxray14", root, tmp_path)
    (root / "test_list.txt").write_text(official)
    bad = df.copy()
    bad.loc[3, "Finding Labels"] = "Pneumonia|Broken_Rib"
    bad.to_csv(root / "Data_Entry_2017.csv", index=False)
    with pytest.raises(SSLBenchError, match=r"Data_Entry_2017.csv line 5: unknown finding 'Broken_Rib'"):
        build("chestxray14", root, tmp_path)
    df.to_csv(root / "Data_Entry_2017.csv", index=False)
    next(root.rglob(df["Image Index"][6])).unlink()
    with pytest.raises(SSLBenchError,
                       match=rf"1 image\(s\) listed in .*Data_Entry_2017.csv are missing .*{df['Image Index'][6]}"):
        build("chestxray14", root, tmp_path)


def write_shenzhen(root, n=30):
    x, y = pneumonia_xrays(n, "val")
    for i in range(n):
        save_png(x[i], root / "CXR_png" / f"CHNCXR_{i + 1:04d}_{y[i]}.png")
    (root / "ClinicalReadings").mkdir()
    return x, y


def test_shenzhen_labels_from_file_names(tmp_path):
    root = tmp_path / "ChinaSet_AllFiles"
    x, y = write_shenzhen(root)
    d = build("shenzhen", root, tmp_path, split_ratios=[0.6, 0.2, 0.2])
    assert d.name == "Shenzhen" and d.task == "binary-class" and d.class_names == ["normal", "tuberculosis"]
    assert d.channels == 1 and (len(d.train), len(d.val), len(d.test)) == (18, 6, 6)
    for s in ("train", "val", "test"):
        idx = [int(f.rsplit("/", 1)[-1][7:11]) - 1 for f in d.files[s]]
        assert d.split(s).labels.tolist() == y[idx].tolist()
        assert torch.equal(d.split(s).images[:, 0], torch.from_numpy(x[idx]))
    assert np.intersect1d(d.files["train"], d.files["test"]).size == 0


def test_shenzhen_bad_input(tmp_path):
    root = tmp_path / "sz"
    write_shenzhen(root, n=6)
    (root / "CXR_png" / "CHNCXR_0099_x.png").write_bytes(b"")
    with pytest.raises(SSLBenchError, match=r"CHNCXR_0099_x.png is not CHNCXR_NNNN_L.png"):
        build("shenzhen", root, tmp_path)
    (tmp_path / "none").mkdir()
    with pytest.raises(SSLBenchError, match=r"no CHNCXR_NNNN_L.png images in .*lhncbc"):
        build("shenzhen", tmp_path / "none", tmp_path)
    (root / "CXR_png" / "CHNCXR_0099_x.png").unlink()
    (root / "CXR_png" / "CHNCXR_0002_1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(SSLBenchError, match=r"1 unreadable or corrupt image\(s\) .*CHNCXR_0002_1.png"):
        build("shenzhen", root, tmp_path)
