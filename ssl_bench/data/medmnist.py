"""MedMNIST v2 (Yang et al., Scientific Data 2023; arXiv 2110.14795) through the ``medmnist`` package.

Every 2-D MedMNIST dataset at sizes 28, 64, 128 and 224.  Files are looked up in ``root`` (recipe),
else ``$SSL_BENCH_MEDMNIST_ROOT``, else medmnist's default ``~/.medmnist``; a missing file is
downloaded by medmnist (with its checksum) when ``download: true``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ssl_bench.data.base import DATASETS, DataSplits, ImageSet
from ssl_bench.errors import SSLBenchError

__all__ = ["medmnist_dataset", "medmnist_info"]

ROOT_ENV = "SSL_BENCH_MEDMNIST_ROOT"
SIZES = (28, 64, 128, 224)


def medmnist_root(root: Optional[str] = None) -> Path:
    if root:
        return Path(root).expanduser()
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).expanduser()
    return Path("~/.medmnist").expanduser()


def _task(info_task: str) -> str:
    if info_task.startswith("multi-label"):
        return "multi-label"
    return info_task  # binary-class, multi-class, ordinal-regression


@functools.lru_cache(maxsize=1)
def medmnist_info() -> dict:
    """medmnist's table of datasets (``medmnist.INFO``), read from its self-contained ``info.py`` without
    importing the package, whose ``__init__`` imports its evaluator (scikit-learn and pandas: 1.5 s of
    every ``ssl-bench show`` of a recipe that names a MedMNIST set)."""
    if "medmnist" not in sys.modules:
        spec = importlib.util.find_spec("medmnist")
        info = Path(next(iter(spec.submodule_search_locations or ()), "")) / "info.py" if spec else None
        if info is not None and info.is_file():
            loaded = importlib.util.spec_from_file_location("_ssl_bench_medmnist_info", info)
            module = importlib.util.module_from_spec(loaded)
            loaded.loader.exec_module(module)
            if isinstance(getattr(module, "INFO", None), dict):
                return module.INFO
    from medmnist import INFO

    return INFO


def _check_options(options: dict, key: str = "data") -> None:
    """The flag and size, checked when the recipe is loaded (``show`` as ``run``), before any file is read."""
    INFO = medmnist_info()

    key = "data" if key == "dataset" else key  # built outside a recipe: name the recipe block anyway
    flag = str(options.get("flag", "")).lower()
    if "flag" in options and flag not in INFO:
        import difflib

        close = difflib.get_close_matches(flag, list(INFO), n=2)
        hint = f" — did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise SSLBenchError(f"unknown MedMNIST flag '{flag}' (recipe key {key}.flag){hint}")
    if flag.endswith("3d"):
        raise SSLBenchError(f"{key}.flag '{flag}' is a 3-D MedMNIST dataset; the medmnist adapter loads 2-D ones")
    size = options.get("size", 28)
    if size not in SIZES:
        raise SSLBenchError(f"recipe key {key}.size must be one of {SIZES} for MedMNIST, got {size}")


@DATASETS.register("medmnist")
def medmnist_dataset(
    flag: str, size: int = 28, root: Optional[str] = None, download: bool = True, as_rgb: bool = False
) -> DataSplits:
    """Any 2-D MedMNIST v2 dataset (breastmnist, pneumoniamnist, retinamnist, ...) at 28/64/128/224 px."""
    import medmnist
    from medmnist import INFO

    flag = flag.lower()
    _check_options({"flag": flag, "size": size})
    info = INFO[flag]
    base = medmnist_root(root)
    fname = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
    path = base / fname
    if not path.is_file():
        if not download:
            raise SSLBenchError(
                f"MedMNIST file not found: {path} (set data.root or ${ROOT_ENV}, or data.download: true)"
            )
        base.mkdir(parents=True, exist_ok=True)
        try:
            cls = getattr(medmnist, info["python_class"])
            cls(split="train", root=str(base), download=True, size=size)
        except Exception as e:
            raise SSLBenchError(f"could not download MedMNIST '{flag}' ({size} px) into {base}: {e}") from e
    try:
        npz = np.load(path, allow_pickle=False)
        arrays = {k: npz[k] for k in npz.files}
    except Exception as e:
        raise SSLBenchError(f"MedMNIST file {path} could not be read: {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}") from e
    for split in ("train", "val", "test"):
        for part in ("images", "labels"):
            if f"{split}_{part}" not in arrays:
                raise SSLBenchError(f"MedMNIST file {path} has no array '{split}_{part}' (arrays: "
                                    f"{', '.join(sorted(arrays)) or 'none'})")
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise SSLBenchError(f"MedMNIST file {path}: {split}_images has {n_img} images but {split}_labels {n_lab} "
                                "labels")
        if arrays[f"{split}_images"].dtype != np.uint8 or arrays[f"{split}_images"].ndim not in (3, 4):
            raise SSLBenchError(f"MedMNIST file {path}: {split}_images must be uint8 [N, H, W] or [N, H, W, 3], "
                                f"got {arrays[f'{split}_images'].dtype} {arrays[f'{split}_images'].shape}")

    task = _task(info["task"])
    splits = {}
    for split in ("train", "val", "test"):
        imgs = arrays[f"{split}_images"]
        if imgs.ndim == 3:
            imgs = imgs[:, None]  # grayscale: [N,1,H,W]
        else:
            imgs = imgs.transpose(0, 3, 1, 2)  # RGB: [N,3,H,W]
        images = torch.from_numpy(np.ascontiguousarray(imgs))
        if as_rgb and images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1).contiguous()
        lab = arrays[f"{split}_labels"]
        labels = (
            torch.from_numpy(lab.astype(np.float32)) if task == "multi-label"
            else torch.from_numpy(lab.reshape(-1).astype(np.int64))
        )
        splits[split] = ImageSet(images, labels)
    names = [info["label"][k] for k in sorted(info["label"], key=int)]
    pretty = info["python_class"]
    return DataSplits(name=pretty, task=task, class_names=names, source=str(path), **splits)


medmnist_dataset.validate_options = _check_options
