"""Image files on disk → the uint8 ``[N, C, S, S]`` tensors of :class:`~ssl_bench.data.base.ImageSet`.

Shared by every file-based adapter (isic, chestxray14, shenzhen, folder):

* :class:`ImageStore` reads a dataset from a folder **or a .zip without extracting it** (members
  are found by file name wherever the archive puts them, e.g. ``ham10000_200x150/images/``).
* :func:`decode_image` decodes one JPEG/PNG with Pillow and fits it to ``size × size``
  (``fit: center_crop`` — shorter side to ``size``, centre crop, as torchvision's
  ``Resize(size)`` + ``CenterCrop(size)``; ``fit: squash`` — plain resize).  For JPEGs Pillow's
  ``draft`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale when the target is that much smaller,
  which is what makes a first decode of 112k ChestX-ray14 PNGs/JPEGs bearable on a laptop.
* :class:`DecodeCache` decodes every image **once** into a memory-mapped uint8 file keyed by the
  image files (zip CRCs, or file sizes and mtimes) and the output geometry; a change to any of them
  gives a new key, and the stale file is removed.  Decoding JPEGs every epoch is what bounds the
  epoch time on a 2-core machine; the cache turns loading into a page-cache read.
* Missing, unreadable and corrupt images are named in one-line :class:`SSLBenchError` messages;
  ``skip_corrupt: true`` drops corrupt files instead, counts them and reports them (never silently).
* Hostile input is bounded before it costs anything: a file or zip member over :data:`MAX_FILE_BYTES`
  is not read, an image over Pillow's decompression-bomb limit is not decoded (DICOM included),
  ``data.size`` is at most :data:`MAX_SIZE`, and a folder is listed without following symlinks
  (each real file once; a link out of ``data.root`` refused; see :func:`_list_folder`).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Literal, Optional, Sequence

import numpy as np
import torch

from ssl_bench.data.base import DatasetSpec, DataSplits, ImageSet
from ssl_bench.errors import SSLBenchError

__all__ = [
    "MAX_FILE_BYTES", "resolve_root", "ImageStore", "to_uint8", "decode_image", "decode_all", "load_images",
    "group_codes", "ImageFiles", "assemble",
]

Fit = Literal["center_crop", "squash"]
# how images of more than 8 bits (16-bit PNG/TIFF, DICOM) become uint8: see :func:`to_uint8`
Window = Literal["percentile", "minmax", "full"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm")
CACHE_ENV = "SSL_BENCH_CACHE_DIR"
CACHE_VERSION = 2  # bump when decoding changes, so old caches are never reused (2: 16-bit windowing, DICOM)
MAX_FILE_BYTES = 1 << 30  # one image file (or zip member, CSV) larger than this is refused before it is read
MAX_SIZE = 4096  # the largest data.size: a 4096² RGB image is 48 MiB in the decode cache
STALE_TEMP_SECONDS = 600  # an unlocked temporary file of the decode cache older than this is an interrupted build's


def cache_root(cache_dir: Optional[str] = None) -> Path:
    """``cache_dir`` (recipe key ``data.cache_dir``), else ``$SSL_BENCH_CACHE_DIR``, else ``~/.cache/ssl-bench``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path("~/.cache/ssl-bench").expanduser()


def resolve_root(root: Optional[str], env: str, what: str, howto: str) -> Path:
    """The dataset root from the recipe (``data.root``) or ``$env``; a missing one says where to get it."""
    if not root and os.environ.get(env):
        root = os.environ[env]
    if not root:
        raise SSLBenchError(f"{what}: no data root (set recipe key data.root or ${env}); {howto}")
    p = Path(root).expanduser()
    if not p.exists():
        raise SSLBenchError(f"{what} not found at {p} (recipe key data.root or ${env}); {howto}")
    if p.is_file() and not zipfile.is_zipfile(p):
        raise SSLBenchError(f"{what}: data.root {p} is a file but not a .zip archive")
    return p


