"""Hostile data (issue #28, second round): symlink loops and links out of the root, duplicate zip
members, a full disk under the decode cache, decompression bombs, absurd sizes and labels, broken
npz arrays, one-class datasets, dot-folders, unreadable folders and NaN pixels.  Every case is a
one-line error naming the file or recipe key (exit 2 through the CLI, nothing written) or a correct
result; images are real PneumoniaMNIST chest X-rays and BreastMNIST ultrasounds."""

from __future__ import annotations

import errno
import fcntl
import io
import os
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_bench.data import DATASETS
from ssl_bench.data import images as images_mod
from ssl_bench.data.images import decode_image
from ssl_bench.errors import SSLBenchError
from tests.data.layouts import pneumonia_xrays, save_png
from tests.test_hostile_input import BREAST, cli, one_error_line

N = 12  # images per test folder: two classes of six


def xray_folder(root: Path, n: int = N, classes: tuple[str, str] = ("class0", "class1")) -> Path:
    """``root/<class>/img<i>.png``: ``n`` real chest X-rays, alternating between the two classes."""
    x, _ = pneumonia_xrays(n)
    for i in range(n):
        save_png(x[i], root / classes[i % 2] / f"img{i}.png")
    return root


def build(root: Path, **kw):
    opts = {"name": "folder", "root": str(root), "size": 28, "channels": 1, "cache": False}
    return DATASETS.build({**opts, "split_ratios": [0.5, 0.25, 0.25], **kw})


