"""Medical image inputs: 16-bit PNG/TIFF windowing, DICOM through the folder adapter, and the npz
adapter's own split — on real BreastMNIST images re-encoded at 12 bits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_bench.data import DATASETS
from ssl_bench.data.images import decode_image, to_uint8
from ssl_bench.errors import SSLBenchError


@pytest.fixture(scope="module")
def real12(breast):
    """Eight real BreastMNIST images as 12-bit data (0…4095) and their 8-bit originals."""
    imgs = breast.train.images[:8, 0].numpy()
    return imgs, (imgs.astype(np.uint16) * 16 + 8)


def _corr(a, b) -> float:
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


def test_to_uint8_rules_on_known_values():
    ramp = np.arange(0, 4096, dtype=np.uint16).reshape(64, 64)
    mm = to_uint8(ramp, "minmax")
    assert mm.min() == 0 and mm.max() == 255 and mm[0, 1] == 0 and mm[32, 0] == 128
    full = to_uint8(ramp, "full", bits=12)
    np.testing.assert_array_equal(full, mm)  # 12 stored bits: the full range is 0…4095
    assert to_uint8(ramp, "full").max() == 16  # as 16-bit data the same values are dark
    pct = to_uint8(ramp, "percentile")
    assert pct[0, 0] == 0 and pct[-1, -1] == 255 and (pct == 0).sum() > 1 and (pct == 255).sum() > 1  # the tails clip
    assert (to_uint8(np.full((4, 4), 7, np.uint16)) == 0).all()  # a flat image: no division by zero


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_files_keep_their_range(real12, tmp_path, fmt):
    orig, twelve = real12
    import io

    for o, t in zip(orig, twelve):
        buf = io.BytesIO()
        Image.fromarray(t.astype(np.uint16)).save(buf, format=fmt)  # mode I;16
        data = buf.getvalue()
        out = decode_image(data, 28, channels=1, window="minmax")[0]
        assert out.max() == 255 and out.min() == 0  # the old rule (top byte) gave 0…15
        assert _corr(out, o) > 0.999
        pct = decode_image(data, 28, channels=1)[0]
        assert pct.max() == 255 and _corr(pct, o) > 0.98


def _write_dicom(path, pixels: np.ndarray, photometric: str = "MONOCHROME2", window: tuple | None = None) -> None:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "OT", "anon"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    assert pydicom.dcmread(str(path)).pixel_array.shape == pixels.shape


def test_dicom_images_load_through_the_folder_adapter(real12, breast, tmp_path):
    orig, twelve = real12
    labels = breast.train.labels[:8].tolist()
    for i, (t, y) in enumerate(zip(twelve, labels)):
        d = tmp_path / "dcm" / str(y)
        d.mkdir(parents=True, exist_ok=True)
        if i % 2:  # MONOCHROME1 stores white as low values: the adapter inverts it back
            _write_dicom(d / f"img{i}.dcm", 4095 - t, "MONOCHROME1")
        else:
            _write_dicom(d / f"img{i}.dcm", t, window=(2048, 4096))
    ds = DATASETS.build({"name": "folder", "root": str(tmp_path / "dcm"), "size": 28, "channels": 1, "cache": False,
                         "split_ratios": [0.5, 0.0, 0.5]})
    got = torch.cat([ds.train.images, ds.test.images])[:, 0].numpy()
    assert got.shape == (8, 28, 28)
    for g in got:  # each decoded image matches one original (the adapter orders files by split)
        assert max(_corr(g, o) for o in orig) > 0.995
    assert got.max() >= 250


def test_dicom_without_pydicom_is_one_line(monkeypatch, real12, tmp_path):
    import builtins

    _write_dicom(tmp_path / "a.dcm", real12[1][0])
    data = (tmp_path / "a.dcm").read_bytes()
    real_import = builtins.__import__

    def no_pydicom(name, *a, **k):
        if name.startswith("pydicom"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_pydicom)
    with pytest.raises(SSLBenchError, match="needs pydicom: pip install pydicom"):
        decode_image(data, 28, channels=1)


def test_npz_without_a_split_array_is_split_seeded_stratified_and_group_disjoint(breast, tmp_path):
    imgs = torch.cat([breast.train.images, breast.val.images, breast.test.images]).numpy()
    labs = torch.cat([breast.train.labels, breast.val.labels, breast.test.labels]).numpy()
    np.savez(tmp_path / "mine.npz", images=imgs, labels=labs)
    a = DATASETS.build({"name": "npz", "path": str(tmp_path / "mine.npz")})
    b = DATASETS.build({"name": "npz", "path": str(tmp_path / "mine.npz")})
    n = len(imgs)
    assert len(a.train) + len(a.val) + len(a.test) == n
    assert abs(len(a.train) / n - 0.7) < 0.01 and abs(len(a.test) / n - 0.2) < 0.01
    assert torch.equal(a.train.images, b.train.images)  # seeded
    p_all = labs.mean()
    for s in (a.train, a.val, a.test):  # stratified: each split has the file's class share
        assert abs(s.labels.float().mean().item() - p_all) < 0.02
    c = DATASETS.build({"name": "npz", "path": str(tmp_path / "mine.npz"), "split_seed": 1})
    assert not torch.equal(a.train.images, c.train.images)
    # with groups (e.g. patients): no group in two splits
    groups = np.arange(n) // 3
    np.savez(tmp_path / "grouped.npz", images=imgs, labels=labs, group=groups)
    g = DATASETS.build({"name": "npz", "path": str(tmp_path / "grouped.npz")})
    seen = {s: set(getattr(g, s).groups.tolist()) for s in ("train", "val", "test")}
    assert not (seen["train"] & seen["val"] or seen["train"] & seen["test"] or seen["val"] & seen["test"])
    # an explicitly named split array that is missing is still an error
    with pytest.raises(SSLBenchError, match="has no array 'fold'"):
        DATASETS.build({"name": "npz", "path": str(tmp_path / "mine.npz"), "split": "fold"})
