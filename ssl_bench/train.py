"""The training loop: one recipe → one run directory.

Top-down, as DINO's ``main_dino.py``: :func:`run` = :func:`setup` (build and check everything,
start the processes, claim the run directory: one :class:`Session`) → :func:`train` (the epochs,
each :func:`train_one_epoch`: a :class:`~ssl_bench.step.TrainStep` call per :class:`~ssl_bench.step.Batch`
of :func:`epoch_batches`) → :func:`evaluate` → :func:`report`.  Every write goes through the run's
:class:`~ssl_bench.rundir.RunDirectory` (metrics, steps, loggers, progress, checkpoints, status,
results).  The step itself reads like Fig. 1 of BYOL-TracIn (arXiv 2306.00112); see
:mod:`ssl_bench.step`.

Devices and precision come from Lightning Fabric (``train.device``, ``train.precision``), and so
does data-parallel training over ``train.devices`` × ``train.nodes`` processes (DDP; see
ssl_bench/distributed.py: the recipe's batch is the global batch, selectors choose across ranks,
only rank 0 writes); the loop itself is ours.  Images are uint8 on the training device (or in host
memory, ``train.data_on``) and are augmented there in batches: no loader workers to tune.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from ssl_bench import checkpoint as ckpt
from ssl_bench import distributed, runs
from ssl_bench.components import Components, build_components, method_name
from ssl_bench.data import batches, num_batches
from ssl_bench.data.base import check_classes
from ssl_bench.data.feed import BatchFeed
from ssl_bench.data.normalize import Normalize
from ssl_bench.device import resolve_precision, reuse_freed_memory, select_device, trim_heap
from ssl_bench.errors import SSLBenchError
from ssl_bench.evaluate import EvalContext
from ssl_bench.recipe import Recipe, TrainConfig
from ssl_bench.rundir import RunDirectory
from ssl_bench.schedule import build_optimizer, check_stages, enter_epoch, staged_lr
from ssl_bench.selectors import Selector
from ssl_bench.step import Batch, TrainStep

__all__ = [
    "Session", "run", "setup", "make_step", "training_step", "train", "train_one_epoch", "epoch_batches",
    "evaluate", "report",
]


@dataclass
class Session:
    """Everything one run holds between setup and report (one object instead of 88 local names)."""

    recipe: Recipe
    comp: Components
    fabric: object
    rank: int
    world: int
    out: RunDirectory  # every write of the run
    start: Optional[ckpt.ResumePoint]  # where a resumed run continues from
    step_fn: TrainStep  # the training step (ssl_bench/step.py): one call per Batch
    normalize: Normalize
    feed: BatchFeed
    labels: torch.Tensor  # the training labels, on the device
    groups: Optional[torch.Tensor]
    data_gen: torch.Generator  # the epoch permutations
    steps_per_epoch: int
    chance: float  # Σ_c p_c² of the training labels: the selector precision of random positives
    global_step: int = 0  # optimisation steps done (Lightning's name; a checkpoint stores it as "step")
    first_epoch: int = 1
    time_before: float = 0.0  # training time before a resume
    t_start: float = field(default_factory=time.perf_counter)
    train_time_s: float = 0.0  # at the end of training
    eval_time_s: float = 0.0
    record: dict = field(default_factory=lambda: {"loss": None, "selector_precision": None})

    @property
    def tcfg(self) -> TrainConfig:
        return self.recipe.train

    @property
    def device(self) -> torch.device:
        return self.fabric.device

    @property
    def train_time(self) -> float:
        return time.perf_counter() - self.t_start + self.time_before

    @property
    def run_dir(self) -> Path:
        return self.out.path

    @property
    def log(self) -> Callable[[str], None]:
        return self.out.log


# -------------------------------------------------------------------------------------------------
# The run
# -------------------------------------------------------------------------------------------------
def run(
    recipe: Recipe,
    out: Optional[str | Path] = None,
    device: Optional[str] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    devices: Optional[int] = None,
    nodes: Optional[int] = None,
    resume: Optional[str | Path] = None,
) -> Path:
    """Train and evaluate ``recipe``; return the run directory (on every rank of a DDP run).

    ``resume``: continue an interrupted run from its last checkpoint — a run directory, a
    checkpoint file in one, or ``""`` for ``out`` (else the newest unfinished run of the recipe).
    The run directory is locked while this process writes to it; a run that stops on an error is
    marked failed in its ``status.json`` (see :mod:`ssl_bench.checkpoint`, :mod:`ssl_bench.runs`).
    """
    threads = torch.get_num_threads()  # process-wide settings a run changes, put back when it ends
    _runs_active[0] += 1  # a pretrained selector's producer run is a run inside this one
    try:
        place(recipe, device, devices, nodes)
        from ssl_bench.producer_runs import resolve_pretrained

        # selector.checkpoint: a recipe
        resolve_pretrained(recipe, device=device, progress=progress, log=log, run_fn=run)
        with contextlib.ExitStack() as cleanup:
            s = setup(recipe, out, resume, progress, log, cleanup)
            cleanup.callback(s.out.close)
            try:
                restore(s)
                train(s)
                if s.rank == 0:  # evaluation and results.json are rank 0's
                    report(s, evaluate(s))
            except Exception as e:
                s.out.close("failed")
                if s.out.writes and not runs.read_status(s.run_dir):
                    first = str(e).splitlines()[0] if str(e) else ""
                    try:
                        s.out.failed(first if isinstance(e, SSLBenchError) else f"{type(e).__name__}: {first}",
                                     resumable=True)
                    except SSLBenchError:  # no room even for status.json: the error itself still reaches the user
                        pass
                raise
    finally:
        torch.set_num_threads(threads)
        _runs_active[0] -= 1
        if _malloc_changed[0] and _runs_active[0] == 0:
            from ssl_bench.device import default_malloc

            _malloc_changed[0] = not default_malloc()
    return s.run_dir


_malloc_changed = [False]  # reuse_freed_memory() is in force (until the outermost run ends)
_runs_active = [0]


def place(recipe: Recipe, device: Optional[str], devices: Optional[int], nodes: Optional[int]) -> None:
    """``--device`` / ``--devices`` / ``--nodes`` into the recipe; the process-level settings of a CPU run."""
    cfg, tcfg = recipe.cfg, recipe.train
    for key, value in (("device", device or None), ("devices", devices), ("nodes", nodes)):
        if value is not None:
            setattr(tcfg, key, value)
            tcfg.validate()
            cfg["train"][key] = value
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    if select_device(tcfg.device).type == "cpu":  # a step's activations reuse the last step's heap pages
        _malloc_changed[0] = reuse_freed_memory() or _malloc_changed[0]


def setup(recipe: Recipe, out, resume, progress: bool, log: Callable, cleanup: contextlib.ExitStack) -> Session:
    """Build and check every part, start the processes, claim the run directory: nothing is written
    before everything that can be checked has been."""
    cfg, tcfg = recipe.cfg, recipe.train
    seed = cfg["seed"]
    torch.manual_seed(seed)
    dev = select_device(tcfg.device)
    comp = build_components(recipe)
    check_classes(comp.data, comp.evaluations)  # a one-class training split: refused before any training
    check_stages(comp.objective, tcfg)
    n = len(comp.data.train)
    steps_per_epoch = num_batches(n, tcfg.batch_size, tcfg.drop_last)
    if tcfg.limit_batches is not None:
        steps_per_epoch = min(steps_per_epoch, tcfg.limit_batches)
    fabric, rank, world = start_processes(dev, tcfg, find_unused=bool(comp.objective.stages()), log=log)
    cfg["train"]["devices"], cfg["train"]["nodes"] = distributed.resolve_world(tcfg.devices, tcfg.nodes)  # as launched
    if rank != 0:  # only rank 0 speaks
        progress, log = False, _silent
    step_fn, normalize = make_step(comp, tcfg, fabric, seed, rank, world, steps_per_epoch * tcfg.epochs)
    data, dev = comp.data, fabric.device
    feed = BatchFeed(data.train.images, dev, tcfg.data_on)  # the uint8 split: on the device or in host memory
    if rank == 0 and cfg.get("log"):
        from ssl_bench.loggers import check_reachable, parse_log

        check_reachable(parse_log(cfg["log"]))  # an MLflow server that does not answer: one line, nothing written
    # ---- only now, with everything built and checked, is anything written (by rank 0 only) ----
    run_dir, start = make_run_dir(recipe, out, rank, resume, cleanup, check=lambda st: check_resumable(st, step_fn))
    log(f"run directory: {run_dir}"
        + (f"  (resumed after epoch {start.epoch} from {start.path.name})" if start else ""))
    log(
        f"{method_name(cfg, comp.selector, comp.objective)} on {data.name} ({n} train images, "
        f"{data.channels}×{data.image_size}²) · backbone {cfg['backbone']['name']} · selector "
        f"{cfg['selector']['name']} · {_count(tcfg.epochs, 'epoch')} × {_count(steps_per_epoch, 'step')} · device "
        f"{dev} · precision {resolve_precision(tcfg.precision, dev)}"
        + (f" · {world} processes (DDP), global batch {tcfg.batch_size}" if world > 1 else "")
    )
    if tcfg.batch_size > n:  # num_batches makes the whole split one batch: said, not silent
        log(f"note: train.batch_size {tcfg.batch_size} is larger than the training split ({n} images); "
            f"each step trains on all {n}")
    if tcfg.epochs == 0:
        log("train.epochs is 0: no pre-training; the untrained network is evaluated (the Random baseline)")
    groups = data.train.groups.to(dev) if data.train.groups is not None else None
    loggers = None
    if rank == 0 and cfg.get("log"):
        from ssl_bench.loggers import RunLoggers, parse_log

        try:
            loggers = RunLoggers(parse_log(cfg["log"]), run_dir, cfg)
        except SSLBenchError as e:  # the directory is claimed: say in it why the run did not start
            runs.mark_failed(run_dir, str(e), resumable=True)
            raise
        log("logging to: " + ", ".join(loggers.files()))
    out = RunDirectory(run_dir, writes=rank == 0, log=log, loggers=loggers, progress=progress)
    return Session(
        recipe, comp, fabric, rank, world, out, start, step_fn, normalize, feed, labels=data.train.labels.to(dev),
        groups=groups, data_gen=torch.Generator().manual_seed(seed), steps_per_epoch=steps_per_epoch,
        chance=data.label_chance_rate(),
    )


def make_step(comp: Components, tcfg: TrainConfig, fabric, seed: int, rank: int = 0, world: int = 1,
              total_steps: int = 1):
    """The training step of a run: the objective and its optimiser set up by Fabric, normalisation
    fitted on the training split, the augmentation and selector generators of ``seed`` (and rank).
    Returns ``(TrainStep, Normalize)``.  Benchmarks and tests build their step here too."""
    dev = fabric.device
    objective = distributed.convert_sync_batchnorm(comp.objective, tcfg.sync_batchnorm, world)
    if tcfg.channels_last:
        objective = objective.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(objective, tcfg)
    model, optimizer = fabric.setup(objective, optimizer)
    normalize = Normalize.fit(comp.data.train.images, seed=seed).to(fabric.device)
    memory_format = torch.channels_last if tcfg.channels_last else torch.contiguous_format

    def prep(v: torch.Tensor) -> torch.Tensor:
        return normalize(v).contiguous(memory_format=memory_format)

    # each rank augments its own slice: its own augmentation stream (rank 0's is one process's)
    aug_gen = torch.Generator(device=dev).manual_seed(seed + 1 + 7919 * rank)
    sel_gen = torch.Generator(device=dev).manual_seed(seed + 2)
    clip = None
    if tcfg.clip_grad_value is not None:
        def clip() -> None:
            fabric.clip_gradients(model, optimizer, clip_val=tcfg.clip_grad_value)

    step = TrainStep(
        model, objective, comp.selector, optimizer, fabric.backward, comp.augment, comp.selection_augment, prep,
        aug_gen, sel_gen, total_steps=max(total_steps, 1), autocast=fabric.autocast, clip=clip,
    )
    return step, normalize


def training_step(recipe: Recipe, device: Optional[str] = None, total_steps: int = 100) -> tuple[TrainStep, Components]:
    """The step ``ssl-bench run`` trains ``recipe`` with, built in this process on one device (the
    recipe's seed initialises the network): what benchmarks time and tests check is what is trained."""
    tcfg = recipe.train
    torch.manual_seed(recipe.cfg["seed"])
    comp = build_components(recipe)
    fabric = distributed.build_fabric(select_device(device or tcfg.device), 1, 1, tcfg.precision)
    step, _ = make_step(comp, tcfg, fabric, recipe.cfg["seed"], total_steps=total_steps)
    return step, comp


def restore(s: Session) -> None:
    """A resumed run: the checkpoint's networks, optimiser, selector and generators, and the counters
    (the interrupted epoch is redone from its start, with the same random numbers)."""
    if s.start is None:
        return
    st, generators = s.start, rng_generators(s)
    ckpt.restore_modules(st, s.step_fn.objective, s.step_fn.optimizer, s.step_fn.selector)
    s.global_step, s.first_epoch = st.step, st.epoch + 1
    s.time_before = float(st.state.get("train_time_s", 0.0))
    s.record = s.out.truncate_metrics(st.epoch) or s.record
    # DDP: rank 0's augmentation stream is the saved one; the others start a fresh stream per resumed epoch
    ckpt.set_rng_state(st.state["rng"],
                       generators if s.rank == 0 else {k: g for k, g in generators.items() if k != "augment"})
    if s.rank != 0:
        s.step_fn.aug_gen.manual_seed(s.recipe.cfg["seed"] + 1 + 7919 * s.rank + 104729 * st.epoch)


def rng_generators(s: Session) -> dict[str, torch.Generator]:
    return {"data": s.data_gen, "augment": s.step_fn.aug_gen, "selector": s.step_fn.sel_gen}


def checkpoint_state(s: Session, epoch: int) -> dict:
    """Everything a resumed run needs (see :mod:`ssl_bench.checkpoint`); the states every rank
    shares are rank 0's (other ranks' augmentation streams are not saved)."""
    step = s.step_fn
    return {
        "rng": ckpt.rng_state(rng_generators(s)),
        "epoch": epoch,
        "step": s.global_step,
        "objective": step.objective.state_dict(),
        "optimizer": step.optimizer.state_dict(),
        "selector": step.selector.state_dict(),
        "normalize": s.normalize.state_dict(),
        "recipe": s.recipe.cfg,
        "train_time_s": s.train_time,
    }


def network_state(s: Session, epoch: int) -> dict:
    """An epoch's network kept (``train.save_epochs``): weights, normalisation, recipe and that epoch's
    last learning rate (what TracInCP and ``ssl-bench positives`` read)."""
    return {"epoch": epoch, "step": s.global_step, "lr": s.record["lr"], "objective": s.step_fn.objective.state_dict(),
            "normalize": s.normalize.state_dict(), "recipe": s.recipe.cfg}


# -------------------------------------------------------------------------------------------------
# Training
# -------------------------------------------------------------------------------------------------
def train(s: Session) -> None:
    """The epochs: each one trained, recorded, checkpointed (every ``train.checkpoint_every``)."""
    tcfg, out = s.tcfg, s.out
    s.t_start = time.perf_counter()
    left = tcfg.epochs > s.first_epoch - 1  # no bar for 0 epochs (or none left)
    with out.progress(s.first_epoch, s.steps_per_epoch * tcfg.epochs, s.global_step, show=left):
        for epoch in range(s.first_epoch, tcfg.epochs + 1):
            s.record = train_one_epoch(s, epoch)
            if tcfg.knn_every and epoch % tcfg.knn_every == 0 and s.rank == 0:
                s.record.update(knn_monitor(s))
            out.end_epoch(s.record, tcfg.epochs)
            if epoch % tcfg.checkpoint_every == 0 or epoch == tcfg.epochs:
                out.checkpoint(lambda: checkpoint_state(s, epoch))
            if epoch in tcfg.save_epochs:
                out.keep_epoch(epoch, lambda: network_state(s, epoch))
            if s.device.type == "cpu":  # activations live in host memory: hand the epoch's freed heap back
                trim_heap()
    if tcfg.epochs == 0:  # no pre-training: the untrained encoder is the run's checkpoint
        out.checkpoint(lambda: checkpoint_state(s, 0))
    s.train_time_s = s.train_time
    if tcfg.epochs:
        stages = s.comp.objective.stages() or []
        boundaries = tuple(((st.first_epoch - 1) * s.steps_per_epoch, f"stage {st.index + 1}")
                           for st in stages if st.index > 0 and st.epochs)
        out.loss_plot(f"{method_name(s.recipe.cfg, s.comp.selector, s.comp.objective)} · {s.comp.data.name} · "
                      f"seed {s.recipe.cfg['seed']}", boundaries)


def knn_monitor(s: Session) -> dict:
    """The kNN accuracy (k = 20, cosine) of the backbone as it is now, on the validation split
    (``train.knn_every``); the test split is never looked at during training."""
    from ssl_bench.evaluate.knn import KNN

    data = s.comp.data
    if len(data.split("val")) == 0:
        return {}
    ctx = EvalContext.of_objective(s.step_fn.objective, data, s.comp.augment, s.comp.view_size, s.normalize, s.device,
                                   channels_last=s.tcfg.channels_last)
    m = KNN(k=min(20, len(data.train)), test_split="val").run(ctx)
    return {"knn_val_accuracy": m.get("accuracy"), "knn_val_balanced_accuracy": m.get("balanced_accuracy")}


def train_one_epoch(s: Session, epoch: int) -> dict:
    """One epoch of steps; returns its ``metrics.jsonl`` record.  The per-step bookkeeping stays on
    the device (no host sync per step on a GPU); the progress display reads it at most once a second."""
    tcfg, dev, step_fn, out = s.tcfg, s.device, s.step_fn, s.out
    t_epoch = time.perf_counter()
    out.start_epoch()
    loss_sum = torch.zeros((), device=dev)
    first_bad = torch.full((), -1, dtype=torch.long, device=dev)  # first step with a NaN/inf loss
    counts = torch.zeros(3, dtype=torch.long, device=dev)
    seen, done, lr, momentum = 0, 0, None, None
    step_loss, step_lr = [], []  # every step's loss stays on the device until the epoch ends
    stage = enter_epoch(step_fn.objective, step_fn.optimizer, epoch)
    for batch in epoch_batches(s):
        lr = staged_lr(stage, s.global_step, step_fn.total_steps, tcfg, s.steps_per_epoch)
        res = step_fn(batch, lr, s.global_step)
        momentum = res.momentum
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(res.loss.detach()), s.global_step, first_bad)
        # DDP: weighted so that the sum over ranks is the global batch's mean loss
        loss_sum += res.loss.detach() * (1.0 if batch.shard is None else batch.shard.local_size / batch.shard.total)
        step_loss.append(res.loss.detach())
        step_lr.append(lr)
        counts += res.counts
        s.global_step, seen, done = s.global_step + 1, seen + len(batch), done + 1
        if out.due():
            out.show(s.global_step, float(loss_sum) / done, lr, seen / (time.perf_counter() - t_epoch))
    if s.world > 1:  # metrics of the global batch: summed over ranks
        loss_sum, counts, seen = distributed.sum_epoch_stats(loss_sum, counts, seen)
    mean_loss = float(loss_sum) / max(s.steps_per_epoch, 1)
    if int(first_bad) >= 0 or not math.isfinite(mean_loss):
        stop_on_bad_loss(out, epoch, int(first_bad), s.steps_per_epoch, mean_loss)
    dt = time.perf_counter() - t_epoch
    same, chosen, anchors = (int(c) for c in counts)
    return {
        "epoch": epoch, "step": s.global_step, "loss": mean_loss, "lr": lr, "momentum": momentum,
        "selector_precision": same / chosen if chosen else None, "selector_chance": s.chance,
        "selector_coverage": anchors / seen if seen else None, "images": seen, "images_per_s": seen / dt,
        "epoch_time_s": dt, "_step_loss": torch.stack(step_loss).float().cpu().tolist() if step_loss else [],
        "_step_lr": step_lr,
    }


