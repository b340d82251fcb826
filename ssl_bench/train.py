"""The training loop: one recipe → one run directory.

Reads like Fig. 1 of BYOL-TracIn (arXiv 2306.00112): two augmented views → online and target
outputs → the selector picks extra positives from the batch → the objective pulls each sample
towards its own other view *and* its extra positives.

Devices and precision come from Lightning Fabric (``train.device``, ``train.precision``), and so
does data-parallel training over ``train.devices`` × ``train.nodes`` processes (DDP; see
ssl_bench/distributed.py: the recipe's batch is the global batch, selectors choose across ranks,
only rank 0 writes); the loop itself is ours.  Data live on the training device as uint8 and are
augmented there in batches, so there are no loader workers to tune on either CPU or GPU.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import torch
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from ssl_bench import checkpoint as ckpt
from ssl_bench import distributed, runs
from ssl_bench.augment import AUGMENTATIONS, center_view
from ssl_bench.backbones import build_backbone
from ssl_bench.data import DATASETS, DataSplits, batches, num_batches
from ssl_bench.data.feed import BatchFeed
from ssl_bench.errors import SSLBenchError
from ssl_bench.evaluate import EVALUATIONS, EvalContext, extract_features
from ssl_bench.objectives import OBJECTIVES, Embedder, Objective
from ssl_bench.recipe import Recipe, TrainConfig
from ssl_bench.selectors import SELECTORS, SelectionContext, Selector


# -------------------------------------------------------------------------------------------------
# Pieces
# -------------------------------------------------------------------------------------------------
def select_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SSLBenchError(f"recipe key train.device is '{name}' but CUDA is not available on this machine")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SSLBenchError(f"recipe key train.device is '{name}' but this machine has {torch.cuda.device_count()} GPU(s)")
        return dev
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise SSLBenchError("recipe key train.device is 'mps' but MPS is not available on this machine")
    return torch.device(name)


class Normalize:
    """Per-channel standardisation with the training split's statistics."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        self.mean = mean.view(1, -1, 1, 1)
        self.std = std.view(1, -1, 1, 1)

    @classmethod
    def fit(cls, images: torch.Tensor, max_images: int = 4096, seed: int = 0) -> "Normalize":
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(images.shape[0], generator=g)[:max_images]
        x = images[idx].float().div_(255)
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp(min=1e-3)
        return cls(mean, std)

    def to(self, device: torch.device) -> "Normalize":
        return Normalize(self.mean.to(device), self.std.to(device))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def state_dict(self) -> dict:
        return {"mean": self.mean.flatten().cpu(), "std": self.std.flatten().cpu()}


