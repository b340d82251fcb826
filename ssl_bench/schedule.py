"""Pure schedule functions of the loop (nanoGPT's ``get_lr(it)``): the learning rate of a step,
the stage of an epoch, the optimiser."""

from __future__ import annotations

import dataclasses

import torch
from lightly.utils.scheduler import cosine_schedule

from ssl_bench.errors import SSLBenchError
from ssl_bench.objectives import Objective
from ssl_bench.recipe import TrainConfig

__all__ = ["lr_at", "check_stages", "enter_epoch", "staged_lr", "param_groups", "build_optimizer"]


def lr_at(step: int, total: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Warm-up for ``warmup_epochs`` (a linear ramp to ``lr``, or ``lr`` held: ``warmup: constant``),
    then cosine decay to ``min_lr`` (or constant)."""
    warm = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total)  # a short smoke run: warm-up only
    if step < warm:
        return cfg.lr if cfg.warmup == "constant" else cfg.lr * (step + 1) / warm
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


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """The trainable parameters of ``model``; with ``train.exclude_bn_bias_wd`` the normalisation
    layers' parameters and every bias in a group without weight decay (lightly's
    ``get_weight_decay_parameters``: the split of SimCLR's and BYOL's LARS recipes, which LARS also
    leaves out of its layer-wise scaling)."""
    if not cfg.exclude_bn_bias_wd:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    from lightly.models.utils import get_weight_decay_parameters

    decay, no_decay = get_weight_decay_parameters([model])
    seen: set[int] = set()

    def trainable(ps):  # a module reachable twice (shared) lists its parameters twice
        out = [p for p in ps if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in out)
        return out

    return [{"params": trainable(decay)}, {"params": trainable(no_decay), "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``train.optimizer``: SGD with momentum, AdamW, or LARS (lightly's: SGD with layer-wise trust
    ratios, You et al. 2017, arXiv 1708.03888 — what BYOL and SimCLR train with at large batches and
    what solo-learn's and lightly's BYOL benchmarks use)."""
    groups = param_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "lars":
        from lightly.utils.lars import LARS

        return LARS(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                    trust_coefficient=cfg.lars_trust_coefficient)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
