"""One training step, as in Fig. 1 of BYOL-TracIn (arXiv 2306.00112): two augmented views → online
and target outputs → the selector picks extra positives → the objective pulls each sample towards
its own other view *and* its extra positives → update, EMA.

The training loop, the benchmarks (tracin_overhead, decode_cache) and the tests run this same step;
``ssl-bench positives`` runs only its selection part, on a frozen network (ssl_bench/positives_report.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch
from torch import nn

from ssl_bench import distributed
from ssl_bench.distributed import Shard
from ssl_bench.objectives import Objective
from ssl_bench.selectors import SelectionContext, Selector

__all__ = ["Batch", "TrainStep"]


@dataclass
class Batch:
    """One step's data on the training device: this rank's slice of the global batch in DDP.

    ``images`` are view 1's uint8 images and, unless a dataset selector paired other images
    (``images2``, MICLe ``replace``), view 2's too."""

    images: torch.Tensor  # uint8 [B, C, H, W]
    labels: torch.Tensor  # for the oracle and for logging only
    indices: torch.Tensor  # dataset indices of ``images``
    groups: Optional[torch.Tensor] = None
    images2: Optional[torch.Tensor] = None  # view 2's images when they are other images
    indices2: Optional[torch.Tensor] = None  # their dataset indices
    planned_extra: Optional[torch.Tensor] = None  # [B, k] extra positives fixed by the plan (global batch positions)
    shard: Optional[Shard] = None  # DDP: this rank's rows of the global batch
    pool_labels: Optional[torch.Tensor] = None  # DDP: the labels of the whole global batch

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class StepResult:
    loss: torch.Tensor  # the loss that was back-propagated (unscaled), on the device
    extra: Optional[torch.Tensor]  # the selector's positives (global batch positions in DDP)
    momentum: Optional[float]  # the EMA momentum used after the update (BYOL), else None
    counts: torch.Tensor  # [3] selector-precision counts (see selectors.base.selection_counts)


@dataclass
class TrainStep:
    """``step(batch, lr, i)``: one optimisation step on ``batch`` at learning rate ``lr``, step ``i``."""

    model: nn.Module  # the (Fabric-wrapped) objective whose forward runs both views
    objective: Objective  # the bare objective (loss maths, EMA)
    selector: Selector
    optimizer: torch.optim.Optimizer
    backward: Callable[[torch.Tensor], None]
    augment: Callable
    selection_augment: Callable
    prep: Callable[[torch.Tensor], torch.Tensor]  # normalise (+ memory format)
    aug_gen: torch.Generator
    sel_gen: torch.Generator
    total_steps: int  # of the run: the EMA schedule's horizon
    autocast: Callable = contextlib.nullcontext  # the precision context of the selectors' own forwards
    clip: Optional[Callable[[], None]] = None  # gradient clipping between backward and the update

    def global_positives(self, shard: Optional[Shard]) -> bool:
        """DDP: do this step's selector and objective work on the global batch?  (An objective
        without ``global_positives`` gets positives chosen among its rank's own samples.)"""
        return shard is not None and shard.world_size > 1 and self.objective.global_positives

    def __call__(self, batch: Batch, lr: float, step: int) -> StepResult:
        shard = batch.shard if self.global_positives(batch.shard) else None
        planned = batch.planned_extra
        if batch.shard is not None and shard is None and planned is not None:
            planned = distributed.localize(planned, batch.shard)  # positives on other ranks: none
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        # 1. two augmented views (view 2 of other images when a dataset selector paired them)
        x = batch.images
        if batch.images2 is None:
            v1, v2 = self.augment(x, self.aug_gen)
        else:
            v1, v2 = self.augment.view1(x, self.aug_gen), self.augment.view2(batch.images2, self.aug_gen)
        v1, v2 = self.prep(v1), self.prep(v2)
        # 2. online and target outputs of both views (in the run's precision: bf16 forwards under
        # bf16-mixed), taken on in fp32: positive selection and the losses are exact
        out = self.model(v1, v2).float()
        ctx = SelectionContext(
            out=out, labels=batch.labels, indices=batch.indices, objective=self.objective, generator=self.sel_gen,
            lr=lr, step=step, groups=batch.groups, views=(v1, v2), planned_extra=planned, planned_view2=batch.indices2,
            light_views=lambda: tuple(self.prep(v) for v in self.selection_augment(x, self.aug_gen)),
            shard=shard, pool_labels=batch.pool_labels if shard is not None else None, autocast=self.autocast,
        )
        with torch.autocast(x.device.type, enabled=False):  # a selector's own forwards re-enter ctx.autocast
            # 3. extra positives
            chosen = self.selector.choose(ctx)
            out = chosen.out if shard is None else replace(chosen.out, shard=shard)
            # 4. each sample pulled towards its other view and its extra positives
            loss = self.objective.loss(out, chosen.extra, self.selector.weight)
        # 5. update; DDP averages gradients over ranks, so with uneven slices each rank's mean loss is
        # weighted by its share and the update is the global batch's (factor 1 for even slices)
        self.optimizer.zero_grad(set_to_none=True)
        scale = 1.0 if batch.shard is None else batch.shard.world_size * batch.shard.local_size / batch.shard.total
        self.backward(loss if scale == 1.0 else loss * scale)
        if self.clip is not None:
            self.clip()
        self.optimizer.step()
        momentum = self.objective.momentum_update(step + 1, self.total_steps)  # 6. EMA after step `step`
        return StepResult(loss, chosen.extra, momentum, chosen.counts)
