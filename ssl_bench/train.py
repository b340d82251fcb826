"""The training loop: one recipe → one run directory.

Reads like Fig. 1 of BYOL-TracIn (arXiv 2306.00112): two augmented views → online and target
outputs → the selector picks extra positives from the batch → the objective pulls each sample
towards its own other view *and* its extra positives.

Devices and precision come from Lightning Fabric (``train.device``, ``train.precision``); the
loop itself is ours.  Data live on the training device as uint8 and are augmented there in
batches, so there are no loader workers to tune on either CPU or GPU.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from ssl_bench import runs
from ssl_bench.augment import AUGMENTATIONS, center_view
from ssl_bench.backbones import build_backbone
from ssl_bench.data import DATASETS, DataSplits, batches, num_batches
from ssl_bench.errors import SSLBenchError
from ssl_bench.evaluate import EVALUATIONS, EvalContext, extract_features
from ssl_bench.objectives import OBJECTIVES, Objective
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
) -> Path:
    """Train and evaluate ``recipe``; return the run directory."""
    cfg = recipe.cfg
    tcfg = recipe.train
    if device:
        tcfg.device = device
        tcfg.validate()
        cfg["train"]["device"] = device
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    from ssl_bench.pretrained import resolve_pretrained

    resolve_pretrained(recipe, device=device, progress=progress, log=log)  # selector.checkpoint: a recipe
    seed = cfg["seed"]
    torch.manual_seed(seed)
    dev = select_device(tcfg.device)

    comp = build_components(recipe)
    data, objective, selector = comp.data, comp.objective, comp.selector
    n = len(data.train)
    steps_per_epoch = num_batches(n, tcfg.batch_size, tcfg.drop_last)
    total_steps = steps_per_epoch * tcfg.epochs

    from lightning_fabric import Fabric

    fabric = Fabric(accelerator=dev.type, devices=[dev.index] if dev.index is not None else 1, precision=tcfg.precision)

    # ---- only now, with everything built and checked, is anything written ----
    run_dir = runs.create_run_dir(out, cfg["out_dir"], cfg["name"], seed)
    runs.atomic_write_text(run_dir / runs.RECIPE_FILE, recipe.to_yaml())
    method = method_name(cfg, selector, objective)
    log(f"run directory: {run_dir}")
    log(
        f"{method} on {data.name} ({n} train images, {data.channels}×{data.image_size}²) · backbone {cfg['backbone']['name']} "
        f"· selector {cfg['selector']['name']} · {tcfg.epochs} epochs × {steps_per_epoch} steps · device {dev}"
    )

    if tcfg.channels_last:
        objective = objective.to(memory_format=torch.channels_last)
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, tcfg)
    model, optimizer = fabric.setup(objective, optimizer)
    raw: Objective = objective  # loss/EMA math lives on the module itself, outside forward
    dev = fabric.device

    images = data.train.images.to(dev)
    labels = data.train.labels.to(dev)
    groups = data.train.groups.to(dev) if data.train.groups is not None else None
    normalize = Normalize.fit(data.train.images, seed=seed).to(dev)
    chance = data.label_chance_rate()
    data_gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator(device=dev).manual_seed(seed + 1)
    sel_gen = torch.Generator(device=dev).manual_seed(seed + 2)
    memory_format = torch.channels_last if tcfg.channels_last else torch.contiguous_format

    def prep(v: torch.Tensor) -> torch.Tensor:
        return normalize(v).contiguous(memory_format=memory_format)

    step_fn = TrainStep(
        model, raw, selector, optimizer, fabric.backward, comp.augment, comp.selection_augment, prep, aug_gen, sel_gen,
        autocast=fabric.autocast,
    )

    def checkpoint(epoch: int, step: int) -> None:
        rng = {"data": data_gen.get_state(), "augment": aug_gen.get_state(), "selector": sel_gen.get_state()}
        save_checkpoint(run_dir, raw, optimizer, selector, normalize, cfg, epoch, step, rng)

    step = 0
    record = {"loss": None, "selector_precision": None}  # stays so with train.epochs: 0 (Random baseline)
    t_start = time.perf_counter()
    with _progress(progress) as prog:
        task = prog.add_task("epoch 1", total=total_steps, loss="-", lr="-", ips="-") if prog else None
        for epoch in range(1, tcfg.epochs + 1):
            t_epoch = time.perf_counter()
            loss_sum = torch.zeros((), device=dev)
            counts = torch.zeros(3, dtype=torch.long, device=dev)
            seen = 0
            lr = momentum = None
            for idx in batches(n, tcfg.batch_size, data_gen, drop_last=tcfg.drop_last):
                if len(idx) < 2:  # a last batch of one image (drop_last: false): nothing to contrast
                    continue
                lr = lr_at(step, total_steps, tcfg, steps_per_epoch)
                plan = selector.plan(idx)
                idx_d = plan.view1.to(dev)
                lab = labels[idx_d]
                x2 = None if plan.view2 is plan.view1 else images[plan.view2.to(dev)]
                loss, extra, momentum = step_fn(
                    images[idx_d], lab, idx_d, None if groups is None else groups[idx_d], lr, step, total_steps,
                    x2=x2, planned_extra=None if plan.extra is None else plan.extra.to(dev),
                    view2_indices=None if x2 is None else plan.view2,
                )
                step += 1
                loss_sum += loss.detach()
                counts += selector.counts(extra, lab)
                seen += len(idx_d)
                if prog is not None and (step % 5 == 0 or step == total_steps):
                    elapsed = time.perf_counter() - t_epoch
                    prog.update(task, completed=step, loss=f"{loss.item():.4f}", lr=f"{lr:.4g}", ips=f"{seen / elapsed:.0f}")
            n_steps = max(steps_per_epoch, 1)
            mean_loss = float(loss_sum) / n_steps
            if not math.isfinite(mean_loss):
                raise SSLBenchError(f"loss became {mean_loss} in epoch {epoch}; lower train.lr or check the data")
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
    if tcfg.epochs == 0:  # no pre-training: the untrained encoder is the run's checkpoint
        checkpoint(0, 0)
    train_time = time.perf_counter() - t_start

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
        return copy.deepcopy(raw.backbone)

    ectx = EvalContext(
        data=data,
        embed=embed,
        encoder=fresh_encoder,
        train_view=lambda x, g: prep(comp.augment.view1(x, g)),
        eval_view=lambda x: prep(center_view(x, view_size)),
        device=dev,
        channels_last=tcfg.channels_last,
    )
    eval_results: dict = {}
    for ev_cfg, ev in zip(comp.eval_cfgs, comp.evaluations):
        key = getattr(ev, "key", ev_cfg["name"])  # e.g. finetune@0.1
        key = key if key not in eval_results else f"{key}_{len(eval_results)}"
        eval_results[key] = ev.run(ectx)
        chosen = f"  (C = {ev.chosen_C:g}, chosen on val)" if getattr(ev, "chosen_C", None) is not None else ""
        shown = {k: v for k, v in eval_results[key].items() if isinstance(v, float) and not k.endswith("_std") and k != "label_fraction"}
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
        "device": str(dev),
        "torch": torch.__version__,
    }
    runs.write_results(run_dir, results)
    log(f"results: {run_dir / runs.RESULTS_FILE}  (train {train_time:.1f} s)")
    return run_dir


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

    def __call__(
        self, x, labels, indices, groups, lr: float, step: int, total_steps: int, x2=None, planned_extra=None, view2_indices=None
    ):
        """``x``: uint8 images of the batch; ``x2``: other images for view 2 (MICLe), else ``x``."""
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
        )
        with self.autocast():
            extra = self.selector.select(ctx)
            out = self.selector.transform_outputs(out, ctx)
            loss = self.objective.loss(out, extra, self.selector.weight)
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(loss)
        self.optimizer.step()
        momentum = self.objective.momentum_update(step + 1, total_steps)
        return loss, extra, momentum


def save_checkpoint(
    run_dir: Path, objective: nn.Module, optimizer, selector: Selector, normalize: Normalize, cfg: dict, epoch: int, step: int, rng: dict
) -> None:
    state = {
        "rng": {k: v.cpu() for k, v in rng.items()},
        "epoch": epoch,
        "step": step,
        "objective": objective.state_dict(),
        "optimizer": optimizer.state_dict(),
        "selector": selector.state_dict(),
        "normalize": normalize.state_dict(),
        "recipe": cfg,
    }
    runs.atomic_torch_save(state, Path(run_dir) / runs.CHECKPOINT_DIR / runs.LAST_CHECKPOINT)
