"""``ssl-bench evaluate RUN_DIR``: run evaluations on a finished run's checkpoint, without training.

As lightly's and solo-learn's users evaluate a checkpoint apart from pre-training: the run's own
network (``checkpoints/last.pt``, or ``--epoch N``: a network the run kept with ``train.save_epochs``)
and normalisation, its data and augmentation blocks, and the evaluate blocks of its ``recipe.yaml``
or of ``--set 'evaluate=[...]'`` (only the ``evaluate`` block can be changed: the rest is what the
network was trained on).  The results go to a new file beside the run's own,
``results-evaluate-<time>.json`` (never an existing file); ``ssl-bench compare`` reads it with the
run's ``results.json``, the newest value of each protocol winning.

An evaluate block written by an ssl-bench before the validated fine-tuning protocol (a resolved
``finetune`` block without ``optimizer``: SGD, lr 0.01, the pre-training augmentations) is run with
today's protocol: its lr, weight decay and augmentation, which were that version's defaults, are
dropped, and the command says so.  Nothing is imported from the run (plug-ins only with ``--plugin``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Optional

from ssl_bench import runs
from ssl_bench.runs import EVAL_RESULTS_PREFIX
from ssl_bench.errors import SSLBenchError

__all__ = ["evaluate_run"]

# options of a fine-tuning block that an ssl-bench before the validated protocol filled with its own
# defaults (SGD at lr 0.01, the pre-training augmentations): dropped when such a block is re-run
_OLD_FINETUNE_DEFAULTS = ("lr", "weight_decay", "augment")


def upgrade_old_blocks(blocks: list, log: Callable[[str], None]) -> list:
    """Evaluate blocks of a recipe.yaml written before the validated fine-tuning protocol, with that
    version's defaults dropped (a transfer's inner protocol too)."""

    def upgrade(block: dict, where: str) -> dict:
        if not isinstance(block, dict):
            return block
        if block.get("name") == "transfer" and isinstance(block.get("protocol"), dict):
            return {**block, "protocol": upgrade(block["protocol"], f"{where}.protocol")}
        if block.get("name") == "finetune" and "optimizer" not in block:
            dropped = [k for k in _OLD_FINETUNE_DEFAULTS if k in block]
            if dropped:
                log(f"note: {where} (finetune) was written by an earlier ssl-bench (SGD, lr {block.get('lr')}, the "
                    f"pre-training augmentations); evaluated with today's validated protocol: {', '.join(dropped)} "
                    "dropped")
            return {k: v for k, v in block.items() if k not in _OLD_FINETUNE_DEFAULTS}
        return block

    return [upgrade(b, f"evaluate[{i}]") for i, b in enumerate(blocks)]


def evaluate_run(
    run_dir: str | Path,
    overrides: list[str] = (),
    epoch: Optional[int] = None,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> tuple[Path, dict]:
    """Evaluate a finished run's network; returns (the new results file, its contents)."""

    from ssl_bench.augment import AUGMENTATIONS
    from ssl_bench.checkpoint import epoch_path
    from ssl_bench.components import method_name
    from ssl_bench.data import DATASETS
    from ssl_bench.device import select_device
    from ssl_bench.evaluate import EVALUATIONS, EvalContext, run_evaluations
    from ssl_bench.recipe import load_recipe
    from ssl_bench.selectors import SELECTORS
    from ssl_bench.run_loader import load_run

    run_dir = Path(run_dir).expanduser()
    if not (run_dir / runs.RECIPE_FILE).is_file():
        raise SSLBenchError(f"RUN_DIR {run_dir}: not a run directory (no {runs.RECIPE_FILE})")
    if not (run_dir / runs.RESULTS_FILE).is_file():
        raise SSLBenchError(f"RUN_DIR {run_dir}: the run has not finished (no {runs.RESULTS_FILE}); resume it first: "
                            f"ssl-bench run --resume {run_dir}")
    for o in overrides:
        key = o.split("=", 1)[0].strip()
        if key != "evaluate" and not key.startswith(("evaluate.", "evaluate[")):
            raise SSLBenchError("ssl-bench evaluate changes only the evaluate block (the network was trained with the "
                                f"rest): got --set {key}")
    base = load_recipe(run_dir / runs.RECIPE_FILE, load_plugins=False)
    if overrides:
        cfg = load_recipe(data={k: v for k, v in base.cfg.items()}, overrides=list(overrides), load_plugins=False).cfg
    else:  # the blocks as recipe.yaml holds them (loading fills today's defaults in, hiding an old block)
        from ssl_bench import safeyaml

        raw = safeyaml.load((run_dir / runs.RECIPE_FILE).read_bytes(), str(run_dir / runs.RECIPE_FILE))
        own = upgrade_old_blocks(raw.get("evaluate") or [], log)
        cfg = load_recipe(data={**base.cfg, "evaluate": own}, load_plugins=False).cfg
    if not cfg["evaluate"]:
        raise SSLBenchError("nothing to evaluate: the run's recipe has no evaluate blocks; give some with --set "
                            "'evaluate=[{name: linear}]'")
    evaluations = [EVALUATIONS.build(ev, key=f"evaluate[{i}]") for i, ev in enumerate(cfg["evaluate"])]
    ckpt_file = epoch_path(run_dir, epoch) if epoch is not None else run_dir
    dev = select_device(device)
    trained = load_run(ckpt_file, device=dev, key="--epoch" if epoch is not None else "RUN_DIR")
    if trained.normalize is None:
        raise SSLBenchError(f"checkpoint {trained.path} records no normalisation: not a checkpoint of ssl-bench run")
    data = DATASETS.build(cfg["data"], key="data")
    for ev in evaluations:  # refused before the (long) evaluations start
        ev.check_data(data)
    from ssl_bench.data.base import check_classes

    check_classes(data, evaluations)  # a one-class training split: one line now, not a crash in the probe
    view_size = cfg["augment"].get("size") or data.image_size
    augment = AUGMENTATIONS.build(cfg["augment"], key="augment")
    ctx = EvalContext.of_objective(
        trained.objective, data, augment, view_size, trained.normalize, dev,
        channels_last=cfg["train"].get("channels_last", False), backbone_cfg=cfg["backbone"], out_dir=None,
        augment_cfg=cfg["augment"], log=log, precision=cfg["train"].get("precision", "32-true"),
    )
    selector = SELECTORS.build(cfg["selector"], key="selector") if cfg["selector"]["name"] in SELECTORS else None
    method = method_name(cfg, selector, trained.objective) if selector is not None else cfg.get("method") or cfg["name"]
    log(f"evaluating {method} on {data.name}: network of epoch {trained.epoch} ({trained.path}) · device {dev}")
    # named before the evaluations run (minutes), so that nothing after them can fail on it
    checkpoint, home = trained.path.resolve(), run_dir.resolve()
    checkpoint = checkpoint.relative_to(home) if checkpoint.is_relative_to(home) else checkpoint
    t0 = time.perf_counter()
    results = run_evaluations(evaluations, ctx, log)
    out = {
        "recipe": cfg["name"], "method": method, "dataset": data.name, "seed": cfg["seed"],
        "objective": cfg["objective"]["name"], "selector": cfg["selector"]["name"], "backbone": cfg["backbone"]["name"],
        "epochs": cfg["train"]["epochs"], "evaluated_epoch": trained.epoch,
        "checkpoint": str(checkpoint),
        "eval_split": {k: ev.test_split for k, ev in zip(results, evaluations)},
        "eval_chosen": {k: ev.chosen for k, ev in zip(results, evaluations) if ev.chosen},
        "eval_blocks": dict(zip(results, cfg["evaluate"])),
        "eval": results,
        "eval_time_s": time.perf_counter() - t0,
        "headline_metric": cfg["headline_metric"],
        "provenance": runs.provenance(dev, None),
    }
    path = write_new_results(run_dir, out)
    log(f"results: {path}  (beside {runs.RESULTS_FILE}, which is unchanged)")
    return path, out


def write_new_results(run_dir: Path, results: dict) -> Path:
    """``results-evaluate-<time>.json`` in ``run_dir``, a name no file has (created exclusively, then
    filled through a temporary file)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = Path(run_dir) / f"{EVAL_RESULTS_PREFIX}{stamp}{f'-{i}' if i else ''}.json"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        except OSError as e:
            raise runs.write_failed(path, e) from e
        os.close(fd)
        try:
            runs.atomic_write_text(path, json.dumps(runs._jsonable(results), indent=2) + "\n")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path
    raise SSLBenchError(f"could not find a free results file name in {run_dir}")