def lr_at(step: int, total: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Linear warm-up for ``warmup_epochs``, then cosine decay to ``min_lr`` (or constant)."""
    warm = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total)  # a short smoke run: warm-up only
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    # one step past the run's end reaches min_lr, so the last step's lr is small but not 0 (lightly's
    # schedule returns end_value at max_steps − 1; TracIn scores are proportional to lr)
    return cosine_schedule(step - warm, max(total - warm, 1) + 1, cfg.lr, cfg.min_lr)


def check_stages(objective: Objective, cfg: TrainConfig) -> None:
    """A staged objective (t-SimCNE) owns the epoch count: ``train.epochs`` must be the sum of its stages
    (or 0, the untrained baseline)."""
    stages = objective.stages()
    if stages and cfg.epochs and sum(st.epochs for st in stages) != cfg.epochs:
        per = [st.epochs for st in stages]
        raise SSLBenchError(
            f"recipe key train.epochs is {cfg.epochs} but objective.stages {per} sum to {sum(per)}; make them agree"
        )


def enter_epoch(objective: Objective, optimizer: torch.optim.Optimizer, epoch: int):
    """Start epoch ``epoch`` (1-based): a staged objective sets its stage from the epoch number; the first
    epoch of every later stage starts from a fresh optimiser state (t-SimCNE builds a new SGD per stage).
    Both depend on ``epoch`` only, so a resumed run enters the same stage with the same state."""
    stage = objective.begin_epoch(epoch)
    if stage is not None and stage.index > 0 and epoch == stage.first_epoch:
        getattr(optimizer, "optimizer", optimizer).state.clear()
    return stage


def staged_lr(stage, step: int, total: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """:func:`lr_at`, or within a stage: its own warm-up and cosine decay from ``lr_scale × train.lr``."""
    if stage is None:
        return lr_at(step, total, cfg, steps_per_epoch)
    start = (stage.first_epoch - 1) * steps_per_epoch
    scaled = dataclasses.replace(
        cfg, lr=cfg.lr * stage.lr_scale, min_lr=cfg.min_lr * stage.lr_scale, warmup_epochs=stage.warmup_epochs
    )
    return lr_at(step - start, stage.epochs * steps_per_epoch, scaled, steps_per_epoch)


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def method_name(recipe: dict, selector: Selector, objective: Objective) -> str:
    if recipe.get("method"):
        return recipe["method"]
    obj = getattr(type(objective), "display", None) or {"byol": "BYOL", "simsiam": "SimSiam", "simclr": "SimCLR"}.get(
        recipe["objective"]["name"], recipe["objective"]["name"]
    )
    if recipe["selector"]["name"] == "none":
        return obj
    sel = getattr(type(selector), "display", None) or recipe["selector"]["name"]
    return f"{obj}-{sel}"


@dataclass
class Components:
    """Everything a recipe builds before the run directory is created (so bad input writes nothing)."""

    data: DataSplits
    augment: Callable
    selection_augment: Callable
    objective: Objective
    selector: Selector
    evaluations: list
    view_size: int
    eval_cfgs: list = field(default_factory=list)


def build_components(recipe: Recipe) -> Components:
    cfg = recipe.cfg
    data = DATASETS.build(cfg["data"], key="data")
    augment = AUGMENTATIONS.build(cfg["augment"], key="augment")
    view_size = cfg["augment"].get("size") or data.image_size
    sel_cfg = dict(cfg["selection_augment"])
    if sel_cfg.get("size") is None:  # selectors see images at the size the network is trained on
        sel_cfg["size"] = view_size
    selection_augment = AUGMENTATIONS.build(sel_cfg, key="selection_augment")
    backbone = build_backbone(cfg["backbone"], in_chans=data.channels)
    objective = OBJECTIVES.build(cfg["objective"], backbone, key="objective")
    selector = SELECTORS.build(cfg["selector"], key="selector")
    selector.setup(objective, data)
    selector.seed(recipe.cfg["seed"] + 3)
    evaluations = [EVALUATIONS.build(ev, key=f"evaluate[{i}]") for i, ev in enumerate(cfg["evaluate"])]
    # one forward on two images: catches a backbone that cannot take this image size, before any write
    with torch.no_grad():
        probe = torch.zeros(2, data.channels, view_size, view_size)
        try:
            objective.eval()
            objective(probe, probe)
        except Exception as e:
            raise SSLBenchError(
                f"backbone '{cfg['backbone']['name']}' cannot take {data.channels}×{view_size}×{view_size} images: "
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            ) from e
        finally:
            objective.train()
    return Components(
        data, augment, selection_augment, objective, selector, evaluations, view_size, cfg["evaluate"]
    )


# -------------------------------------------------------------------------------------------------
# The loop
# -------------------------------------------------------------------------------------------------
def _progress(enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[ips]} img/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


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
    with contextlib.ExitStack() as cleanup:
        claimed: list[Path] = []
        try:
            return _run(recipe, out, device, progress, log, devices, nodes, resume, cleanup, claimed)
        except Exception as e:
            if claimed and not runs.read_status(claimed[0]):
                first = str(e).splitlines()[0] if str(e) else ""
                runs.mark_failed(claimed[0], f"{type(e).__name__}: {first}", resumable=True)
            raise


def _run(recipe: Recipe, out, device, progress, log, devices, nodes, resume, cleanup: contextlib.ExitStack, claimed: list) -> Path:
    cfg = recipe.cfg
    tcfg = recipe.train
    if device:
        tcfg.device = device
        tcfg.validate()
        cfg["train"]["device"] = device
    for key, value in (("devices", devices), ("nodes", nodes)):
        if value is not None:
            setattr(tcfg, key, value)
            tcfg.validate()
            cfg["train"][key] = value
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    if select_device(tcfg.device).type == "cpu":  # a step's activations reuse the last step's heap pages
        runs.reuse_freed_memory()
    from ssl_bench.pretrained import resolve_pretrained

    resolve_pretrained(recipe, device=device, progress=progress, log=log)  # selector.checkpoint: a recipe
    seed = cfg["seed"]
    torch.manual_seed(seed)
    dev = select_device(tcfg.device)

    comp = build_components(recipe)
    data, objective, selector = comp.data, comp.objective, comp.selector
    check_stages(objective, tcfg)
    n = len(data.train)
    steps_per_epoch = num_batches(n, tcfg.batch_size, tcfg.drop_last)
    total_steps = steps_per_epoch * tcfg.epochs

    fabric, rank, world = start_processes(dev, tcfg, find_unused=bool(objective.stages()))
    cfg["train"]["devices"], cfg["train"]["nodes"] = distributed.resolve_world(tcfg.devices, tcfg.nodes)  # as launched
    if rank != 0:  # only rank 0 speaks
        progress, log = False, _silent

    # ---- only now, with everything built and checked, is anything written (by rank 0 only) ----
    run_dir, start = make_run_dir(recipe, out, rank, resume, cleanup, claimed)
    method = method_name(cfg, selector, objective)
    log(f"run directory: {run_dir}" + (f"  (resumed after epoch {start.epoch} from {start.path.name})" if start else ""))
    log(
        f"{method} on {data.name} ({n} train images, {data.channels}×{data.image_size}²) · backbone {cfg['backbone']['name']} "
        f"· selector {cfg['selector']['name']} · {tcfg.epochs} epochs × {steps_per_epoch} steps · device {dev}"
        + (f" · {world} processes (DDP), global batch {tcfg.batch_size}" if world > 1 else "")
    )

    objective = distributed.convert_sync_batchnorm(objective, tcfg.sync_batchnorm, world)
    if tcfg.channels_last:
        objective = objective.to(memory_format=torch.channels_last)
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, tcfg)
    model, optimizer = fabric.setup(objective, optimizer)
    raw: Objective = objective  # loss/EMA math lives on the module itself, outside forward
    dev = fabric.device
    if start is not None:  # online and EMA target networks, BatchNorm statistics, optimiser, selector
        ckpt.restore_modules(start, raw, optimizer, selector)

    feed = BatchFeed(data.train.images, dev, tcfg.data_on)  # the uint8 split: on the device or in host memory
    labels = data.train.labels.to(dev)
    groups = data.train.groups.to(dev) if data.train.groups is not None else None
    normalize = Normalize.fit(data.train.images, seed=seed).to(dev)
    chance = data.label_chance_rate()
    data_gen = torch.Generator().manual_seed(seed)
    # each rank augments its own slice: its own augmentation stream (rank 0's is one process's)
    aug_gen = torch.Generator(device=dev).manual_seed(seed + 1 + 7919 * rank)
    sel_gen = torch.Generator(device=dev).manual_seed(seed + 2)
    memory_format = torch.channels_last if tcfg.channels_last else torch.contiguous_format

    def prep(v: torch.Tensor) -> torch.Tensor:
        return normalize(v).contiguous(memory_format=memory_format)

    step_fn = TrainStep(
        model, raw, selector, optimizer, fabric.backward, comp.augment, comp.selection_augment, prep, aug_gen, sel_gen,
        autocast=fabric.autocast,
    )

    generators = {"data": data_gen, "augment": aug_gen, "selector": sel_gen}

    def checkpoint(epoch: int, step: int) -> None:
        if rank != 0:  # the states every rank shares are rank 0's; other ranks' augmentation streams are not saved
            return
        # everything a resumed run needs (see ssl_bench.checkpoint)
        ckpt.save(run_dir, {
            "rng": ckpt.rng_state(generators),
            "epoch": epoch,
            "step": step,
            "objective": raw.state_dict(),
            "optimizer": optimizer.state_dict(),
            "selector": selector.state_dict(),
            "normalize": normalize.state_dict(),
            "recipe": cfg,
            "train_time_s": time.perf_counter() - t_start + time_before,
        })

    step, first_epoch, time_before = 0, 1, 0.0
    record = {"loss": None, "selector_precision": None}  # stays so with train.epochs: 0 (Random baseline)
    if start is not None:  # the interrupted epoch is redone from its start, with the same random numbers
        step, first_epoch = start.step, start.epoch + 1
        time_before = float(start.state.get("train_time_s", 0.0))
        record = (ckpt.truncate_metrics(run_dir, start.epoch) if rank == 0 else None) or record
        # DDP: rank 0's augmentation stream is the saved one; the others start a fresh stream per resumed epoch
        ckpt.set_rng_state(start.state["rng"], generators if rank == 0 else {k: g for k, g in generators.items() if k != "augment"})
        if rank != 0:
            aug_gen.manual_seed(seed + 1 + 7919 * rank + 104729 * start.epoch)
    t_start = time.perf_counter()
    with _progress(progress) as prog:
        task = prog.add_task(f"epoch {first_epoch}", total=total_steps, completed=step, loss="-", lr="-", ips="-") if prog else None
        for epoch in range(first_epoch, tcfg.epochs + 1):
            t_epoch = time.perf_counter()
            loss_sum = torch.zeros((), device=dev)
            first_bad = torch.full((), -1, dtype=torch.long, device=dev)  # first step with a NaN/inf loss
            counts = torch.zeros(3, dtype=torch.long, device=dev)
            seen = 0
            lr = momentum = None
            stage = enter_epoch(raw, optimizer, epoch)
            planned = plan_epoch(selector, batches(n, tcfg.batch_size, data_gen, drop_last=tcfg.drop_last), rank, world)
            for (global_plan, plan, shard), (x1, x2) in feed.stream(planned, plan_indices):
                lr = staged_lr(stage, step, total_steps, tcfg, steps_per_epoch)
                idx_d = plan.view1.to(dev)
                lab = labels[idx_d]
                loss, extra, momentum = step_fn(
                    x1, lab, idx_d, None if groups is None else groups[idx_d], lr, step, total_steps,
                    x2=x2, planned_extra=None if plan.extra is None else plan.extra.to(dev),
                    view2_indices=None if x2 is None else plan.view2, shard=shard,
                )
                # found on the device, checked once per epoch: no host sync per step on a GPU
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad)
                step += 1
                if shard is None:
                    loss_sum += loss.detach()
                    counts += selector.counts(extra, lab)
                else:  # weighted so that the sum over ranks is the global batch's mean loss
                    loss_sum += loss.detach() * (shard.local_size / shard.total)
                    counts += step_fn.counts(extra, lab, shard, labels[global_plan.view1.to(dev)])
                seen += len(idx_d)
                if prog is not None and (step % 5 == 0 or step == total_steps):
                    elapsed = time.perf_counter() - t_epoch
                    prog.update(task, completed=step, loss=f"{loss.item():.4f}", lr=f"{lr:.4g}", ips=f"{seen / elapsed:.0f}")
            if world > 1:  # metrics of the global batch: summed over ranks
                loss_sum, counts, seen = distributed.sum_epoch_stats(loss_sum, counts, seen)
            n_steps = max(steps_per_epoch, 1)
            mean_loss = float(loss_sum) / n_steps
            if int(first_bad) >= 0 or not math.isfinite(mean_loss):
                stop_on_bad_loss(run_dir, epoch, int(first_bad), steps_per_epoch, mean_loss, write=rank == 0)
            dt = time.perf_counter() - t_epoch
            same, chosen, anchors = (int(c) for c in counts)
            record = {
                "epoch": epoch,
                "step": step,
                "loss": mean_loss,
                "lr": lr,
                "momentum": momentum,
                "selector_precision": same / chosen if chosen else None,
                "selector_chance": chance,
                "selector_coverage": anchors / seen if seen else None,
                "images_per_s": seen / dt,
                "epoch_time_s": dt,
            }
            if rank == 0:
                runs.append_metrics(run_dir, record)
            prec = f"  sel-prec {record['selector_precision']:.3f} (chance {chance:.3f})" if chosen else ""
            msg = f"epoch {epoch}/{tcfg.epochs}  loss {mean_loss:.4f}  lr {lr:.4g}{prec}  {seen / dt:.0f} img/s"
            if prog is not None:
                prog.update(task, completed=step, description=f"epoch {min(epoch + 1, tcfg.epochs)}")
                prog.console.print(msg)
            else:
                log(msg)
            if epoch % tcfg.checkpoint_every == 0 or epoch == tcfg.epochs:
                checkpoint(epoch, step)
            if dev.type == "cpu":  # activations live in host memory: hand the epoch's freed heap back
                runs.trim_heap()
    if tcfg.epochs == 0:  # no pre-training: the untrained encoder is the run's checkpoint
        checkpoint(0, 0)
    train_time = time.perf_counter() - t_start + time_before
    if rank != 0:  # evaluation and results.json are rank 0's
        return run_dir

    # ---- evaluation on frozen features ----
    t_eval = time.perf_counter()
    view_size = comp.view_size

    def embed(imgs: torch.Tensor):
        return extract_features(
            raw.backbone,
            imgs,
            lambda x: prep(center_view(x, view_size)),
            dev,
            channels_last=tcfg.channels_last,
        )

    def fresh_encoder(random: bool = False) -> nn.Module:
        if random:  # the paper's "Random" row: same architecture, untrained
            return build_backbone({**cfg["backbone"], "weights": None}, in_chans=data.channels)
        # rank 0 evaluates alone: SyncBatchNorm back to BatchNorm (no collective to wait on);
        # requires_grad on again: a staged objective (t-SimCNE) may end with a frozen backbone
        return distributed.revert_sync_batchnorm(copy.deepcopy(raw.backbone)).requires_grad_(True)

    ectx = EvalContext(
        data=data,
        embed=embed,
        encoder=fresh_encoder,
        train_view=lambda x, g: prep(comp.augment.view1(x, g)),
        eval_view=lambda x: prep(center_view(x, view_size)),
        device=dev,
        channels_last=tcfg.channels_last,
        augment=comp.augment.view1,
        view_size=view_size,
        project=lambda imgs: extract_features(
            Embedder(raw), imgs, lambda x: prep(center_view(x, view_size)), dev, channels_last=tcfg.channels_last
        ),
        out_dir=run_dir,
    )
    eval_results: dict = {}
    for ev_cfg, ev in zip(comp.eval_cfgs, comp.evaluations):
        key = getattr(ev, "key", ev_cfg["name"])  # e.g. finetune@0.1
        key = key if key not in eval_results else f"{key}_{len(eval_results)}"
        eval_results[key] = ev.run(ectx)
        chosen = f"  (C = {ev.chosen_C:g}, chosen on val)" if getattr(ev, "chosen_C", None) is not None else ""
        shown = {k: v for k, v in eval_results[key].items() if isinstance(v, float) and not k.endswith("_std") and k != "label_fraction"}
        if "skipped" in eval_results[key]:
            log(f"eval {key}: skipped — {eval_results[key]['skipped']}")
            continue
        log(f"eval {key}: " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()) + chosen)
    results = {
        "recipe": cfg["name"],
        "method": method,
        "dataset": data.name,
        "seed": seed,
        "objective": cfg["objective"]["name"],
        "selector": cfg["selector"]["name"],
        "backbone": cfg["backbone"]["name"],
        "epochs": tcfg.epochs,
        "eval_split": {k: getattr(ev, "test_split", None) for k, ev in zip(eval_results, comp.evaluations)},
        "eval": eval_results,
        "train": {
            "steps": step,
            "final_loss": record["loss"] if tcfg.epochs else None,
            "wall_time_s": train_time,
            "images_per_s": step * tcfg.batch_size / train_time if train_time else None,
            "selector_precision": record["selector_precision"],
            "selector_chance": chance,
        },
        "eval_time_s": time.perf_counter() - t_eval,
        "peak_rss_mb": runs.peak_rss_mb(),
        "peak_gpu_memory_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
        "resumed_from_epoch": start.epoch if start is not None else None,
        "device": str(dev),
        "world_size": world,
        "torch": torch.__version__,
    }
    headline = cfg["headline_metric"]
    results["headline_metric"] = headline
    runs.write_results(run_dir, results)
    shown = [f"{k} {m[headline]:.4f}" for k, m in eval_results.items() if isinstance(m.get(headline), float)]
    if eval_results and not shown:
        log(f"warning: no evaluation reported the recipe's headline_metric '{headline}'")
    elif shown:
        log(f"headline {headline}: " + "  ".join(shown))
    rss = f", peak RSS {results['peak_rss_mb']:.0f} MiB" if results["peak_rss_mb"] is not None else ""
    gpu = f", peak GPU memory {results['peak_gpu_memory_mb']:.0f} MiB" if results["peak_gpu_memory_mb"] is not None else ""
    log(f"results: {run_dir / runs.RESULTS_FILE}  (train {train_time:.1f} s{rss}{gpu})")
    return run_dir


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


def plan_indices(planned) -> tuple:
    """The dataset indices whose images a planned step needs: view 1's, and view 2's when they differ."""
    _, plan, _ = planned
    return plan.view1, None if plan.view2 is plan.view1 else plan.view2


def _silent(*args, **kwargs) -> None:
    pass


def start_processes(dev: torch.device, tcfg: TrainConfig, find_unused: bool = False):
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
    distributed.launch(fabric)
    return fabric, fabric.global_rank, fabric.world_size


def make_run_dir(
    recipe: Recipe, out, rank: int, resume, cleanup: contextlib.ExitStack, claimed: list
) -> tuple[Path, Optional[ckpt.ResumePoint]]:
    """Rank 0 claims (locks) the run directory — a new one, or with ``resume`` the interrupted run,
    whose checkpoint is checked before anything is written — and writes the resolved recipe; every
    rank gets its path and resume point (or rank 0's error, so that no rank waits for a run that
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
                start = ckpt.open_run(run_dir, cfg, named)
                ckpt_path = start.path
                runs.clear_status(run_dir)  # a run stopped by a (resumable) error goes on
            claimed.append(run_dir)
            runs.atomic_write_text(run_dir / runs.RECIPE_FILE, recipe.to_yaml())
        except SSLBenchError as e:
            error = str(e)
    run_dir, error, ckpt_path = distributed.broadcast_object((run_dir, error, ckpt_path))
    if error:
        raise SSLBenchError(error)
    if ckpt_path is not None and start is None:  # the other ranks read the checkpoint rank 0 checked
        start = ckpt.ResumePoint(Path(run_dir), Path(ckpt_path), ckpt.load(Path(ckpt_path)))
    return Path(run_dir), start


@dataclass
class TrainStep:
    """One optimisation step: augment → forward → select extra positives → loss → update.

    Shared by the training loop and the benchmarks, so that what is timed is what is trained.
    """

    model: nn.Module  # the (Fabric-wrapped) objective whose forward runs both views
    objective: Objective  # the bare objective (loss maths)
    selector: Selector
    optimizer: torch.optim.Optimizer
    backward: Callable[[torch.Tensor], None]
    augment: Callable
    selection_augment: Callable
    prep: Callable[[torch.Tensor], torch.Tensor]  # normalise (+ memory format)
    aug_gen: torch.Generator
    sel_gen: torch.Generator
    autocast: Callable = contextlib.nullcontext  # the precision context of selector forwards and the loss

    def global_positives(self, shard) -> bool:
        """DDP: do this step's selector and objective work on the global batch?  (An objective
        without ``global_positives`` gets positives chosen among its rank's own samples.)"""
        return shard is not None and shard.world_size > 1 and getattr(self.objective, "global_positives", False)

    def counts(self, extra, labels, shard, pool_labels) -> torch.Tensor:
        """Selector-precision counts of a DDP step; ``pool_labels``: the global batch's labels."""
        if extra is None or not self.global_positives(shard):
            return self.selector.counts(extra, labels)
        return self.selector.counts(extra, labels, pool_labels=pool_labels)

    def __call__(
        self, x, labels, indices, groups, lr: float, step: int, total_steps: int, x2=None, planned_extra=None, view2_indices=None,
        shard=None,
    ):
        """``x``: uint8 images of the batch; ``x2``: other images for view 2 (MICLe), else ``x``.

        ``shard`` (DDP): this rank's slice of the global batch; ``x`` … are the slice's."""
        global_pos = self.global_positives(shard)
        if shard is not None and not global_pos and planned_extra is not None:
            planned_extra = distributed.localize(planned_extra, shard)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        if x2 is None:
            v1, v2 = self.augment(x, self.aug_gen)
        else:
            v1, v2 = self.augment.view1(x, self.aug_gen), self.augment.view2(x2, self.aug_gen)
        v1, v2 = self.prep(v1), self.prep(v2)
        out = self.model(v1, v2)
        ctx = SelectionContext(
            out=out,
            labels=labels,
            indices=indices,
            objective=self.objective,
            generator=self.sel_gen,
            lr=lr,
            step=step,
            groups=groups,
            light_views=lambda: tuple(self.prep(v) for v in self.selection_augment(x, self.aug_gen)),
            views=(v1, v2),
            planned_extra=planned_extra,
            planned_view2=view2_indices,
            shard=shard if global_pos else None,
        )
        with self.autocast():
            extra = self.selector.select(ctx)
            if global_pos and extra is not None and not self.selector.selects_globally:
                extra = distributed.globalize(extra, shard)  # a selector that chose among local samples
            out = self.selector.transform_outputs(out, ctx)
            if global_pos:
                out = replace(out, shard=shard)
            loss = self.objective.loss(out, extra, self.selector.weight)
        self.optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks; with uneven slices each rank's mean loss is weighted by
        # its share, so that the update is the global batch's (factor 1 for even slices)
        scale = 1.0 if shard is None else shard.world_size * shard.local_size / shard.total
        self.backward(loss if scale == 1.0 else loss * scale)
        self.optimizer.step()
        momentum = self.objective.momentum_update(step + 1, total_steps)
        return loss, extra, momentum


def stop_on_bad_loss(
    run_dir: Path, epoch: int, first_bad: int, steps_per_epoch: int, mean_loss: float, write: bool = True
) -> None:
    """A NaN/inf loss: mark the run failed and stop; the last good checkpoint stays as it is."""
    where = f"epoch {epoch}" + (f", step {first_bad + 1} (step {first_bad - (epoch - 1) * steps_per_epoch + 1} of the epoch)" if first_bad >= 0 else "")
    kept = run_dir / runs.CHECKPOINT_DIR / runs.LAST_CHECKPOINT
    keep = f"last good checkpoint kept: {kept}" if kept.is_file() else "no checkpoint was written before"
    bad = "non-finite" if first_bad >= 0 else f"{mean_loss}"
    if write:  # rank 0 (the loss sum is all-reduced, so every rank stops at the same epoch)
        runs.mark_failed(run_dir, f"{bad} loss at {where}", epoch=epoch, step=first_bad + 1 if first_bad >= 0 else None, resumable=False)
    raise SSLBenchError(f"loss became {bad} at {where}; run stopped and marked failed, {keep}; lower train.lr or check the data")