def epoch_batches(s: Session) -> Iterator[Batch]:
    """The epoch's batches, in order: a permutation of the training split cut into ``train.batch_size``
    index batches, each planned by the selector (MICLe's partner images), this rank's share of it, its
    images gathered by the feed (``train.data_on: host`` on a GPU: the next batch copied while this
    one trains)."""
    tcfg = s.tcfg
    index_batches = batches(len(s.comp.data.train), tcfg.batch_size, s.data_gen, drop_last=tcfg.drop_last)
    planned = plan_epoch(s.step_fn.selector, itertools.islice(index_batches, s.steps_per_epoch), s.rank, s.world)
    wanted = ((p, (p[1].view1, None if p[1].view2 is p[1].view1 else p[1].view2)) for p in planned)
    for (global_plan, plan, shard), (x1, x2) in s.feed.stream(wanted):
        yield make_batch(s, plan, shard, global_plan, x1, x2)


def plan_epoch(selector: Selector, index_batches, rank: int, world: int):
    """``(global plan, this rank's plan, shard)`` of each step of an epoch, in order."""
    for idx in index_batches:
        if len(idx) < 2:  # a last batch of one image (drop_last: false): nothing to contrast
            continue
        global_plan = selector.plan(idx)  # of the global batch, the same on every rank
        plan, shard = distributed.shard_plan(global_plan, rank, world)
        if plan is None:  # DDP: a last batch too small to give every rank 2 images
            continue
        yield global_plan, plan, shard


