"""Checkpoints a run can be resumed from, bit for bit.

``ssl-bench run … --resume [RUN_DIR]`` continues a run from ``RUN_DIR/checkpoints/last.pt``: the
objective (online *and* EMA target networks, BatchNorm statistics), the optimiser (momentum
buffers), the step that the LR and EMA schedules are computed from, the selector's state (memory
banks, its own generators), and every random number generator the loop draws from — torch's,
numpy's and Python's global ones and the data/augmentation/selector generators.  Checkpoints are
written at epoch boundaries; an epoch that was interrupted is done again from its start, with the
same random numbers, so on CPU a killed and resumed run ends with the same weights and metrics as
an uninterrupted one.

A checkpoint holds only tensors and plain Python values, so it loads with
``torch.load(weights_only=True)`` (no pickled code runs when a checkpoint is read).  Writing goes
through a temporary file, ``fsync`` and a rename; the checkpoint it replaces is kept as
``previous.pt``, so a checkpoint found truncated or corrupt when a run is resumed is reported
(one line, naming the file) and the one before it is still there.
"""

from __future__ import annotations

import json
import os
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ssl_bench import runs
from ssl_bench.errors import SSLBenchError

__all__ = [
    "PREVIOUS_CHECKPOINT", "rng_state", "set_rng_state", "save", "epoch_path", "save_epoch", "read", "load",
    "check_rng_state", "ResumePoint", "find_run_dir", "open_run", "restore_modules", "truncate_metrics",
]

PREVIOUS_CHECKPOINT = "previous.pt"
FORMAT_VERSION = 1
# recipe keys that may change when a run is resumed: they do not change what is computed
RESUME_MAY_CHANGE = runs.PLACEMENT_KEYS


# -------------------------------------------------------------------------------------------------
# Random number generators
# -------------------------------------------------------------------------------------------------
def rng_state(generators: dict[str, torch.Generator]) -> dict:
    """The state of every generator the loop draws from, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
        "generators": {k: g.get_state() for k, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for k, g in generators.items():
        g.set_state(state["generators"][k])


# -------------------------------------------------------------------------------------------------
# Writing and reading
# -------------------------------------------------------------------------------------------------
def save(run_dir: Path, state: dict) -> Path:
    """Write ``state`` as ``checkpoints/last.pt``; the checkpoint it replaces becomes ``previous.pt``.

    ``last.pt`` is only ever replaced by a rename of a complete, fsync'ed file.
    """
    folder = Path(run_dir) / runs.CHECKPOINT_DIR
    last = folder / runs.LAST_CHECKPOINT
    state = {"format": FORMAT_VERSION, **state}
    tmp = runs.torch_save_to_temp(state, last)
    try:
        if last.exists():
            # hard link, then rename: last.pt exists at every moment (rename if links are unsupported)
            prev_tmp = folder / f".{PREVIOUS_CHECKPOINT}.tmp"
            prev_tmp.unlink(missing_ok=True)
            try:
                os.link(last, prev_tmp)
                os.replace(prev_tmp, folder / PREVIOUS_CHECKPOINT)
            except OSError:
                os.replace(last, folder / PREVIOUS_CHECKPOINT)
        os.replace(tmp, last)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return last


def epoch_path(run_dir: Path, epoch: int) -> Path:
    """Where ``train.save_epochs`` keeps the network of ``epoch``: ``checkpoints/epochNNNN.pt``."""
    return Path(run_dir) / runs.CHECKPOINT_DIR / f"epoch{epoch:04d}.pt"


def save_epoch(run_dir: Path, epoch: int, state: dict) -> Path:
    """Keep one epoch's network (what :func:`ssl_bench.run_loader.load_run` reads: objective weights,
    normalisation, recipe, epoch, and that epoch's last learning rate ``lr`` for TracInCP)."""
    path = epoch_path(run_dir, epoch)
    tmp = runs.torch_save_to_temp({"format": FORMAT_VERSION, **state}, path)
    os.replace(tmp, path)
    return path


