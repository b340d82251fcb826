"""The isic adapter on the real HAM10000 JPEGs (zip and folder) and on ISIC 2019 / 2016 layouts."""

import numpy as np
import pandas as pd
import pytest
import torch

from ssl_bench.data import DATASETS
from ssl_bench.data.images import decode_image
from ssl_bench.errors import SSLBenchError
from ssl_bench.selectors.micle import GroupPartners
from tests.conftest import HAM_NPZ, needs_ham_npz
from tests.data.layouts import HAM_ZIP, ham_jpeg, ham_metadata, ham_rows, write_ham10000, write_isic2016, write_isic2019


@pytest.fixture(scope="session")
def ham_zip(tmp_path_factory):
    """All 10,015 real HAM10000 JPEGs read from the zip (32 px, cache in a temporary folder)."""
    cache = tmp_path_factory.mktemp("cache")
    return DATASETS.build({"name": "isic", "root": str(HAM_ZIP), "size": 32, "cache_dir": str(cache)})


def build(root, tmp_path, **kw):
    return DATASETS.build({"name": "isic", "root": str(root), "size": 32, "cache_dir": str(tmp_path / "cache"), **kw})


@needs_ham_npz
def test_ham10000_zip_reproduces_the_lesion_split_of_the_npz(ham_zip):
    d = ham_zip
    assert d.name == "HAM10000" and d.task == "multi-class"
    assert d.class_names == ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]  # ISIC 2019 order; SCC/UNK absent
    assert (len(d.train), len(d.val), len(d.test)) == (7030, 996, 1989)
    assert d.train.images.shape == (7030, 3, 32, 32) and d.train.images.dtype == torch.uint8
    # same seeded lesion-disjoint split and labels as ham10000_lesions_28.npz (PROVENANCE.md):
    z = np.load(HAM_NPZ)
    npz_dx = {i: dx for i, dx in zip(z["image_id"], z["dx"])}
    npz_split = dict(zip(z["image_id"], z["split"]))
    for s in ("train", "val", "test"):
        ids = [f.rsplit("/", 1)[-1][:-4] for f in d.files[s]]
        assert all(npz_split[i] == s for i in ids)
        got = [d.class_names[k] for k in d.split(s).labels.tolist()]
        want = [{"akiec": "AK", "bcc": "BCC", "bkl": "BKL", "df": "DF", "mel": "MEL", "nv": "NV",
                 "vasc": "VASC"}[npz_dx[i]] for i in ids]
        assert got == want
    assert not set(d.train.groups.tolist()) & set(d.test.groups.tolist())
    assert not set(d.train.groups.tolist()) & set(d.val.groups.tolist())


def test_ham10000_pixels_are_the_jpeg_centre_crop(ham_zip):
    f = ham_zip.files["train"][5]
    raw = ham_jpeg(f.rsplit("/", 1)[-1][:-4])
    assert torch.equal(ham_zip.train.images[5], torch.from_numpy(decode_image(raw, 32)))
    from PIL import Image
    import io

    full = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))  # 150 × 200
    assert np.array_equal(decode_image(raw, 150), full[:, 25:175].transpose(2, 0, 1))  # no resize: exact crop
    assert decode_image(raw, 32, fit="squash").shape == (3, 32, 32)


def test_micle_partners_share_the_lesion_id(ham_zip):
    meta = ham_metadata().set_index("image_id")
    lesion = [meta.loc[f.rsplit("/", 1)[-1][:-4], "lesion_id"] for f in ham_zip.files["train"]]
    partners = GroupPartners(ham_zip.train.groups)
    idx = torch.arange(len(ham_zip.train))
    got = partners.sample(idx, torch.Generator().manual_seed(0))
    has = partners.has_partner(idx)
    assert has.sum() > 2000  # lesions with ≥ 2 images (3,2xx training images of 4,501 in all)
    for i, j in zip(idx[has].tolist(), got[has].tolist()):
        assert i != j and lesion[i] == lesion[j]
    assert torch.equal(got[~has], idx[~has])  # an image alone in its lesion is its own partner