def make_batch(s: Session, plan, shard, global_plan, x1: torch.Tensor, x2: Optional[torch.Tensor]) -> Batch:
    """The step's :class:`Batch` from its plan and gathered images (the one place a batch is built)."""
    dev = s.device
    idx = plan.view1.to(dev)
    return Batch(
        images=x1, labels=s.labels[idx], indices=idx, groups=None if s.groups is None else s.groups[idx],
        images2=x2, indices2=None if x2 is None else plan.view2,
        planned_extra=None if plan.extra is None else plan.extra.to(dev),
        shard=shard, pool_labels=None if shard is None else s.labels[global_plan.view1.to(dev)],
    )


# -------------------------------------------------------------------------------------------------
# Evaluation and results
# -------------------------------------------------------------------------------------------------
def evaluate(s: Session) -> dict:
    """Every evaluation of the recipe on the trained network (rank 0); ``{key: metrics}``."""
    t_eval = time.perf_counter()
    cfg, tcfg, comp = s.recipe.cfg, s.tcfg, s.comp
    ctx = EvalContext.of_objective(
        s.step_fn.objective, comp.data, comp.augment, comp.view_size, s.normalize, s.device,
        channels_last=tcfg.channels_last, backbone_cfg=cfg["backbone"], out_dir=s.run_dir, augment_cfg=cfg["augment"],
        log=s.log, precision=tcfg.precision,
    )
    from ssl_bench.evaluate import run_evaluations

    results = run_evaluations(comp.evaluations, ctx, s.log)
    s.eval_time_s = time.perf_counter() - t_eval
    return results


