"""Run directories: ``recipe.yaml``, ``metrics.jsonl``, ``results.json``, ``checkpoints/``.

Nothing is ever overwritten: a new run gets a new directory (``os.mkdir`` is atomic, so two
processes never share one), ``--out DIR`` must be new or empty, and files are written through a
temporary file and an atomic rename so that a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch

from ssl_bench.errors import SSLBenchError

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"


def create_run_dir(out: Optional[str | Path], out_dir: str, name: str, seed: int) -> Path:
    """Make the run directory: ``out`` if given (must be new or empty), else
    ``out_dir/name/seed<seed>-<timestamp>`` with a numeric suffix if that exists."""
    if out is not None:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise SSLBenchError(f"run directory {path} already exists and is not empty; choose another --out")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(exist_ok=True)
        except OSError as e:
            raise SSLBenchError(f"cannot create run directory {path}: {e}") from e
        return path
    parent = Path(out_dir) / name
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = parent / (f"seed{seed}-{stamp}" + (f"-{i}" if i else ""))
        try:
            path.mkdir()  # atomic: fails if another process took the name
            return path
        except FileExistsError:
            continue
    raise SSLBenchError(f"could not find a free run directory name under {parent}")


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, _umask_mode())  # mkstemp makes 0600 files; runs are meant to be shared
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, _umask_mode())
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    return value


def append_metrics(run_dir: Path, record: dict) -> None:
    with open(Path(run_dir) / METRICS_FILE, "a") as f:
        f.write(json.dumps(_jsonable(record)) + "\n")
        f.flush()


def write_results(run_dir: Path, results: dict) -> None:
    atomic_write_text(Path(run_dir) / RESULTS_FILE, json.dumps(_jsonable(results), indent=2) + "\n")