def test_folder_images_equal_the_zips_jpegs_and_cache_follows_the_files(tmp_path):
    rows = ham_rows(40)
    root = write_ham10000(tmp_path / "ham", rows)
    a = build(root, tmp_path, split_ratios=[0.5, 0.25, 0.25])
    assert a.cache_file is not None and a.cache_file.is_file()
    b = build(root, tmp_path, split_ratios=[0.5, 0.25, 0.25])
    assert b.cache_file == a.cache_file and torch.equal(a.train.images, b.train.images)
    for s in ("train", "val", "test"):
        for k, f in enumerate(a.files[s]):
            assert torch.equal(a.split(s).images[k],
                               torch.from_numpy(decode_image(ham_jpeg(f.rsplit("/", 1)[-1][:-4]), 32)))
    # replacing an image's bytes changes the key: the stale cache is rebuilt and removed
    victim = root / a.files["train"][0]
    victim.write_bytes(ham_jpeg(rows["image_id"].iloc[-1]))
    c = build(root, tmp_path, split_ratios=[0.5, 0.25, 0.25])
    assert c.cache_file != a.cache_file and not a.cache_file.exists()
    assert torch.equal(c.train.images[0], torch.from_numpy(decode_image(ham_jpeg(rows["image_id"].iloc[-1]), 32)))
    nocache = build(root, tmp_path, split_ratios=[0.5, 0.25, 0.25], cache=False)
    assert nocache.cache_file is None and torch.equal(nocache.train.images, c.train.images)


def test_isic2019_layout_with_metadata_lesions(tmp_path):
    rows = ham_rows(48)
    d = build(write_isic2019(tmp_path / "isic", rows), tmp_path, split_ratios=[0.6, 0.2, 0.2], split_seed=3)
    assert d.name == "ISIC2019" and d.class_names == ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]
    n = len(d.train) + len(d.val) + len(d.test)
    assert n == len(rows)
    by_id = rows.set_index("image_id")
    for s in ("train", "val", "test"):
        ids = [f.rsplit("/", 1)[-1][:-4] for f in d.files[s]]
        got = [d.class_names[k] for k in d.split(s).labels.tolist()]
        assert got == [{"mel": "MEL", "nv": "NV", "bcc": "BCC", "akiec": "AK", "bkl": "BKL", "df": "DF",
                        "vasc": "VASC"}[by_id.loc[i, "dx"]] for i in ids]
    groups = {s: {by_id.loc[f.rsplit("/", 1)[-1][:-4], "lesion_id"] for f in d.files[s]}
              for s in ("train", "val", "test")}
    assert not groups["train"] & groups["test"] and not groups["train"] & groups["val"]
    assert d.train.groups.unique().numel() < len(d.train)  # multi-image lesions share a group id
    # without the metadata file every image is its own group
    solo = build(write_isic2019(tmp_path / "solo", rows, metadata=False), tmp_path, split_ratios=[0.6, 0.2, 0.2])
    assert solo.train.groups.unique().numel() == len(solo.train)


def test_isic2016_layout_official_test_and_carved_split(tmp_path):
    rows = ham_rows(48)
    train, test = rows.iloc[:36], rows.iloc[36:]
    d = build(write_isic2016(tmp_path / "i16", train, test), tmp_path)
    assert d.name == "ISIC2016" and d.task == "binary-class" and d.class_names == ["benign", "malignant"]
    assert len(d.test) == len(test) and len(d.train) + len(d.val) == len(train)
    test_ids = [f.rsplit("/", 1)[-1][:-4] for f in d.files["test"]]
    assert test_ids == test["image_id"].tolist()
    assert d.test.labels.tolist() == [int(x == "mel") for x in test["dx"]]
    only_train = build(write_isic2016(tmp_path / "i16b", train), tmp_path, layout="isic2016")
    assert len(only_train.train) + len(only_train.val) + len(only_train.test) == len(train)