def logged_images_per_s(run_dir: Path) -> Optional[float]:
    """The training images per second of the whole run, from the epochs metrics.jsonl logs (resumed
    runs included): Σ images / Σ epoch time — for one epoch, the figure that epoch logged (images
    actually trained on, which a split smaller than the batch makes fewer than steps × batch)."""
    import json

    path = Path(run_dir) / runs.METRICS_FILE
    if not path.is_file():
        return None
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    images = sum(r.get("images") or r["images_per_s"] * r["epoch_time_s"] for r in recs)
    seconds = sum(r["epoch_time_s"] for r in recs)
    return images / seconds if seconds else None


def report(s: Session, eval_results: dict) -> None:
    """``results.json`` (recipe, method, dataset, seed, eval → protocol → metric → value, …) and the summary."""
    cfg, tcfg, comp, dev = s.recipe.cfg, s.tcfg, s.comp, s.device
    train_time = s.train_time_s
    headline = cfg["headline_metric"]
    results = {
        "recipe": cfg["name"], "method": method_name(cfg, comp.selector, comp.objective), "dataset": comp.data.name,
        "seed": cfg["seed"], "objective": cfg["objective"]["name"], "selector": cfg["selector"]["name"],
        "backbone": cfg["backbone"]["name"], "epochs": tcfg.epochs,
        "eval_split": {k: ev.test_split for k, ev in zip(eval_results, comp.evaluations)},
        "eval_chosen": {k: ev.chosen for k, ev in zip(eval_results, comp.evaluations) if ev.chosen},
        "eval_blocks": dict(zip(eval_results, comp.eval_cfgs)),  # the resolved block behind each result
        "eval": eval_results,
        "train": {
            "steps": s.global_step, "final_loss": s.record["loss"] if tcfg.epochs else None, "wall_time_s": train_time,
            "images_per_s": logged_images_per_s(s.run_dir),
            "selector_precision": s.record["selector_precision"], "selector_chance": s.chance,
        },
        "eval_time_s": s.eval_time_s,
        "peak_rss_mb": runs.peak_rss_mb(),
        "peak_gpu_memory_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
        "resumed_from_epoch": s.start.epoch if s.start is not None else None,
        "device": str(dev), "world_size": s.world, "torch": torch.__version__, "headline_metric": headline,
        "precision": resolve_precision(tcfg.precision, dev),  # train.precision as resolved on this machine (auto → …)
        "provenance": {**runs.provenance(dev, s.recipe.path), "precision": resolve_precision(tcfg.precision, dev)},
        # images data.skip_corrupt dropped (named, so that a table's runs can be seen to differ)
        "data_skipped": list(comp.data.skipped),
    }
    s.out.results(results, headline, s.global_step)
    shown = [f"{k} {m[headline]:.4f}" for k, m in eval_results.items() if isinstance(m.get(headline), float)]
    if eval_results and not shown:
        s.log(f"warning: no evaluation reported the recipe's headline_metric '{headline}'")
    elif shown:
        s.log(f"headline {headline}: " + "  ".join(shown))
    rss = f", peak RSS {results['peak_rss_mb']:.0f} MiB" if results["peak_rss_mb"] is not None else ""
    gpu = (
        f", peak GPU memory {results['peak_gpu_memory_mb']:.0f} MiB"
        if results["peak_gpu_memory_mb"] is not None else ""
    )
    s.log(f"results: {s.run_dir / runs.RESULTS_FILE}  (train {train_time:.1f} s{rss}{gpu})")
    figures = sorted(p.name for p in s.run_dir.glob("*.png"))
    if figures:
        s.log(f"figures: {', '.join(figures)}  (in {s.run_dir})")


