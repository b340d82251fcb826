"""Pretrained checkpoints named by the recipe that produces them.

A "pretrained" selector (BYOL-TracIn, arXiv 2306.00112: TracIn scored with a frozen vanilla BYOL
run of the same recipe) may name its checkpoint by recipe instead of by run directory::

    selector: {name: tracin, model: pretrained, checkpoint: recipes/isic/byol_isic.yaml}

``ssl-bench run`` then looks for a finished run of that recipe (``results.json`` and
``checkpoints/last.pt`` under ``<out_dir>/<name>/``) whose resolved recipe equals the producer's
(evaluations, device and threads aside), with the same ``--set`` overrides applied (except ``selector.*``, ``name`` and
``method``, which belong to the consumer).  When there is none it runs the producer first, and says so, so that the
flagship is one command.  The consumer's saved ``recipe.yaml`` records the run directory used.

Relative recipe paths are tried against the working directory, then the consuming recipe's folder
and its parents (as plug-in paths are).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Optional

from ssl_bench import runs, safeyaml
from ssl_bench.checkpoint import epoch_path
from ssl_bench.errors import SSLBenchError
from ssl_bench.runs import is_recipe_ref

__all__ = ["producer_overrides", "finished_runs", "resolve_pretrained", "checkpoint_of_recipe"]

# keys that never change what a run produces (where and how fast it ran)
IGNORED_TRAIN_KEYS = tuple(k.split(".", 1)[1] for k in runs.PLACEMENT_KEYS if k.startswith("train."))
CONSUMER_ONLY = ("selector", "name", "method")


def find_recipe_file(ref: str, consumer: Optional[Path] = None, key: str = "selector.checkpoint") -> Path:
    p = Path(ref).expanduser()
    tried = [p] if p.is_absolute() else [Path.cwd() / p]
    if consumer is not None and not p.is_absolute():
        tried += [d / p for d in [Path(consumer).resolve().parent, *Path(consumer).resolve().parent.parents]]
    found = next((t for t in tried if t.is_file()), None)
    if found is None:
        raise SSLBenchError(f"recipe key {key} names the recipe {ref}, which was not found")
    return found.resolve()


def producer_overrides(overrides: list[str]) -> list[str]:
    """The consumer's ``--set`` overrides that also apply to the producer (data, train, backbone, …)."""
    return [o for o in overrides if o.split("=", 1)[0].strip().split(".", 1)[0] not in CONSUMER_ONLY]


def _comparable(cfg: dict) -> dict:
    c = copy.deepcopy(cfg)
    train = c.get("train")
    for k in IGNORED_TRAIN_KEYS if isinstance(train, dict) else ():  # a damaged recipe.yaml simply differs
        train.pop(k, None)
    sel = c.get("selector") if isinstance(c.get("selector"), dict) else {}
    if is_recipe_ref(sel.get("checkpoint")) or sel.get("model") == "pretrained":
        sel.pop("checkpoint", None)  # a producer's own producer: resolved to some run directory
    c.pop("out_dir", None)
    c.pop("log", None)  # loggers record a run, they do not change it
    c.pop("evaluate", None)  # evaluations read the checkpoint, they do not change it
    return c


def finished_runs(cfg: dict) -> list[Path]:
    """Finished runs (newest first) under ``<out_dir>/<name>/`` whose recipe equals ``cfg``."""
    parent = Path(cfg.get("out_dir") or "runs") / cfg["name"]
    want = _comparable(cfg)
    found = []
    for d in parent.glob("*") if parent.is_dir() else []:
        res, ckpt, rec = d / runs.RESULTS_FILE, d / runs.CHECKPOINT_DIR / runs.LAST_CHECKPOINT, d / runs.RECIPE_FILE
        if not (res.is_file() and ckpt.is_file() and rec.is_file()):
            continue
        try:
            saved = safeyaml.load(rec.read_bytes(), str(rec))  # bounded aliases, no key twice: a bad run is passed over
            safeyaml.load_json(res.read_bytes(), str(res))
        except (OSError, ValueError, SSLBenchError):
            continue
        if isinstance(saved, dict) and _comparable(saved) == want:
            found.append((res.stat().st_mtime, d))
    return [d for _, d in sorted(found, reverse=True)]


# recipes whose producer is being run right now (outermost first): a producer chain that comes back
# to one of them is a cycle, caught before it runs forever
_PRODUCING: list[Path] = []


def resolve_pretrained(
    recipe,
    device: Optional[str] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    run_fn: Optional[Callable[..., Path]] = None,
) -> Optional[Path]:
    """If ``recipe``'s selector names its checkpoint by recipe, point it at a finished run of that
    recipe, running the producer first when there is none.  Returns the run directory used."""
    sel = recipe.cfg.get("selector") or {}
    ref = sel.get("checkpoint")
    if not is_recipe_ref(ref):
        return None
    path = find_recipe_file(ref, recipe.path)
    own = [Path(recipe.path).resolve()] if recipe.path is not None else []
    if path in _PRODUCING or path in own:  # A's producer B names A (directly or further up)
        chain = " → ".join(p.name for p in (*_PRODUCING, *own, path))
        raise SSLBenchError(f"recipe key selector.checkpoint names recipes in a cycle: {chain}")
    from ssl_bench.recipe import load_recipe

    overrides = producer_overrides(list(getattr(recipe, "overrides", []) or []))
    epochs = sorted(set(sel.get("checkpoints") or []))  # TracInCP: the epoch checkpoints it reads
    if epochs:
        keep = sorted(set(epochs) | set(load_recipe(path, overrides).cfg["train"].get("save_epochs") or []))
        overrides = [*overrides, f"train.save_epochs={keep}"]
    producer = load_recipe(path, overrides)
    done = [d for d in finished_runs(producer.cfg) if all(epoch_path(d, e).is_file() for e in epochs)]
    if done:
        run_dir = done[0]
        log(f"pretrained checkpoint: {ref} → finished run {run_dir}")
    else:
        log(f"pretrained checkpoint: no finished run of {ref} (as overridden here) — running it first")
        if run_fn is None:
            raise SSLBenchError(f"recipe key selector.checkpoint names the recipe {ref}, which has no finished run; "
                                "run it first")
        # a producer may itself name a pretrained recipe: resolved inside its own run
        _PRODUCING.extend(own)  # the producer's own run resolves its producer through this function
        try:
            run_dir = run_fn(producer, device=device, progress=progress, log=log)
        finally:
            del _PRODUCING[len(_PRODUCING) - len(own):]
        log(f"pretrained checkpoint: {ref} finished → {run_dir}; now running {recipe.cfg['name']}")
    sel["checkpoint"] = str(run_dir)
    return run_dir


def checkpoint_of_recipe(ref: str, key: str = "selector.checkpoint") -> Path:
    """The run directory of the newest finished run of recipe ``ref`` (no overrides), for commands
    that load a checkpoint without running anything (e.g. ``ssl-bench positives``)."""
    from ssl_bench.recipe import load_recipe

    path = find_recipe_file(ref, key=key)
    producer = load_recipe(path)
    done = finished_runs(producer.cfg)
    if not done:
        raise SSLBenchError(
            f"recipe key {key} names the recipe {ref}, which has no finished run under "
            f"{Path(producer.cfg['out_dir']) / producer.cfg['name']}; run `ssl-bench run {ref}` first"
        )
    return done[0]