def test_env_root_and_missing_root_say_where_to_download(tmp_path, monkeypatch):
    monkeypatch.delenv("SSL_BENCH_ISIC_ROOT", raising=False)
    with pytest.raises(SSLBenchError, match=r"no data root .*SSL_BENCH_ISIC_ROOT.*challenge.isic-archive.com"):
        DATASETS.build({"name": "isic"})
    with pytest.raises(SSLBenchError, match=r"ISIC data not found at .*nowhere.*ISIC_2019_Training_GroundTruth.csv"):
        DATASETS.build({"name": "isic", "root": str(tmp_path / "nowhere")})
    (tmp_path / "notes.txt").write_text("not a zip")
    with pytest.raises(SSLBenchError, match=r"notes.txt is a file but not a .zip archive"):
        DATASETS.build({"name": "isic", "root": str(tmp_path / "notes.txt")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(SSLBenchError, match="no ISIC label file in"):
        DATASETS.build({"name": "isic", "root": str(tmp_path / "empty")})
    with pytest.raises(SSLBenchError,
                       match=r"data.layout isic2016: ISBI2016_ISIC_Part3_Training_GroundTruth.csv not found"):
        build(HAM_ZIP, tmp_path, layout="isic2016")
    rows = ham_rows(12)
    root = write_ham10000(tmp_path / "ham", rows)
    monkeypatch.setenv("SSL_BENCH_ISIC_ROOT", str(root))
    d = DATASETS.build({"name": "isic", "size": 16, "cache_dir": str(tmp_path / "c"),
                        "split_ratios": [0.5, 0.25, 0.25]})
    assert len(d.train) + len(d.val) + len(d.test) == len(rows)


def test_bad_labels_are_named_with_file_and_line(tmp_path):
    rows = ham_rows(12)
    bad = rows.copy()
    bad.loc[3, "dx"] = "melanoma"
    root = write_ham10000(tmp_path / "ham", bad)
    with pytest.raises(SSLBenchError, match=r"HAM10000_metadata.csv line 5: unknown class 'melanoma'"):
        build(root, tmp_path)
    root = write_isic2019(tmp_path / "i19", rows)
    gt = pd.read_csv(root / "ISIC_2019_Training_GroundTruth.csv")
    gt.loc[2, ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]] = 0.0
    gt.to_csv(root / "ISIC_2019_Training_GroundTruth.csv", index=False)
    with pytest.raises(SSLBenchError,
                       match=rf"GroundTruth.csv line 4: label row of {rows['image_id'][2]} is all zeros"):
        build(root, tmp_path)
    gt.drop(columns=["VASC"]).to_csv(root / "ISIC_2019_Training_GroundTruth.csv", index=False)
    with pytest.raises(SSLBenchError, match="lacks column.*VASC"):
        build(root, tmp_path)
    root = write_isic2016(tmp_path / "i16", rows)
    (root / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv").write_text(f"{rows['image_id'][0]},benign\n"
                                                                       f"{rows['image_id'][1]},maybe\n")
    with pytest.raises(SSLBenchError, match=r"Training_GroundTruth.csv line 2: unknown class 'maybe'"):
        build(root, tmp_path)


def test_missing_and_corrupt_images(tmp_path):
    rows = ham_rows(16)
    root = write_ham10000(tmp_path / "ham", rows)
    gone = root / "HAM10000_images_part_1" / f"{rows['image_id'][4]}.jpg"
    gone.unlink()
    with pytest.raises(SSLBenchError,
                       match=rf"1 image\(s\) listed in .*HAM10000_metadata.csv are missing .*{rows['image_id'][4]}"):
        build(root, tmp_path)
    gone.write_bytes(ham_jpeg(rows["image_id"][4])[:900])  # truncated JPEG
    (root / "HAM10000_images_part_1" / f"{rows['image_id'][7]}.jpg").write_bytes(b"not an image at all")
    with pytest.raises(SSLBenchError,
                       match=rf"2 unreadable or corrupt image\(s\) in .*{rows['image_id'][4]}\.jpg.*skip_corrupt"):
        build(root, tmp_path)
    d = DATASETS.build(
        {"name": "isic", "root": str(root), "size": 32, "cache_dir": str(tmp_path / "cache"), "skip_corrupt": True,
         "split_ratios": [0.5, 0.25, 0.25]}
    )
    kept = sum(len(d.files[s]) for s in d.files)
    assert kept == len(rows) - 2 and len(d.skipped) == 2
    assert {s.rsplit("/", 1)[-1][:-4] for s in d.skipped} == {rows["image_id"][4], rows["image_id"][7]}


def test_bad_split_ratios(tmp_path):
    with pytest.raises(SSLBenchError, match=r"data.split_ratios must be three fractions"):
        build(HAM_ZIP, tmp_path, split_ratios=[0.7, 0.2, 0.2])
    with pytest.raises(SSLBenchError, match=r"data.split_ratios must give train and test a share"):
        build(HAM_ZIP, tmp_path, split_ratios=[0.9, 0.1, 0.0])