# -------------------------------------------------------------------------------------------------
# Processes, run directory, failures
# -------------------------------------------------------------------------------------------------
def start_processes(dev: torch.device, tcfg: TrainConfig, find_unused: bool = False,
                    log: Callable[[str], None] = print):
    """Fabric for one process or DDP over ``train.devices`` × ``train.nodes`` (started here: the
    other local processes re-run this command); returns ``(fabric, rank, world_size)``."""
    devices, nodes = distributed.resolve_world(tcfg.devices, tcfg.nodes)
    world = devices * nodes
    if world > 1 and tcfg.batch_size < 2 * world:
        raise SSLBenchError(
            f"recipe key train.batch_size ({tcfg.batch_size}) is the global batch: with {world} processes "
            f"it must be ≥ {2 * world} (2 images per process)"
        )
    fabric = distributed.build_fabric(dev, tcfg.devices, tcfg.nodes, tcfg.precision, tcfg.sync_batchnorm, find_unused)
    if nodes > 1 and not distributed.launched_by_torchrun():
        import os

        log(f"node {os.environ['NODE_RANK']} of {nodes}: waiting for the other nodes at "
            f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} ({world} processes in all)")
    distributed.launch(fabric)
    return fabric, fabric.global_rank, fabric.world_size


def check_resumable(start: ckpt.ResumePoint, step_fn: TrainStep) -> None:
    """What :func:`restore` will load, tried now: the networks, optimiser and selector states, and the
    random-number states (a damaged checkpoint is one line before the run directory is touched)."""
    ckpt.restore_modules(start, step_fn.objective, step_fn.optimizer, step_fn.selector)
    ckpt.check_rng_state(start, {"data": torch.Generator(), "augment": step_fn.aug_gen, "selector": step_fn.sel_gen})


