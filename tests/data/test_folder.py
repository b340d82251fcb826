"""The folder adapter (CSV manifest / ImageFolder) on real HAM10000 JPEGs and PneumoniaMNIST PNGs."""

import pandas as pd
import pytest
import torch

from ssl_bench.data import DATASETS
from ssl_bench.data.images import decode_image
from ssl_bench.errors import SSLBenchError
from tests.data.layouts import copy_jpegs, ham_jpeg, ham_rows, pneumonia_xrays, save_png


def build(root, tmp_path, **kw):
    return DATASETS.build({"name": "folder", "root": str(root), "size": 32, "cache_dir": str(tmp_path / "cache"), **kw})


def test_manifest_with_groups_and_splits(tmp_path):
    rows = ham_rows(30)
    copy_jpegs(rows["image_id"], tmp_path / "hospital" / "img")
    split = ["test" if i % 5 == 0 else "val" if i % 5 == 1 else "train" for i in range(len(rows))]
    pd.DataFrame({"path": "img/" + rows["image_id"] + ".jpg", "label": rows["dx"], "group": rows["lesion_id"],
                  "split": split}).to_csv(
        tmp_path / "hospital" / "labels.csv", index=False
    )
    d = build(tmp_path / "hospital", tmp_path, manifest="labels.csv", display_name="Hospital")
    assert d.name == "Hospital" and d.task == "multi-class" and d.class_names == sorted(rows["dx"].unique())
    assert [f.rsplit("/", 1)[-1][:-4] for f in d.files["test"]] == [r for i, r in enumerate(rows["image_id"])
                                                                    if i % 5 == 0]
    assert d.test.labels.tolist() == [d.class_names.index(x) for i, x in enumerate(rows["dx"]) if i % 5 == 0]
    assert torch.equal(d.test.images[0], torch.from_numpy(decode_image(ham_jpeg(rows["image_id"][0]), 32)))
    assert d.train.groups is not None


def test_manifest_multilabel_seeded_group_split(tmp_path):
    x, y = pneumonia_xrays(24)
    for i in range(24):
        save_png(x[i], tmp_path / "cxr" / f"p{i // 2}" / f"{i}.png")
    labels = ["pneumonia|effusion" if y[i] and i % 3 == 0 else "pneumonia" if y[i] else "" for i in range(24)]
    pd.DataFrame({"path": [f"p{i // 2}/{i}.png" for i in range(24)], "label": labels,
                  "group": [f"P{i // 2}" for i in range(24)]}).to_csv(
        tmp_path / "manifest.csv", index=False
    )
    d = build(tmp_path / "cxr", tmp_path, manifest=str(tmp_path / "manifest.csv"), channels=1, size=28,
              split_ratios=[0.5, 0.25, 0.25])
    assert d.task == "multi-label" and d.class_names == ["effusion", "pneumonia"] and d.channels == 1
    for s in ("train", "val", "test"):
        idx = [int(f.rsplit("/", 1)[-1][:-4]) for f in d.files[s]]
        assert d.split(s).labels[:, 1].tolist() == [float(y[i]) for i in idx]
        assert torch.equal(d.split(s).images[:, 0], torch.from_numpy(x[idx]))
    patients = {s: {f.split("/")[0] for f in d.files[s]} for s in ("train", "val", "test")}
    assert not patients["train"] & patients["test"] and not patients["train"] & patients["val"]


def test_imagefolder_with_and_without_split_folders(tmp_path):
    rows = ham_rows(24)
    for dx in rows["dx"].unique():
        copy_jpegs(rows[rows["dx"] == dx]["image_id"], tmp_path / "flat" / dx)
    d = build(tmp_path / "flat", tmp_path, split_ratios=[0.5, 0.25, 0.25])
    assert d.class_names == sorted(rows["dx"].unique()) and d.train.groups is None
    for s in ("train", "val", "test"):
        assert d.split(s).labels.tolist() == [d.class_names.index(f.split("/")[0]) for f in d.files[s]]
    for i, (img, dx) in enumerate(zip(rows["image_id"], rows["dx"])):
        copy_jpegs([img], tmp_path / "split" / ("train" if i % 3 else "test") / dx)
    s = build(tmp_path / "split", tmp_path)
    assert s.val is None and len(s.test) == len(range(0, len(rows), 3)) and len(s.train) == len(rows) - len(s.test)


def test_folder_bad_input(tmp_path):
    rows = ham_rows(10)
    copy_jpegs(rows["image_id"], tmp_path / "h" / "img")
    pd.DataFrame({"path": "img/" + rows["image_id"] + ".jpg", "label": rows["dx"]}).to_csv(tmp_path / "h" / "m.csv",
                                                                                           index=False)
    with pytest.raises(SSLBenchError, match=r"m.csv: unknown class 'akiec' \(data.class_names: mel, nv\)"):
        build(tmp_path / "h", tmp_path, manifest="m.csv", class_names=["mel", "nv"])
    with pytest.raises(SSLBenchError, match=r"manifest nope.csv not found"):
        build(tmp_path / "h", tmp_path, manifest="nope.csv")
    pd.DataFrame({"path": "img/" + rows["image_id"] + ".jpg", "label": rows["dx"],
                  "split": "training"}).to_csv(tmp_path / "h" / "m.csv", index=False)
    with pytest.raises(SSLBenchError, match=r"m.csv line 2: split must be train, val or test, got 'training'"):
        build(tmp_path / "h", tmp_path, manifest="m.csv")
    pd.DataFrame({"file": ["a.jpg"], "label": ["x"]}).to_csv(tmp_path / "h" / "m.csv", index=False)
    with pytest.raises(SSLBenchError, match=r"m.csv lacks column\(s\) path"):
        build(tmp_path / "h", tmp_path, manifest="m.csv")
    pd.DataFrame({"path": ["img/missing.jpg"], "label": ["x"]}).to_csv(tmp_path / "h" / "m.csv", index=False)
    with pytest.raises(SSLBenchError, match=r"m.csv line 2: img/missing.jpg not found under "):
        build(tmp_path / "h", tmp_path, manifest="m.csv")
    copy_jpegs(rows["image_id"][:1], tmp_path / "loose")
    with pytest.raises(SSLBenchError, match="is not inside a class folder"):
        build(tmp_path / "loose", tmp_path)