def refused(fn, *expected: str) -> str:
    """``fn()`` raises a one-line SSLBenchError holding every ``expected`` text; the message."""
    with pytest.raises(SSLBenchError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for text in expected:
        assert text in msg, (text, msg)
    return msg


def all_files(d) -> list[str]:
    return [f for s in ("train", "val", "test") for f in d.files.get(s, [])]


# -------------------------------------------------------------------------------------------------
# 2. Symlinks and duplicate zip members
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("link, target", [
    ("class0/up", ".."),  # a loop: 80 images became 2296, each in train and test
    ("class1/again", "../class0"),  # a second name for a folder under the root
    ("class1/copy.png", "../class0/img0.png"),  # a second name for an image
])
def test_a_symlink_inside_the_root_adds_no_image(tmp_path, capsys, link, target):
    root = xray_folder(tmp_path / "data")
    (root / link).symlink_to(target)
    d = build(root)
    files = all_files(d)
    assert sorted(files) == sorted(f"class{i % 2}/img{i}.png" for i in range(N))  # each image once, under its own path
    assert d.class_names == ["class0", "class1"]
    assert link in capsys.readouterr().out  # said, not silent


def _outside(tmp_path: Path) -> Path:
    x, _ = pneumonia_xrays(1)
    save_png(x[0], tmp_path / "elsewhere" / "secret.png")
    return tmp_path / "elsewhere"


@pytest.mark.parametrize("manifest", [False, True])
@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_symlink_out_of_the_root_is_refused(tmp_path, kind, manifest):
    root = xray_folder(tmp_path / "data")
    outside = _outside(tmp_path)
    link = root / "class1" / "secret.png" if kind == "file" else root / "class2"
    link.symlink_to(outside / "secret.png" if kind == "file" else outside)
    kw = {}
    if manifest:
        listed = "class1/secret.png" if kind == "file" else "class2/secret.png"
        rows = [f"class{i % 2}/img{i}.png,{i % 2}" for i in range(N)] + [f"{listed},1"]
        (tmp_path / "m.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
        kw = {"manifest": str(tmp_path / "m.csv")}
    refused(lambda: build(root, **kw), str(link), "is a symlink to", str(outside), "outside data.root")


@pytest.mark.slow
def test_a_symlink_out_of_the_root_through_the_cli_is_one_line_and_writes_nothing(tmp_path):
    root = xray_folder(tmp_path / "data")
    (root / "class1" / "secret.png").symlink_to(_outside(tmp_path) / "secret.png")
    data = "data={name: folder, root: " + str(root) + ", size: 28, channels: 1, cache: false}"
    code, out = cli("run", BREAST, "--set", data, "--set", "train.epochs=1", "--set", "evaluate=[]",
                    "--out", tmp_path / "never")
    one_error_line(code, out, "class1/secret.png is a symlink to", "outside data.root")
    assert not (tmp_path / "never").exists()


def test_a_zip_with_two_members_of_one_name_is_refused(tmp_path):
    x, _ = pneumonia_xrays(N + 1)
    png = []
    for a in x:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        png.append(buf.getvalue())
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as z, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns "Duplicate name" and writes it anyway
        for i in range(N):
            z.writestr(f"class{i % 2}/img{i}.png", png[i])
        z.writestr("class0/img0.png", png[N])  # a second, different image under the first one's name
    refused(lambda: build(tmp_path / "data.zip"), "two members are named 'class0/img0.png'", "data.zip")


# -------------------------------------------------------------------------------------------------
# 3. The decode cache on a full disk; temporary files of interrupted builds
# -------------------------------------------------------------------------------------------------
def test_a_full_disk_under_the_decode_cache_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    root = xray_folder(tmp_path / "data")
    cache = tmp_path / "cache"

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    refused(lambda: build(root, cache=True, cache_dir=str(cache)), f"disk full at {cache}", "data.cache_dir")
    assert list(cache.iterdir()) == []  # no half-reserved temporary file left behind
    monkeypatch.undo()
    d = build(root, cache=True, cache_dir=str(cache))  # with room again: built, and equal to a decode without cache
    assert torch.equal(d.train.images, build(root).train.images)


SMALL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
from ssl_bench.data import DATASETS
from ssl_bench.errors import SSLBenchError
try:  # what the CLI does with a user error
    DATASETS.build({"name": "folder", "root": sys.argv[1], "size": 128, "cache_dir": sys.argv[2]})
except SSLBenchError as e:
    sys.exit(f"error: {e}")
"""


@pytest.mark.slow
def test_a_file_size_limit_in_a_real_process_is_one_line_not_a_signal(tmp_path):
    """A real failing write (RLIMIT_FSIZE: any write past 200 kB fails), not a mock: the 12 images at
    128 px RGB need 576 KiB of cache.  Before, numpy's sparse memory map died with SIGBUS on a full disk."""
    root = xray_folder(tmp_path / "data")
    proc = subprocess.run([sys.executable, "-c", SMALL_DISK, str(root), str(tmp_path / "c")],
                          capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and len(lines) == 1, (proc.returncode, proc.stderr)
    assert lines[0].startswith(f"error: cannot write the decode cache {tmp_path / 'c'}")
    assert "File too large" in lines[0]
    assert not list((tmp_path / "c").iterdir())


def test_stale_cache_temps_are_removed_but_a_live_build_is_left_alone(tmp_path):
    """The 2.2 GB temporary files of interrupted builds were never removed; a concurrent build's file
    (locked) and a file created an instant ago (maybe not locked yet) must not be."""
    cache = tmp_path / "cache"
    cache.mkdir()
    old = time.time() - 7200
    stale, live, fresh = (cache / f".{n}-28px.u8.x1y2z3.tmp" for n in ("stale", "live", "fresh"))
    for p in (stale, live, fresh):
        p.write_bytes(b"\0" * 4096)
    for p in (stale, live):
        os.utime(p, (old, old))
    holder = os.open(live, os.O_RDONLY)  # another builder, still writing: it holds the file's flock
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        build(xray_folder(tmp_path / "data"), cache=True, cache_dir=str(cache))
        assert not stale.exists()
        assert live.exists() and fresh.exists()  # locked; too new to tell
    finally:
        os.close(holder)
    build(tmp_path / "data", cache=True, cache_dir=str(cache))  # a cache hit cleans up too
    assert not live.exists() and fresh.exists()


# -------------------------------------------------------------------------------------------------
# 5. Decompression bombs and absurd sizes
# -------------------------------------------------------------------------------------------------
def _dicom(pixels: np.ndarray) -> bytes:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "OT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert pydicom.dcmread(io.BytesIO(buf.getvalue())).pixel_array.shape == pixels.shape
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["DICOM", "PNG"])
def test_every_format_is_held_to_pillows_decompression_bomb_limit(breast, monkeypatch, fmt):
    """Pillow's MAX_IMAGE_PIXELS (lowered here so that a real 28×28 image exceeds twice it) bounds
    DICOM too, checked on Rows × Columns before pydicom decodes a pixel (a 12.5 MB RLE file of
    20000×20000 decoded to more than 7 GB)."""
    from PIL import Image as PILImage

    img = breast.train.images[0, 0].numpy()
    if fmt == "DICOM":
        data = _dicom(img.astype(np.uint16) * 16)
    else:
        buf = io.BytesIO()
        PILImage.fromarray(img).save(buf, format="PNG")
        data = buf.getvalue()
    assert decode_image(data, 28, channels=1).shape == (1, 28, 28)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 300)  # the error threshold is 2 × 300 < 28 × 28
    with pytest.raises(PILImage.DecompressionBombError, match=r"Image size \(784 pixels\) exceeds limit of 600 pixels"):
        decode_image(data, 28, channels=1)


@pytest.mark.parametrize("in_zip", [False, True])
def test_a_file_larger_than_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch, in_zip):
    """A member whose declared size is over the limit is never inflated (a 1.6 MB member of 1.5 GB was
    read whole); the limit is lowered here so that 4 MiB of zeros (4 kB deflated) exceeds it."""
    root = xray_folder(tmp_path / "data")
    big = bytes(4 << 20)
    if in_zip:
        with zipfile.ZipFile(tmp_path / "data.zip", "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(root.rglob("*.png")):
                z.write(p, p.relative_to(root).as_posix())
            z.writestr("class1/big.png", big)
        root = tmp_path / "data.zip"
        read = zipfile.ZipFile.read
        monkeypatch.setattr(zipfile.ZipFile, "read", lambda self, m, *a: pytest.fail("inflated") if "big" in str(
            getattr(m, "filename", m)) else read(self, m, *a))
    else:
        (root / "class1" / "big.png").write_bytes(big)
    monkeypatch.setattr(images_mod, "MAX_FILE_BYTES", 1 << 20, raising=False)
    refused(lambda: build(root), "class1/big.png is 4.0 MiB, larger than any image this program reads (1.0 MiB")


@pytest.mark.parametrize("command", ["show", "run"])
def test_data_size_has_an_upper_bound(tmp_path, command):
    root = xray_folder(tmp_path / "data")
    code, out = cli(command, BREAST, "--set", "data={name: folder, root: " + str(root) + ", size: 100000}",
                    *(["--out", tmp_path / "never"] if command == "run" else []))
    one_error_line(code, out, "recipe key data.size must be between 8 and 4096 pixels, got 100000")
    assert not (tmp_path / "never").exists()


# -------------------------------------------------------------------------------------------------
# 5. and 11. npz arrays
# -------------------------------------------------------------------------------------------------
def _npz(path: Path, breast, n: int = 40, **arrays) -> Path:
    """``n`` real BreastMNIST images and labels, with ``arrays`` replacing or adding arrays."""
    base = {"images": breast.train.images[:n, 0].numpy(), "labels": breast.train.labels[:n].numpy().reshape(-1, 1)}
    np.savez(path, **{**base, **arrays})
    return path


N40 = np.arange(40)
BAD_NPZ = {  # case: (arrays replaced, recipe options, what the message says)
    "negative label": ({"labels": np.where(N40 == 3, -1, N40 % 2)}, {},
                       ["'labels' (recipe key data.labels) must be class indices", "got -1"]),
    "NaN label": ({"labels": np.where(N40 == 3, np.nan, N40 % 2)}, {}, ["must be class indices", "got nan"]),
    "fractional label": ({"labels": (N40 % 2) + 0.5}, {}, ["must be class indices", "got 0.5"]),
    "label 1e6": ({"labels": np.where(N40 == 3, 10**6, N40 % 2)}, {}, ["below 100,000, got 1000000"]),
    "string labels": ({"labels": np.array(["a", "b"] * 20)}, {}, ["must hold numbers", "<U1"]),
    "object labels": ({"labels": np.array([0, [1]] * 20, dtype=object)}, {},
                      ["array 'labels' (recipe key data.labels) could not be read", "allow_pickle"]),
    "RGBA images": ({"images": np.zeros((40, 28, 28, 4), np.uint8)}, {},
                    ["C = 1 (grey) or 3 (RGB), got shape (40, 28, 28, 4)"]),
    "flat images": ({"images": np.zeros((40, 784), np.uint8)}, {},
                    ["must be [N,H,W], [N,H,W,C] or [N,C,H,W]", "(40, 784)"]),
    "no images": ({"images": np.zeros((0, 28, 28), np.uint8), "labels": np.zeros(0)}, {},
                  ["'images' (recipe key data.images) holds no images"]),
    "1-D labels, multi-label": ({"labels": N40 % 2}, {"task": "multi-label"},
                                ["must be [N, L] 0/1 label vectors", "(40,)"]),
    "label vectors, multi-class": ({"labels": np.eye(3)[N40 % 3]}, {},
                                   ["one class index per image", "set data.task: multi-label"]),
    "unknown split name": ({"split": np.array(["train", "validation", "test", "train"] * 10)}, {},
                           ["'split' (recipe key data.split) holds 'validation' (10 rows)"]),
}


@pytest.mark.parametrize("case", list(BAD_NPZ))
def test_a_broken_npz_array_is_one_line_naming_file_and_key(breast, tmp_path, case):
    arrays, options, expected = BAD_NPZ[case]
    path = _npz(tmp_path / "mine.npz", breast, **arrays)
    refused(lambda: DATASETS.build({"name": "npz", "path": str(path), **options}), f"npz file {path}", *expected)


def test_nan_group_ids_are_each_their_own_group(breast, tmp_path):
    """NaN means "no group" (as an empty group in a CSV), not one group of every NaN image."""
    groups = np.where(N40 < 10, np.nan, N40 // 2).astype(np.float64)
    d = DATASETS.build({"name": "npz", "path": str(_npz(tmp_path / "g.npz", breast, group=groups))})
    codes = torch.cat([d.train.groups, d.val.groups, d.test.groups])
    assert len(torch.unique(codes)) == 10 + len(np.unique(groups[10:]))
    seen = {s: set(getattr(d, s).groups.tolist()) for s in ("train", "val", "test")}
    assert not (seen["train"] & seen["val"] or seen["train"] & seen["test"] or seen["val"] & seen["test"])


def test_a_single_class_dataset_is_refused_at_setup_when_an_evaluation_needs_labels(breast, tmp_path):
    split = np.array(["train", "test"] * 20)
    path = _npz(tmp_path / "oneclass.npz", breast, labels=np.zeros(40, np.int64), split=split)
    code, out = cli("run", BREAST, "--set", "data={name: npz, path: " + str(path) + "}", "--set", "train.epochs=1",
                    "--set", "evaluate=[{name: linear}]", "--out", tmp_path / "never")
    one_error_line(code, out, f"dataset oneclass ({path}): every image of its train split has the class '0'",
                   "evaluation linear (recipe key evaluate[0]) needs at least two classes", "evaluate: []")
    assert not (tmp_path / "never").exists()
    from ssl_bench.data.base import check_classes

    check_classes(DATASETS.build({"name": "npz", "path": str(path)}), [])  # pre-training alone needs no labels


# -------------------------------------------------------------------------------------------------
# 15. Dot-folders, unreadable folders, NaN pixels
# -------------------------------------------------------------------------------------------------
def test_a_dot_folder_is_a_class_as_in_torchvision(tmp_path):
    from torchvision.datasets.folder import find_classes

    root = xray_folder(tmp_path / "data", classes=(".class0", "class1"))
    d = build(root)
    assert d.class_names == find_classes(str(root))[0] == [".class0", "class1"]
    assert len(all_files(d)) == N


def test_an_unreadable_class_folder_is_one_line_naming_it(tmp_path, monkeypatch):
    """Root ignores file modes, so the refusal of a folder (EACCES) is simulated at os.scandir."""
    root = xray_folder(tmp_path / "data")
    real = os.scandir

    def scandir(path="."):
        if Path(path) == root / "class1":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    refused(lambda: build(root), f"folder {root / 'class1'} under data.root cannot be read: Permission denied")


def test_a_fifo_in_the_data_folder_is_refused_not_waited_on(tmp_path):
    root = xray_folder(tmp_path / "data")
    os.mkfifo(root / "class1" / "stream.png")  # opening it for reading would block until a writer comes
    refused(lambda: build(root), f"{root / 'class1' / 'stream.png'} under data.root is neither a file nor a folder")


def test_a_float_tiff_with_nan_pixels_keeps_its_picture(breast):
    """NaN pixels (no data) are left out of the window and become 0; before, they made the image black."""
    img = breast.train.images[0, 0].numpy().astype(np.float32)
    holes = img.copy()
    holes[:3, :5] = np.nan
    holes[10, 10] = np.inf

    def tiff(a):
        buf = io.BytesIO()
        Image.fromarray(a, "F").save(buf, format="TIFF")
        return buf.getvalue()

    ref = decode_image(tiff(img), 28, channels=1, window="minmax")[0]
    got = decode_image(tiff(holes), 28, channels=1, window="minmax")[0]
    assert got.max() == 255 and (got[:3, :5] == 0).all() and got[10, 10] == 0
    keep = np.isfinite(holes)
    assert np.abs(got[keep].astype(int) - ref[keep].astype(int)).max() <= 1


def test_a_carved_folder_split_is_stratified_by_label(tmp_path):
    """A rare class gets its share of every split, as the npz adapter's carved split does."""
    import numpy as np
    from PIL import Image

    from ssl_bench.data import DATASETS

    rng = np.random.default_rng(0)
    for cls, n in (("common", 90), ("rare", 10)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    data = DATASETS.build({"name": "folder", "root": str(tmp_path), "size": 8, "cache": False,
                           "split_ratios": [0.6, 0.2, 0.2]})
    rare = data.class_names.index("rare")
    counts = {s: int((getattr(data, s).labels == rare).sum()) for s in ("train", "val", "test")}
    assert counts == {"train": 6, "val": 2, "test": 2}, counts