def make_run_dir(
    recipe: Recipe, out, rank: int, resume, cleanup: contextlib.ExitStack, check: Optional[Callable] = None
) -> tuple[Path, Optional[ckpt.ResumePoint]]:
    """Rank 0 claims (locks) the run directory — a new one, or with ``resume`` the interrupted run,
    whose checkpoint is checked (``open_run``, then ``check(start)``) before anything is written — and writes the
    resolved recipe; every rank gets its path and resume point (or rank 0's error, so that no rank waits for a run that
    will not start).  Returns ``(run_dir, resume point or None)``."""
    cfg = recipe.cfg
    run_dir = error = ckpt_path = None
    start: Optional[ckpt.ResumePoint] = None
    if rank == 0:
        try:
            if resume is None:
                run_dir, lock = runs.claim_run_dir(out, cfg["out_dir"], cfg["name"], cfg["seed"])
                cleanup.callback(lock.release)
            else:  # lock first, then check and load: nothing is written before the checkpoint is known good
                run_dir, named = ckpt.find_run_dir(str(resume), out, cfg["out_dir"], cfg["name"])
                cleanup.callback(runs.lock_run_dir(run_dir).release)
                runs.remove_stale_temps(run_dir)  # half-written files of the process that was killed
                start = ckpt.open_run(run_dir, cfg, named, train_defaults=asdict(TrainConfig()))
                if check is not None:
                    check(start)
                ckpt_path = start.path
                runs.clear_status(run_dir)  # a run stopped by a (resumable) error goes on
            try:
                runs.atomic_write_text(run_dir / runs.RECIPE_FILE,
                                       runs.provenance_header(recipe.path) + recipe.to_yaml())
            except Exception as e:  # claimed but not started: say so in the directory itself
                runs.mark_failed(run_dir, f"{type(e).__name__}: {e}", resumable=True)
                raise
        except SSLBenchError as e:
            error = str(e)
    run_dir, error, ckpt_path = distributed.broadcast_object((run_dir, error, ckpt_path))
    if error:
        raise SSLBenchError(error)
    if ckpt_path is not None and start is None:  # the other ranks read the checkpoint rank 0 checked
        start = ckpt.ResumePoint(Path(run_dir), Path(ckpt_path), ckpt.load(Path(ckpt_path)))
    return Path(run_dir), start


def stop_on_bad_loss(out: RunDirectory, epoch: int, first_bad: int, steps_per_epoch: int, mean_loss: float) -> None:
    """A NaN/inf loss: mark the run failed and stop; the last good checkpoint stays as it is."""
    where = f"epoch {epoch}" + (
        f", step {first_bad + 1} (step {first_bad - (epoch - 1) * steps_per_epoch + 1} of the epoch)"
        if first_bad >= 0 else ""
    )
    kept = out.path / runs.CHECKPOINT_DIR / runs.LAST_CHECKPOINT
    keep = f"last good checkpoint kept: {kept}" if kept.is_file() else "no checkpoint was written before"
    bad = "non-finite" if first_bad >= 0 else f"{mean_loss}"
    # rank 0 writes (the loss sum is all-reduced, so every rank stops at the same epoch)
    out.failed(f"{bad} loss at {where}", epoch=epoch, step=first_bad + 1 if first_bad >= 0 else None, resumable=False)
    raise SSLBenchError(f"loss became {bad} at {where}; run stopped and marked failed, {keep}; lower train.lr or check "
                        "the data")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _silent(*args, **kwargs) -> None:
    pass
