"""Run directories: ``recipe.yaml``, ``metrics.jsonl``, ``results.json``, ``checkpoints/``.

Nothing is ever overwritten: a new run gets a new directory (``os.mkdir`` is atomic, so two
processes never share one), ``--out DIR`` must be new or empty, and files are written through a
temporary file and an atomic rename so that a crash never leaves a half-written file behind.
A process holds an exclusive lock on its run directory while it writes there
(:func:`lock_run_dir`), so two ``ssl-bench run`` processes (say a run and its ``--resume``) never
write into the same directory.  A run that stopped on an error says so in ``status.json``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ssl_bench.errors import RunDirBusy, SSLBenchError

__all__ = [
    "RECIPE_FILE", "METRICS_FILE", "RESULTS_FILE", "CHECKPOINT_DIR", "LAST_CHECKPOINT", "EVAL_RESULTS_PREFIX",
    "eval_results_files", "PLACEMENT_KEYS", "is_recipe_ref", "flatten_recipe", "create_run_dir",
    "write_failed", "atomic_write_text", "atomic_write", "check_output", "torch_save_to_temp",
    "remove_stale_temps", "finite_float", "append_metrics", "append_line", "write_results", "read_status",
    "mark_failed", "clear_status", "RunLock", "lock_run_dir", "claim_run_dir", "peak_rss_mb", "provenance",
    "provenance_header",
]

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
STATUS_FILE = "status.json"
# `ssl-bench evaluate RUN`: results-evaluate-<time>.json beside results.json (names sort by time)
EVAL_RESULTS_PREFIX = "results-evaluate-"


def eval_results_files(run_dir: Path) -> list[Path]:
    """The ``ssl-bench evaluate`` results files of a run, oldest first."""
    return sorted(Path(run_dir).glob(f"{EVAL_RESULTS_PREFIX}*.json"))

# resolved-recipe keys that say where and how fast a run ran, not what it computed: they may differ
# between a run and its resumption, the seeds of one table cell, and a producer and its reuse
PLACEMENT_KEYS = frozenset(
    {"train.device", "train.threads", "train.checkpoint_every", "train.devices", "train.nodes", "train.data_on",
     "train.save_epochs", "train.knn_every", "log"}
)


RECIPE_SUFFIXES = (".yaml", ".yml")


def is_recipe_ref(value: Any) -> bool:
    """A recipe file named where a run is expected (``selector.checkpoint: recipes/isic/byol_isic.yaml``)."""
    return isinstance(value, str) and value.lower().endswith(RECIPE_SUFFIXES)


def flatten_recipe(cfg: dict, prefix: str = "") -> dict[str, str]:
    """Dotted key → JSON value of every leaf of a resolved recipe (to compare two recipes)."""
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(flatten_recipe(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True)
    return out



def create_run_dir(out: Optional[str | Path], out_dir: str, name: str, seed: int) -> Path:
    """Make the run directory: ``out`` if given (must be new or empty), else
    ``out_dir/name/seed<seed>-<timestamp>`` with a numeric suffix if that exists."""
    if out is not None:
        path = Path(out).expanduser()  # "~/runs" from a recipe or a quoted --out: the home folder, not a folder named ~
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise RunDirBusy(f"run directory {path} already exists and is not empty; choose another --out")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir(exist_ok=True)
        except OSError as e:
            raise SSLBenchError(f"cannot create run directory {path} (--out): {e.strerror or e}") from e
        return path
    parent = Path(out_dir).expanduser() / name
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SSLBenchError(f"cannot create run directories under {parent} (recipe key out_dir): "
                            f"{e.strerror or e}") from e
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = parent / (f"seed{seed}-{stamp}" + (f"-{i}" if i else ""))
        try:
            path.mkdir()  # atomic: fails if another process took the name
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise SSLBenchError(f"cannot create run directory {path} (recipe key out_dir): {e.strerror or e}") from e
    raise SSLBenchError(f"could not find a free run directory name under {parent}")


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _os_error(e: BaseException) -> Optional[OSError]:
    """The OSError behind ``e`` (torch's zip writer re-raises a failed write as a RuntimeError)."""
    while e is not None:
        if isinstance(e, OSError):
            return e
        e = e.__cause__ or e.__context__
    return None


def write_failed(path: Path, e: BaseException) -> SSLBenchError:
    """A write that failed for want of space (or a file-size limit): one line naming the file; the
    previous version of the file, if any, is left as it was."""
    err = _os_error(e)
    why = (err.strerror or str(err)) if err is not None else str(e)
    return SSLBenchError(f"cannot write {path}: {why} (nothing was replaced: the previous file, if any, is intact)")


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` of a text file."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write(path: Path, write: Callable[[Path], Any]) -> Path:
    """Write ``path`` through a temporary file beside it: ``write(tmp)`` fills ``.<name>.<random>.tmp``,
    which is fsync'ed and renamed over ``path``, so a crash or a full disk never leaves a half-written
    file.  A failed write is one line naming ``path``, the previous file (if any) left as it was.  The
    temporary name ends in ``.tmp``: a writer that picks its format from the suffix must be told it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_failed(path, e) from e
    os.close(fd)
    os.chmod(tmp, _umask_mode())  # mkstemp makes 0600 files; outputs are meant to be shared
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the rename must never publish a file the disk has not got yet
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if _os_error(e) is not None:
            raise write_failed(path, e) from e
        raise
    return path


# what a run directory owns (``ssl-bench run`` / ``evaluate`` write them): no output command writes
# these names in a run directory, not even with --force
RUN_OWNED = (RECIPE_FILE, METRICS_FILE, "steps.jsonl", STATUS_FILE, "loss.png", "results*.json", CHECKPOINT_DIR, "logs")
RUN_MARKERS = (RECIPE_FILE, RESULTS_FILE, METRICS_FILE, STATUS_FILE, CHECKPOINT_DIR)  # a folder holding one is a run


def run_owner(path: str | Path) -> Optional[tuple[Path, str]]:
    """(run directory, its own file or folder) when ``path`` is, or lies in, a file a run directory
    owns (:data:`RUN_OWNED`; symbolic links followed), else None."""
    import fnmatch

    absolute = Path(os.path.abspath(path))
    for p in dict.fromkeys([absolute, absolute.resolve()]):
        for folder in p.parents:
            first = p.relative_to(folder).parts[0]
            owned = any(fnmatch.fnmatch(first, name) for name in RUN_OWNED)
            if owned and any((folder / m).exists() for m in RUN_MARKERS):
                return folder, first
    return None


def check_output(path: str | Path, option: str, force: bool = False) -> Path:
    """An output file a command is about to write: refused (one line naming ``option``) when it is a
    run directory's own file (even with ``force``), a folder, or exists and ``force`` is not given."""
    p = Path(path)
    owner = run_owner(p)
    if owner is not None:
        state = "already exists and is" if p.exists() else "would be"
        raise SSLBenchError(f"{option} {path} {state} a file of run {owner[0]} ({owner[1]}); choose a file outside "
                            "the run's own files (--force never replaces them)")
    if p.is_dir():
        raise SSLBenchError(f"{option} {path} is a folder; give a file name")
    if (p.exists() or p.is_symlink()) and not force:
        raise SSLBenchError(f"{option} {path} already exists; choose another file or pass --force to overwrite it")
    return p


def torch_save_to_temp(obj: Any, path: Path) -> str:
    """``torch.save`` into a complete, fsync'ed temporary file next to ``path``; return its name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_failed(path, e) from e
    os.chmod(tmp, _umask_mode())
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())  # the rename must never publish a file the disk has not got yet
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if _os_error(e) is not None:
            raise write_failed(path, e) from None
        raise
    return tmp


def remove_stale_temps(run_dir: Path) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files a killed process left behind (our atomic writers' temporary
    files, never a published file).  Call with the run directory locked: no writer is alive."""
    run_dir = Path(run_dir)
    stale = [p for d in (run_dir, run_dir / CHECKPOINT_DIR) if d.is_dir() for p in d.glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def finite_float(value: Any) -> Optional[float]:
    """``value`` as a float when it is a finite number (not a bool, not an integer beyond a float), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


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
    """One JSON line; a line the disk could not take is cut off again (the file stays whole lines)."""
    append_line(Path(run_dir) / METRICS_FILE, json.dumps(_jsonable(record)) + "\n")


def append_line(path: Path, text: str) -> None:
    """Append one whole line to ``path``; a line the disk could not take is cut off again."""
    line = text.encode()
    try:
        with open(path, "ab", buffering=0) as f:
            end = f.seek(0, os.SEEK_END)
            try:
                if f.write(line) != len(line):  # a short write: the disk took part of the line
                    raise OSError(28, os.strerror(28))
            except OSError:
                f.truncate(end)
                raise
    except OSError as e:
        raise write_failed(path, e) from e


def write_results(run_dir: Path, results: dict) -> None:
    atomic_write_text(Path(run_dir) / RESULTS_FILE, json.dumps(_jsonable(results), indent=2) + "\n")


def read_status(run_dir: Path) -> dict:
    """``status.json`` of a run (``{"status": "failed", "reason": …}``), or {} when there is none."""
    path = Path(run_dir) / STATUS_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {"status": "failed", "reason": f"unreadable {STATUS_FILE}"}


def mark_failed(run_dir: Path, reason: str, **info: Any) -> None:
    """Mark a run failed: ``compare`` and ``--resume`` then leave it alone."""
    atomic_write_text(Path(run_dir) / STATUS_FILE,
                      json.dumps(_jsonable({"status": "failed", "reason": reason, **info}), indent=2) + "\n")


def clear_status(run_dir: Path) -> None:
    (Path(run_dir) / STATUS_FILE).unlink(missing_ok=True)


class RunLock:
    """An exclusive ``flock`` on the run directory itself (no lock file is left behind).  The
    kernel drops it when the process ends, even by SIGKILL, so a killed run can be resumed at once."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._fd: Optional[int] = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: atomic mkdir is the only guard
            return
        fd = os.open(self.run_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirBusy(f"run directory {self.run_dir} is in use by another ssl-bench process") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_run_dir(run_dir: Path) -> RunLock:
    return RunLock(run_dir)


def claim_run_dir(out: Optional[str | Path], out_dir: str, name: str, seed: int) -> tuple[Path, RunLock]:
    """:func:`create_run_dir`, locked; ``--out DIR`` is checked to be empty again under the lock
    (two processes given the same new ``--out`` may both have created it)."""
    path = create_run_dir(out, out_dir, name, seed)
    lock = lock_run_dir(path)
    if any(path.iterdir()):
        lock.release()
        raise RunDirBusy(f"run directory {path} already exists and is not empty; choose another --out")
    return path, lock


def peak_rss_mb() -> Optional[float]:
    """Peak resident memory of this process so far, in MiB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def _git_commit(where: Optional[Path]) -> Optional[dict]:
    """The git commit (and whether the checkout has uncommitted changes) of the folder ``where``."""
    import subprocess

    if where is None:
        return None
    try:
        kw = dict(cwd=str(where), capture_output=True, text=True, timeout=5)
        head = subprocess.run(["git", "rev-parse", "HEAD"], **kw)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **kw)
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(device=None, recipe_path: Optional[Path] = None) -> dict:
    """What re-running a result needs to know: package versions, the git commit of the code and of
    the recipe's checkout, the device, the command line (``results.json["provenance"]``)."""
    import importlib.metadata as md
    import platform
    import sys

    versions = {"python": platform.python_version()}
    for pkg in ("ssl-bench", "torch", "timm", "lightly", "lightning-fabric", "numpy", "scikit-learn"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    dev_name = platform.processor() or platform.machine()
    if device is not None and getattr(device, "type", None) == "cuda":
        import torch

        dev_name = torch.cuda.get_device_name(device)
    code = _git_commit(Path(__file__).resolve().parent)
    recipe_git = _git_commit(Path(recipe_path).resolve().parent) if recipe_path is not None else None
    return {
        "versions": versions,
        "code_git": code,
        "recipe_git": recipe_git,
        "recipe_file": str(recipe_path) if recipe_path is not None else None,
        "device": str(device) if device is not None else None,
        "device_name": dev_name,
        "platform": platform.platform(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
    }


def provenance_header(recipe_path: Optional[Path] = None) -> str:
    """Comment lines that head ``recipe.yaml``: versions, git commit, command (YAML ignores them)."""
    p = provenance(None, recipe_path)
    v = ", ".join(f"{k} {val}" for k, val in p["versions"].items() if val)
    lines = [f"# written by ssl-bench: {v}"]
    git = p["recipe_git"] or p["code_git"]
    if git:
        lines.append(f"# git commit {git['commit']}{' (with uncommitted changes)' if git['dirty'] else ''}")
    cmd = " ".join(p["command"]).replace("\n", " ")
    lines.append(f"# command: {cmd[:500]}")
    return "\n".join(lines) + "\n"