def read(path: Path, key: Optional[str] = None) -> dict:
    """Read a checkpoint's tensors and plain values with ``weights_only=True`` (no pickled code runs);
    a truncated or corrupt file is a one-line error.  Needs the network (``objective``) only."""
    path = Path(path)
    where = f" (recipe key {key})" if key and key.startswith(("selector", "backbone")) else (f" ({key})" if key else "")
    if not path.is_file():
        raise SSLBenchError(f"checkpoint not found: {path}{where}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e).lower():  # a pickle that would run code
            raise SSLBenchError(
                f"checkpoint {path}{where} holds objects other than tensors and plain values (e.g. pickled code); "
                "it was not loaded (ssl-bench reads checkpoints with weights_only)"
            ) from None
        raise SSLBenchError(f"checkpoint {path}{where} is truncated or corrupt (UnpicklingError: "
                            f"{str(e).splitlines()[0][:200] if str(e) else ''})") from e
    except Exception as e:
        prev = path.with_name(PREVIOUS_CHECKPOINT)
        hint = (
            f"; the previous checkpoint is kept: resume from it with --resume {prev}"
            if path.name != PREVIOUS_CHECKPOINT and prev.is_file() else ""
        )
        first = str(e).splitlines()[0] if str(e) else ""
        raise SSLBenchError(f"checkpoint {path}{where} is truncated or corrupt ({type(e).__name__}: "
                            f"{first[:200]}){hint}") from e
    if not isinstance(state, dict) or "objective" not in state or "recipe" not in state:
        raise SSLBenchError(f"checkpoint {path}{where} is not an ssl-bench training checkpoint")
    return state


def load(path: Path) -> dict:
    """:func:`read` a checkpoint that a run can be resumed from (epoch, optimiser and RNG states)."""
    path = Path(path)
    state = read(path)
    if "epoch" not in state:
        raise SSLBenchError(f"checkpoint {path} is not an ssl-bench training checkpoint")
    if "optimizer" not in state or "rng" not in state:
        raise SSLBenchError(f"checkpoint {path} has no optimiser/RNG state (written by an older ssl-bench); it cannot "
                            "be resumed")
    for key in ("epoch", "step"):
        if not isinstance(state.get(key), int) or isinstance(state.get(key), bool) or state[key] < 0:
            raise SSLBenchError(f"checkpoint {path}: '{key}' is {state.get(key)!r}, not a count; it cannot be resumed")
    return state


def check_rng_state(start: "ResumePoint", generators: dict[str, torch.Generator]) -> None:
    """Set the checkpoint's random-number states on throwaway generators (and put the process's own
    back): a damaged state is one line before the run directory is touched, not an error after."""
    saved = rng_state(generators)
    try:
        set_rng_state(start.state["rng"], {k: torch.Generator(device=g.device) for k, g in generators.items()})
    except Exception as e:  # any shape of damage: wrong types, sizes, missing keys
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise SSLBenchError(f"checkpoint {start.path}: its random-number state is damaged ({type(e).__name__}: "
                            f"{first[:160]}); it cannot be resumed bit-exactly — resume from checkpoints/previous.pt "
                            "or start again") from e
    finally:
        set_rng_state(saved, generators)


# -------------------------------------------------------------------------------------------------
# Resuming
# -------------------------------------------------------------------------------------------------
@dataclass
class ResumePoint:
    """Where a resumed run starts: its directory, checkpoint file and loaded state."""

    run_dir: Path
    path: Path
    state: dict

    @property
    def epoch(self) -> int:
        return int(self.state["epoch"])

    @property
    def step(self) -> int:
        return int(self.state["step"])


def find_run_dir(resume: str, out: Optional[str | Path], out_dir: str, name: str) -> tuple[Path, Optional[Path]]:
    """The run directory (and checkpoint file, if one was named) that ``--resume [VALUE]`` means.

    VALUE may be a run directory or a checkpoint file in one; empty means ``--out`` if given, else
    the newest unfinished run of this recipe under ``out_dir/name``.
    """
    out = Path(out).expanduser() if out is not None else None
    if resume:
        p = Path(resume).expanduser()
        if p.is_file():
            if p.parent.name != runs.CHECKPOINT_DIR:
                raise SSLBenchError(f"--resume {p}: a checkpoint must be in a run directory's {runs.CHECKPOINT_DIR}/ "
                                    "folder")
            run_dir, ckpt = p.parent.parent, p
        elif p.is_dir():
            run_dir, ckpt = p, None
        else:
            raise SSLBenchError(f"--resume {p}: no such run directory")
        if out is not None and Path(out).resolve() != run_dir.resolve():
            raise SSLBenchError(f"--resume {p} and --out {out} name different run directories")
        return run_dir, ckpt
    if out is not None:
        if not Path(out).is_dir():
            raise SSLBenchError(f"--resume with --out {out}: no such run directory")
        return Path(out), None
    parent = Path(out_dir).expanduser() / name
    candidates = [
        d for d in (parent.iterdir() if parent.is_dir() else [])
        if d.is_dir() and not (d / runs.RESULTS_FILE).exists() and runs.read_status(d).get("resumable", True)
        and any((d / runs.CHECKPOINT_DIR / f).is_file() for f in (runs.LAST_CHECKPOINT, PREVIOUS_CHECKPOINT))
    ]
    if not candidates:
        raise SSLBenchError(f"no unfinished run of recipe '{name}' with a checkpoint under {parent}; name it: --resume "
                            "RUN_DIR")
    return max(candidates, key=lambda d: (d / runs.CHECKPOINT_DIR).stat().st_mtime), None


def open_run(run_dir: Path, cfg: dict, checkpoint: Optional[Path] = None,
             train_defaults: Optional[dict] = None) -> ResumePoint:
    """Check that ``run_dir`` can be resumed with recipe ``cfg`` and load its checkpoint.  ``train_defaults``:
    the value of every ``train`` option (``TrainConfig``'s defaults) for a run saved before the option existed.

    Writes nothing: every problem is found before the run directory is touched.
    """
    run_dir = Path(run_dir)
    if (run_dir / runs.RESULTS_FILE).exists():
        raise SSLBenchError(f"run {run_dir} already finished ({runs.RESULTS_FILE} exists); nothing to resume")
    status = runs.read_status(run_dir)
    if status.get("status") == "failed" and not status.get("resumable", False):
        raise SSLBenchError(
            f"run {run_dir} failed ({status.get('reason', 'unknown reason')}); resuming the same recipe would repeat "
            "it — start a new run"
        )
    folder = run_dir / runs.CHECKPOINT_DIR
    if checkpoint is None:
        checkpoint = folder / runs.LAST_CHECKPOINT
        if not checkpoint.is_file() and (folder / PREVIOUS_CHECKPOINT).is_file():
            checkpoint = folder / PREVIOUS_CHECKPOINT  # killed between the two renames of save()
        if not checkpoint.is_file():
            raise SSLBenchError(f"run {run_dir} has no checkpoint to resume from (it stopped before its first one: "
                                "start it again)")
    state = load(checkpoint)
    saved = state.get("recipe") or {}
    # a train option added since the run started: its default
    if train_defaults and isinstance(saved.get("train"), dict):
        saved = {**saved, "train": {**train_defaults, **saved["train"]}}
    a, b = runs.flatten_recipe(saved), runs.flatten_recipe(cfg)
    differing = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in RESUME_MAY_CHANGE)
    if differing:
        shown = ", ".join(differing[:5]) + (" …" if len(differing) > 5 else "")
        raise SSLBenchError(f"cannot resume {run_dir}: the recipe differs from the run's in {shown} (only "
                            f"{', '.join(sorted(RESUME_MAY_CHANGE))} may change)")
    return ResumePoint(run_dir, checkpoint, state)


def restore_modules(start: ResumePoint, objective: torch.nn.Module, optimizer: torch.optim.Optimizer, selector) -> None:
    """Load the checkpoint's objective (online and target networks), optimiser and selector state
    into the freshly built ones (already on the training device)."""
    try:
        objective.load_state_dict(start.state["objective"])
        optimizer.load_state_dict(start.state["optimizer"])
        selector.load_state_dict(start.state["selector"])
    except (RuntimeError, KeyError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise SSLBenchError(f"checkpoint {start.path} does not fit this recipe's model: {type(e).__name__}: "
                            f"{first[:200]}") from e


def truncate_metrics(run_dir: Path, epoch: int) -> Optional[dict]:
    """Drop metric records after ``epoch`` (the redone epochs) and a half-written last line;
    return the last record kept (None if none)."""
    path = Path(run_dir) / runs.METRICS_FILE
    if not path.is_file():
        return None
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut by the kill: nothing after it was written
        if rec.get("epoch", 0) <= epoch:
            kept.append(line)
    runs.atomic_write_text(path, "".join(x + "\n" for x in kept))
    return json.loads(kept[-1]) if kept else None
