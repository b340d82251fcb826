"""The names of timm's architectures, without importing timm where that can be avoided.

``import timm`` takes 4 s on the project's 2-core machine (it imports torch, torchvision and every
model module), which is most of what ``ssl-bench show`` cost before a recipe's ``backbone.name``
could be checked.  The list is therefore kept in a small cache file per installed timm (its version
and the modification time of its model registry): the first command that needs it imports timm and
writes the file; later ones read it (2 ms).  A name the cache lacks is looked up in the live list
when timm is imported already (a plug-in that registers its own timm model imports timm itself).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

from ssl_bench.errors import SSLBenchError

__all__ = ["timm_models", "is_timm_model", "check_hub", "cache_file", "HUB_PREFIXES", "NO_DOWNLOAD"]

HUB_PREFIXES = ("hf-hub:", "hf_hub:", "timm/", "local-dir:")
NO_DOWNLOAD = ("ssl-bench never downloads weights: name the architecture (e.g. resnet18) and give a local file "
               "with backbone.weights: PATH (a timm .pth/.safetensors state dict or an ssl-bench run)")


def check_hub(name: object) -> None:
    """A model-hub name (``hf-hub:…``, ``timm/…``) is refused in one line: nothing is downloaded."""
    if isinstance(name, str) and name.startswith(HUB_PREFIXES):
        raise SSLBenchError(f"recipe key backbone.name '{name}' names a model hub entry; {NO_DOWNLOAD}")


def cache_file() -> Optional[Path]:
    """Where this timm's names are cached (beside the decode caches: ``$SSL_BENCH_CACHE_DIR``, else
    ``~/.cache/ssl-bench``), or None when timm is not installed."""
    spec = importlib.util.find_spec("timm")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        version = importlib.metadata.version("timm")
        stamp = int(os.stat(Path(next(iter(spec.submodule_search_locations))) / "models" / "_registry.py").st_mtime)
    except (importlib.metadata.PackageNotFoundError, OSError, StopIteration):
        return None
    root = os.environ.get("SSL_BENCH_CACHE_DIR") or "~/.cache/ssl-bench"
    return Path(root).expanduser() / f"timm-{version}-{stamp}-models.txt"


def _read(path: Path) -> Optional[tuple[str, ...]]:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    lines = text.split("\n")
    if len(lines) < 2 or lines[-1] != "" or lines[0] != "# timm.list_models()":  # a torn or foreign file
        return None
    names = tuple(lines[1:-1])
    return names if names and all(n and n.isprintable() and " " not in n for n in names) else None


def _write(path: Path, names: tuple[str, ...]) -> None:
    """Atomically (temp + rename); a cache that cannot be written is only slower, never an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".timm-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write("# timm.list_models()\n" + "".join(n + "\n" for n in names))
        os.replace(tmp, path)
    except (OSError, UnicodeEncodeError):
        try:
            os.unlink(tmp)
        except (OSError, UnboundLocalError):
            pass


@functools.lru_cache(maxsize=1)
def _cached() -> tuple[str, ...]:
    path = cache_file()
    names = _read(path) if path is not None else None
    if names is None:
        import timm

        names = tuple(timm.list_models())
        if path is not None:
            _write(path, names)
    return names


def timm_models() -> tuple[str, ...]:
    """Every timm architecture name (from the cache when timm is not imported yet)."""
    if "timm" in sys.modules:
        import timm

        return tuple(timm.list_models())
    return _cached()


def is_timm_model(name: object) -> bool:
    """Whether timm has an architecture of this name; a model-hub name is an error (:func:`check_hub`)."""
    check_hub(name)
    if not isinstance(name, str):
        return False
    if name in _cached():
        return True
    if "timm" in sys.modules:  # e.g. registered by a plug-in with timm's own @register_model
        import timm

        return name in timm.list_models()
    return False