class ImageStore:
    """The files of one dataset, in a folder or in a .zip read in place."""

    def __init__(self, root: Path, log: Callable[[str], None] = print):
        self.root = Path(root)
        self.is_zip = self.root.is_file()
        if self.is_zip:
            try:
                self._zip = zipfile.ZipFile(self.root)
            except (zipfile.BadZipFile, OSError) as e:
                raise SSLBenchError(f"data.root {self.root} could not be opened as a zip: {e}") from e
            self._infos = _zip_members(self.root, self._zip)
            self.files = sorted(self._infos)
        else:
            self.files, links = _list_folder(self.root)
            if links:
                shown = ", ".join(links[:3]) + (f", … ({len(links)} in all)" if len(links) > 3 else "")
                log(f"data: {len(links)} symlink(s) under {self.root} point inside it and were not followed "
                    f"(what they point to is read once, under its own path): {shown}")
        self._by_name: Optional[dict[str, list[str]]] = None
        self._by_stem: Optional[dict[str, list[str]]] = None

    # -- lookup ---------------------------------------------------------------------------------
    def find(self, *names: str) -> Optional[str]:
        """The shallowest member whose file name is one of ``names`` (case-sensitive), or None."""
        if self._by_name is None:
            self._by_name = {}
            for f in self.files:
                self._by_name.setdefault(PurePosixPath(f).name, []).append(f)
        hits = [f for n in names for f in self._by_name.get(n, [])]
        return min(hits, key=lambda f: (f.count("/"), f)) if hits else None

    def glob(self, pattern: str) -> list[str]:
        """Members whose file name matches ``pattern`` (fnmatch), shallowest first."""
        import fnmatch

        hits = [f for f in self.files if fnmatch.fnmatch(PurePosixPath(f).name, pattern)]
        return sorted(hits, key=lambda f: (f.count("/"), f))

    def images(self, under: Optional[str] = None) -> list[str]:
        """Image members (by suffix), optionally only those under the folder ``under``."""
        pre = under.rstrip("/") + "/" if under else ""
        return [f for f in self.files if f.lower().endswith(IMAGE_SUFFIXES) and f.startswith(pre)]

    def by_stem(self) -> dict[str, list[str]]:
        """Image file stem (``ISIC_0024306``) → the member paths with that stem."""
        if self._by_stem is None:
            self._by_stem = {}
            for f in sorted(self.images(), key=lambda f: (f.count("/"), f)):
                self._by_stem.setdefault(PurePosixPath(f).stem, []).append(f)
        return self._by_stem

    def locate(self, ids: Sequence[str], listed_in: str) -> list[str]:
        """Member paths of the images ``ids`` (image ids, found by file name anywhere under the root);
        a missing image, or two files that both claim one image, is an error naming them."""
        stems = self.by_stem()
        out, missing = [], []
        for i in ids:
            i = str(i)
            stem = PurePosixPath(i).stem if "." in PurePosixPath(i).name else i
            hits = stems.get(stem, [])
            if len(hits) > 1:
                raise SSLBenchError(
                    f"image {i} listed in {listed_in} is claimed by two files in {self.root}: {hits[0]} and {hits[1]}; "
                    "remove or rename one"
                )
            if not hits:
                missing.append(i)
            out.append(hits[0] if hits else None)
        if missing:
            shown = ", ".join(missing[:5]) + (f", … ({len(missing)} in all)" if len(missing) > 5 else "")
            raise SSLBenchError(f"{len(missing)} image(s) listed in {listed_in} are missing from {self.root}: {shown}")
        return out

    def locate_paths(self, paths: Sequence[str], listed_in: str) -> list[str]:
        """Member paths of ``paths`` given relative to the root (a manifest's ``path`` column): each must
        be exactly there — no search elsewhere, no absolute path, nothing outside the root."""
        members = set(self.files)
        out = []
        for line, p in enumerate(paths, start=2):  # after the header
            norm = PurePosixPath(str(p).replace("\\", "/"))
            if norm.is_absolute() or _escapes(str(norm)):
                raise SSLBenchError(f"{listed_in} line {line}: path '{p}' is outside the data root {self.root} (give "
                                    "it relative to the root)")
            key = str(norm)
            if key not in members:
                raise SSLBenchError(f"{listed_in} line {line}: {key} not found under {self.root}")
            out.append(key)
        return out

    # -- reading --------------------------------------------------------------------------------
    def read(self, member: str) -> bytes:
        """The bytes of ``member``; a file larger than :data:`MAX_FILE_BYTES` (a zip member by its
        declared size, which zipfile enforces while inflating) is an error naming it, before it is read."""
        if self.is_zip:
            info = self._infos[member]
            _check_file_size(self.where(member), info.file_size)
            return self._zip.read(info)
        path = self.root / member
        with open(path, "rb") as f:
            _check_file_size(str(path), os.fstat(f.fileno()).st_size)
            return f.read()

    def where(self, member: str) -> str:
        """How to show ``member`` to the user: ``archive.zip:member`` or the full path."""
        return f"{self.root}:{member}" if self.is_zip else str(self.root / member)

    def read_csv(self, member: str, **kwargs):
        """A CSV member as a pandas DataFrame; an unreadable one is an error naming the file."""
        import pandas as pd

        try:
            return pd.read_csv(io.BytesIO(self.read(member)), **kwargs)
        except Exception as e:
            raise SSLBenchError(f"{self.where(member)} could not be read as CSV: {type(e).__name__}: {e}") from e

    def read_text(self, member: str) -> str:
        return self.read(member).decode("utf-8", errors="replace")

    def fingerprint(self, members: Sequence[str]) -> str:
        """A hash of the listed files' identity: CRC and size in a zip; size and mtime in a folder."""
        h = hashlib.sha1()
        for m in members:
            if self.is_zip:
                i = self._infos[m]
                h.update(f"{m}\0{i.file_size}\0{i.CRC}\n".encode())
            else:
                st = (self.root / m).stat()
                h.update(f"{m}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


def _zip_members(root: Path, zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The file members of an archive by name; a member outside the archive's root, or a name held by
    two members (zipfile would silently read the last), is an error naming it."""
    infos: dict[str, zipfile.ZipInfo] = {}
    for i in zf.infolist():
        if i.is_dir():
            continue
        if i.filename in infos:
            raise SSLBenchError(f"data.root {root}: two members are named '{i.filename}' (which one is the image is "
                                "ambiguous); remove one and rebuild the archive")
        infos[i.filename] = i
    escaping = [f for f in infos if _escapes(f)]
    if escaping:  # "../../ISIC_0024306.jpg" would shadow the real image of that name
        raise SSLBenchError(
            f"data.root {root}: member '{escaping[0]}' points outside the archive's root"
            f"{f' ({len(escaping)} such members)' if len(escaping) > 1 else ''}; refusing to read the archive"
        )
    return infos


def _list_folder(root: Path) -> tuple[list[str], list[str]]:
    """Every file under ``root`` as a sorted relative POSIX path, each real file and folder once; and
    the symlinks that were not followed.

    * A symlink (to a file or a folder) whose real path is inside ``root`` is not followed: what it
      points to is listed under its own path, so a link loop (``class0/up -> ..``) adds nothing and no
      image is listed twice (once under each name, possibly in train and in test).  A link to a file
      that is not listed itself (e.g. a dot file) is kept.
    * A symlink whose real path is outside ``root`` is **refused** (one line naming it): ``data.root``
      bounds what a dataset reads, as for manifest paths and zip members — point ``data.root`` at a
      folder that holds both.
    * Folders whose names start with "." are read like any other (torchvision's ImageFolder keeps
      them); files whose names start with "." are not (``.DS_Store``, macOS ``._name.jpg`` forks).
    * A folder that cannot be read is an error naming it (``os.walk`` would drop it silently), and so
      is a FIFO, socket or device (reading a FIFO would wait forever).
    """
    real_root = os.path.realpath(root)
    files: list[str] = []
    file_links: dict[str, str] = {}  # link → its target's path under the root
    skipped: list[str] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        folder = os.path.join(root, rel) if rel else str(root)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            raise SSLBenchError(f"folder {folder} under data.root cannot be read: {e.strerror or e}") from e
        for e in entries:
            path = f"{rel}/{e.name}" if rel else e.name
            if e.is_symlink():
                target = os.path.realpath(e.path)
                if os.path.commonpath([real_root, target]) != real_root:
                    raise SSLBenchError(f"{e.path} is a symlink to {target}, outside data.root {root}: refusing to "
                                        "read it (set data.root to a folder that holds both, or copy the files)")
                if os.path.isdir(target):
                    skipped.append(path)
                elif not e.name.startswith("."):
                    file_links[path] = Path(os.path.relpath(target, real_root)).as_posix()
            elif e.is_dir(follow_symlinks=False):
                stack.append(path)
            elif not e.is_file(follow_symlinks=False):  # reading a FIFO would wait forever
                raise SSLBenchError(f"{e.path} under data.root is neither a file nor a folder (a FIFO, socket or "
                                    "device); remove it")
            elif not e.name.startswith("."):
                files.append(path)
    listed = set(files)
    for link, target in sorted(file_links.items()):
        (skipped if target in listed else files).append(link)
        listed.add(target)
    return sorted(files), sorted(skipped)


def _check_file_size(where: str, size: int) -> None:
    if size > MAX_FILE_BYTES:
        raise SSLBenchError(f"{where} is {_mib(size)}, larger than any image this program reads "
                            f"({_mib(MAX_FILE_BYTES)}, ssl_bench.data.images.MAX_FILE_BYTES); remove it from data.root")


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**30:,.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:,.1f} MiB"


def _escapes(member: str) -> bool:
    """A path that is absolute or climbs above the root (``..``)."""
    p = PurePosixPath(member.replace("\\", "/"))
    if p.is_absolute() or member.startswith(("/", "\\")) or (len(member) > 1 and member[1] == ":"):
        return True
    depth = 0
    for part in p.parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return True
    return False


# -------------------------------------------------------------------------------------------------
# Decoding
# -------------------------------------------------------------------------------------------------
def to_uint8(arr: np.ndarray, window: Window = "percentile", bits: Optional[int] = None) -> np.ndarray:
    """A greyscale image of more than 8 bits → uint8, by the rule ``window`` (recipe key ``data.window``):

    * ``percentile`` (default): the 0.5th and 99.5th percentiles of the image → 0 and 255, clipped
      (robust to a few hot or dead pixels; what a radiologist's auto-window approximates);
    * ``minmax``: the image's minimum and maximum → 0 and 255;
    * ``full``: the full range of the stored bit depth (``bits``, else 16) → 0…255, the same mapping
      for every image (absolute intensities kept comparable).

    NaN and ±inf pixels (the no-data value of float TIFFs) take no part in the window and become 0;
    an image with no finite pixel is all 0.
    """
    a = arr.astype(np.float64)
    finite = None if arr.dtype.kind in "iub" else np.isfinite(a)
    if finite is not None and finite.all():
        finite = None
    values = a if finite is None else a[finite]
    if values.size == 0:
        return np.zeros(arr.shape, np.uint8)
    if window == "full":
        lo, hi = 0.0, float(2 ** (bits or 16) - 1)
    elif window == "minmax":
        lo, hi = float(values.min()), float(values.max())
    else:
        lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    out = np.clip(np.rint((a - lo) * (255.0 / (hi - lo))), 0, 255)
    if finite is not None:
        out[~finite] = 0
    return out.astype(np.uint8)


def check_pixels(width: int, height: int) -> None:
    """Pillow's decompression-bomb limit for decoders outside Pillow (DICOM): more than twice
    ``PIL.Image.MAX_IMAGE_PIXELS`` pixels raises ``DecompressionBombError`` (None: no limit)."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    pixels = max(1, width) * max(1, height)
    if limit is not None and pixels > 2 * limit:
        raise Image.DecompressionBombError(
            f"Image size ({pixels} pixels) exceeds limit of {2 * limit} pixels, could be decompression bomb DOS attack."
        )


def _decode_dicom(data: bytes, window: Window):
    """A DICOM file's pixels as an 8-bit Pillow image: the file's own VOI window (WindowCenter /
    WindowWidth or a VOI LUT) when it has one and ``window`` is the default, else :func:`to_uint8`;
    MONOCHROME1 (white = low values) is inverted so that every image reads bright-is-dense.  Only the
    first frame of a multi-frame file is decoded, and Rows × Columns is held to Pillow's
    decompression-bomb limit (:func:`check_pixels`) before it is."""
    from PIL import Image

    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array
    except ImportError:
        raise SSLBenchError("reading DICOM (.dcm) images needs pydicom: pip install pydicom") from None
    ds = pydicom.dcmread(io.BytesIO(data))
    check_pixels(int(ds.Columns), int(ds.Rows))  # before any pixel is decoded (Rows × Columns come from the header)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    px = pixel_array(ds, index=0) if frames > 1 else ds.pixel_array  # a multi-frame file: its first frame only
    if px.ndim == 3 and getattr(ds, "SamplesPerPixel", 1) == 1:
        px = px[0]
    if getattr(ds, "SamplesPerPixel", 1) == 3:
        return Image.fromarray(to_uint8(px, "minmax") if px.dtype != np.uint8 else px, "RGB")
    px = apply_modality_lut(px, ds)
    has_window = "WindowCenter" in ds or "VOILUTSequence" in ds
    if has_window and window == "percentile":
        px = apply_voi_lut(px, ds)
        out = to_uint8(np.asarray(px), "minmax")
    else:
        out = to_uint8(np.asarray(px), window, bits=getattr(ds, "BitsStored", None))
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        out = 255 - out
    return Image.fromarray(out, "L")


def decode_image(data: bytes, size: int, channels: int = 3, fit: Fit = "center_crop",
                 window: Window = "percentile") -> np.ndarray:
    """Decode JPEG/PNG/TIFF/DICOM bytes to uint8 ``[channels, size, size]``; raises on a corrupt file.
    Images of more than 8 bits are windowed to 8 by the rule ``window`` (:func:`to_uint8`).  An image
    of more pixels than Pillow's decompression-bomb limit (twice ``PIL.Image.MAX_IMAGE_PIXELS``, for
    every format, DICOM included) raises ``DecompressionBombError`` before it is decoded."""
    from PIL import Image, ImageOps

    mode = "RGB" if channels == 3 else "L"
    if data[128:132] == b"DICM":  # the DICOM preamble
        im = _decode_dicom(data, window)
    else:
        im = Image.open(io.BytesIO(data))
        if im.format == "JPEG":
            im.draft(mode, (size, size))  # DCT-domain downscale: decode at ≥ size, never below
        im.load()  # forces the full decode: truncated / corrupt data raises here
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / 32-bit greyscale (X-ray PNGs, TIFFs)
        arr = np.asarray(im)
        bits = 16 if im.mode.startswith("I;16") else None
        im = Image.fromarray(to_uint8(arr, window, bits=bits), "L")
    if im.mode != mode:
        im = im.convert(mode)
    if fit == "center_crop":
        im = ImageOps.fit(im, (size, size), Image.Resampling.BICUBIC)
    else:
        im = im.resize((size, size), Image.Resampling.BICUBIC)
    arr = np.array(im, dtype=np.uint8)  # a writable copy
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


@dataclass
class Decoded:
    """Images of a list of members plus the ones that could not be decoded."""

    images: torch.Tensor  # uint8 [N, C, S, S] (rows of corrupt files are zeros)
    corrupt: list[tuple[int, str, str]] = field(default_factory=list)  # (row, member, reason)
    cache_file: Optional[Path] = None
    built: bool = False  # decoded now (False: read from the cache)
    seconds: float = 0.0


def _progress(enabled: bool):
    """A rich progress bar (the first build of a cache can take minutes), or nothing."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn()
    )


def decode_all(
    store: ImageStore,
    members: Sequence[str],
    out: np.ndarray,
    size: int,
    channels: int,
    fit: Fit,
    workers: Optional[int] = None,
    progress: bool = True,
    description: str = "decoding images",
    window: Window = "percentile",
) -> list[tuple[int, str, str]]:
    """Decode ``members`` into the rows of ``out`` with a thread pool (Pillow releases the GIL while
    decoding and resizing); return the corrupt ones instead of raising."""
    corrupt: list[tuple[int, str, str]] = []
    workers = workers or min(8, os.cpu_count() or 1)

    def one(i: int) -> Optional[tuple[int, str, str]]:
        m = members[i]
        try:
            out[i] = decode_image(store.read(m), size, channels, fit, window)
        except SSLBenchError:
            raise  # a missing optional package, not a corrupt file
        except Exception as e:  # noqa: BLE001 — Pillow raises OSError, SyntaxError, ValueError, …
            out[i] = 0
            return i, m, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return None

    chunk = 256
    with _progress(progress and len(members) > 0) as prog:
        task = prog.add_task(description, total=len(members)) if prog else None
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(members), chunk):
                for r in pool.map(one, range(start, min(start + chunk, len(members)))):
                    if r is not None:
                        corrupt.append(r)
                if prog is not None:
                    prog.update(task, completed=min(start + chunk, len(members)))
    return corrupt


class DecodeCache:
    """Decode once into ``<cache_dir>/<tag>-<size>px-<fit>-<key>.u8`` (+ ``.json``), memory-map after.

    The key hashes the cache version, the member list and each member's identity
    (:meth:`ImageStore.fingerprint`), the size, channels and fit: changing, adding or removing an
    image gives a new key.  Files are written to a temporary name and renamed (the ``.json`` last),
    so an interrupted build is never mistaken for a finished one.

    The temporary file is allocated in full before anything is decoded into its memory map
    (``posix_fallocate``): a full disk is one line ("disk full at …") instead of a SIGBUS mid-build.
    A build holds an ``flock`` on its temporary file; the temporary files that no process holds and
    that are older than :data:`STALE_TEMP_SECONDS` are left by interrupted builds and are removed
    (:meth:`remove_stale_temps`), so two processes may build into one cache folder at once.
    """

    def __init__(self, cache_dir: Optional[str] = None):
        self.dir = cache_root(cache_dir)

    def path_for(self, store: ImageStore, members: Sequence[str], size: int, channels: int, fit: Fit, tag: str,
                 window: Window = "percentile") -> Path:
        root_key = hashlib.sha1(str(store.root.resolve()).encode()).hexdigest()[:8]
        h = hashlib.sha1(f"v{CACHE_VERSION}|{size}|{channels}|{fit}|{window}|{len(members)}|".encode())
        h.update(store.fingerprint(members).encode())
        return self.dir / f"{tag}-{root_key}-{size}px-{channels}c-{fit}-{h.hexdigest()[:16]}.u8"

    def load(
        self,
        store: ImageStore,
        members: Sequence[str],
        size: int,
        channels: int,
        fit: Fit,
        tag: str,
        workers: Optional[int] = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
        window: Window = "percentile",
    ) -> Decoded:
        path = self.path_for(store, members, size, channels, fit, tag, window)
        meta_path = path.with_suffix(".json")
        shape = (len(members), channels, size, size)
        self.remove_stale_temps(log)
        if path.is_file() and meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
                if tuple(meta["shape"]) == shape and path.stat().st_size == int(np.prod(shape)):
                    arr = np.memmap(path, dtype=np.uint8, mode="c", shape=shape)  # copy-on-write: never written back
                    return Decoded(torch.from_numpy(arr), [tuple(c) for c in meta["corrupt"]], path, built=False)
            except (OSError, ValueError, KeyError):
                pass  # unreadable cache: rebuild it below
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SSLBenchError(f"cannot create the decode cache folder {self.dir} (recipe key data.cache_dir or "
                                f"${CACHE_ENV}): {e}") from e
        t0 = time.perf_counter()
        tmp, lock = self._reserve(path, int(np.prod(shape)))
        try:
            arr = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=shape) if shape[0] else np.zeros(shape, np.uint8)
            corrupt = decode_all(
                store, members, arr, size, channels, fit, workers, progress,
                description=f"decoding {len(members)} images → cache ({size} px)", window=window,
            )
            if isinstance(arr, np.memmap):
                arr.flush()
            del arr
            os.replace(tmp, path)
        except BaseException as e:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise self._write_error(path, int(np.prod(shape)), e) from e
            raise
        finally:
            os.close(lock)
        from ssl_bench.runs import atomic_write_text

        atomic_write_text(meta_path, json.dumps({"shape": list(shape), "root": str(store.root), "corrupt": corrupt}))
        # the same dataset/geometry under an older key is stale now
        stem = path.name.rsplit("-", 1)[0]
        for old in self.dir.glob(f"{stem}-*"):
            if old.name not in (path.name, meta_path.name) and not old.name.startswith("."):
                old.unlink(missing_ok=True)
        dt = time.perf_counter() - t0
        log(f"data: decoded {len(members)} images in {dt:.1f} s into the cache {path}")
        arr = np.memmap(path, dtype=np.uint8, mode="c", shape=shape)
        return Decoded(torch.from_numpy(arr), [tuple(c) for c in corrupt], path, built=True, seconds=dt)


    def _reserve(self, path: Path, nbytes: int) -> tuple[str, int]:
        """A temporary file beside ``path`` with ``nbytes`` allocated on disk, and a descriptor holding
        an ``flock`` on it (close it when the file is renamed or removed)."""
        from ssl_bench.runs import _umask_mode

        try:
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as e:
            raise self._write_error(path, nbytes, e) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a live build: remove_stale_temps of other processes leaves it alone
            os.fchmod(fd, _umask_mode())  # mkstemp makes 0600 files; a cache may be shared between users
            _allocate(fd, nbytes)
        except BaseException as e:
            os.close(fd)
            Path(tmp).unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise self._write_error(path, nbytes, e) from e
            raise
        return tmp, fd

    def _write_error(self, path: Path, nbytes: int, e: OSError) -> SSLBenchError:
        why = e.strerror or str(e)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return SSLBenchError(
                f"disk full at {self.dir}: the decode cache {path.name} needs {_mib(nbytes)} ({why}); free "
                f"space there, or point recipe key data.cache_dir (or ${CACHE_ENV}) at a larger disk"
            )
        return SSLBenchError(f"cannot write the decode cache {path} ({_mib(nbytes)}): {why} "
                             f"(recipe key data.cache_dir or ${CACHE_ENV})")

    def remove_stale_temps(self, log: Callable[[str], None] = print) -> list[Path]:
        """Delete the temporary files of interrupted builds: ``.*.tmp`` files of the cache folder older
        than :data:`STALE_TEMP_SECONDS` that no process holds an ``flock`` on (a build holds one on its
        file until it renames it; the kernel drops it when the builder dies, ``kill -9`` included).
        The age guards the instant between a build creating its file and locking it."""
        removed: list[Path] = []
        now = time.time()
        for p in sorted(self.dir.glob(".*.tmp")) if self.dir.is_dir() else []:
            try:
                st = p.stat()
                if now - st.st_mtime < STALE_TEMP_SECONDS:
                    continue
                fd = os.open(p, os.O_RDONLY)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while a build holds it
                    p.unlink()
                    removed.append(p)
                finally:
                    os.close(fd)
            except OSError:
                continue  # held by a live build, gone meanwhile, or not ours to remove
        if removed:
            log(f"data: removed {len(removed)} temporary file(s) of interrupted decode-cache builds from {self.dir}")
        return removed


def _allocate(fd: int, nbytes: int) -> None:
    """Allocate ``nbytes`` of disk to the file ``fd`` (raises OSError ENOSPC when they are not there):
    ``posix_fallocate``, else, where the file system or platform has none, written zeros."""
    if nbytes <= 0:
        return
    try:
        os.posix_fallocate(fd, 0, nbytes)
        return
    except AttributeError:  # no posix_fallocate (macOS)
        pass
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    block = bytes(1 << 24)
    for start in range(0, nbytes, len(block)):
        os.pwrite(fd, block[: min(len(block), nbytes - start)], start)


def check_size(size: int, key: str = "data") -> None:
    """``data.size`` in [8, :data:`MAX_SIZE`] (a size of 100000 would ask for a 30 GB cache per image)."""
    if not 8 <= size <= MAX_SIZE:
        raise SSLBenchError(f"recipe key {key}.size must be between 8 and {MAX_SIZE} pixels, got {size}")


def load_images(
    store: ImageStore,
    members: Sequence[str],
    size: int,
    channels: int = 3,
    fit: Fit = "center_crop",
    cache: bool = True,
    cache_dir: Optional[str] = None,
    tag: str = "images",
    workers: Optional[int] = None,
    progress: Optional[bool] = None,
    log: Callable[[str], None] = print,
    window: Window = "percentile",
) -> Decoded:
    """Decode ``members`` at ``size`` px, through the :class:`DecodeCache` unless ``cache`` is False."""
    check_size(size)
    if channels not in (1, 3):
        raise SSLBenchError(f"recipe key data.channels must be 1 or 3, got {channels}")
    progress = sys.stderr.isatty() if progress is None else progress
    if cache:
        return DecodeCache(cache_dir).load(store, members, size, channels, fit, tag, workers, progress, log, window)
    t0 = time.perf_counter()
    arr = np.zeros((len(members), channels, size, size), np.uint8)
    corrupt = decode_all(store, members, arr, size, channels, fit, workers, progress, window=window)
    return Decoded(torch.from_numpy(arr), corrupt, None, built=True, seconds=time.perf_counter() - t0)


# -------------------------------------------------------------------------------------------------
# From tables to DataSplits (shared by the adapters)
# -------------------------------------------------------------------------------------------------
def group_codes(groups: Iterable, prefix: str = "") -> torch.Tensor:
    """Integer codes of group ids; a missing id (None / NaN / "") makes the image its own group."""
    vals = []
    for i, g in enumerate(groups):
        missing = g is None or (isinstance(g, float) and np.isnan(g)) or (isinstance(g, str) and not g.strip())
        vals.append(f"\0{prefix}{i}" if missing else str(g))
    _, codes = np.unique(np.asarray(vals, dtype=object).astype(str), return_inverse=True)
    return torch.from_numpy(codes.astype(np.int64).reshape(-1))


@dataclass
class ImageFiles(DatasetSpec):
    """The options of every adapter that decodes image files (declared once, inherited by each):
    where the files are (``root``: a folder or a .zip), the side they are decoded to (``size``) and
    how (``fit``), the decode cache (``cache``, ``cache_dir``), what to do with a corrupt image
    (``skip_corrupt``: drop and report it instead of stopping) and the decoding threads (``workers``).
    ``window``: how images of more than 8 bits (16-bit PNG/TIFF, DICOM) become 8-bit: percentile
    (0.5–99.5 % of each image → 0–255; a DICOM's own window when it has one), minmax, or full (the
    stored bit depth's range, the same for every image)."""

    root: Optional[str] = None
    size: int = 128
    fit: Fit = "center_crop"
    window: Window = "percentile"
    cache: bool = True
    cache_dir: Optional[str] = None
    skip_corrupt: bool = False
    workers: Optional[int] = None

    @staticmethod
    def validate_options(options: dict, key: str = "data") -> None:
        """Checks that need no file, run when a recipe is loaded (``ssl-bench show`` too): ``size``."""
        size = options.get("size")
        if isinstance(size, int) and not isinstance(size, bool):
            check_size(size, "data" if key == "dataset" else key)


def assemble(
    name: str,
    store: ImageStore,
    members: Sequence[str],
    labels: torch.Tensor,
    split: np.ndarray,
    task: str,
    class_names: list[str],
    groups: Optional[torch.Tensor],
    files: ImageFiles,
    *,
    channels: int = 3,
    tag: str = "images",
    log: Callable[[str], None] = print,
) -> DataSplits:
    """Decode the images (cached, with ``files``' decode options) and cut them into the named splits.

    The images are decoded in split order (train, val, test; each split's rows in their own order),
    so that each split is one contiguous slice of the memory-mapped cache: a view, not a copy, and
    what ``train.data_on: host`` keeps in host memory.  Corrupt images are an error listing them,
    unless ``skip_corrupt`` (then they are dropped, counted and reported, and the list is kept as
    ``DataSplits.skipped``).
    """
    split = np.asarray(split)
    order = np.concatenate([np.nonzero(split == s)[0] for s in ("train", "val", "test")])
    members, labels, split = [members[i] for i in order], labels[torch.from_numpy(order)], split[order]
    groups = None if groups is None else groups[torch.from_numpy(order)]
    dec = load_images(store, members, files.size, channels, files.fit, files.cache, files.cache_dir, tag, files.workers,
                      log=log, window=files.window)
    skip_corrupt = files.skip_corrupt
    keep = np.ones(len(members), dtype=bool)
    if dec.corrupt:
        shown = "; ".join(f"{store.where(m)} ({why})" for _, m, why in dec.corrupt[:3])
        more = f"; … ({len(dec.corrupt)} in all)" if len(dec.corrupt) > 3 else ""
        if not skip_corrupt:
            raise SSLBenchError(
                f"{len(dec.corrupt)} unreadable or corrupt image(s) in {store.root}: {shown}{more} "
                f"(fix or remove them, or set data.skip_corrupt: true to drop them)"
            )
        keep[[c[0] for c in dec.corrupt]] = False
        log(f"data: skipped {len(dec.corrupt)} corrupt image(s) (data.skip_corrupt: true): {shown}{more}")
    out, paths = {}, {}
    for s in ("train", "val", "test"):
        rows = np.nonzero((split == s) & keep)[0]
        if len(rows) == 0:
            if s == "val":
                continue
            raise SSLBenchError(f"dataset {name} has no images in its '{s}' split (check data.split_ratios)")
        contiguous = rows[-1] - rows[0] + 1 == len(rows)
        # a contiguous run of rows is a view of the (memory-mapped) decode; dropped corrupt rows: a copy
        images = dec.images[int(rows[0]) : int(rows[-1]) + 1] if contiguous else dec.images[torch.from_numpy(rows)]
        idx = torch.from_numpy(rows)
        out[s] = ImageSet(images, labels[idx], None if groups is None else groups[idx])
        paths[s] = [members[i] for i in rows]
    data = DataSplits(name=name, task=task, class_names=list(class_names), source=str(store.root), **out)
    # extras for users and tests: the file of every row, what was skipped, where the cache lives
    data.files = paths
    data.skipped = [m for _, m, _ in dec.corrupt] if skip_corrupt else []
    data.cache_file = dec.cache_file
    return data
