"""Semi-supervised fine-tuning: the whole network on a stratified fraction of the training labels.

The protocol of BYOL-TracIn (Zeng et al., MICCAI 2023; arXiv 2306.00112, Table 1): initialise from
the pre-trained encoder, add a linear head, fine-tune everything on a stratified random
``label_fraction`` of the training labels (paper: 0.1, 0.5, 1.0) for ``epochs`` epochs with the
pre-training augmentations, keep the epoch with the best validation ``select_metric`` (ties: the
earlier epoch; a score undefined at every epoch, e.g. one class in the split: the last epoch, with a
warning), report on the test split.  Repeated for ``seeds`` different label subsets and heads; the reported value is the mean
over them (the per-seed values are kept under ``per_seed``).  ``from_scratch: true`` runs the same
protocol from a randomly initialised encoder (the paper's "Random" row); so does a recipe with
``train.epochs: 0``.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from ssl_bench.data.base import batches
from ssl_bench.errors import SSLBenchError
from ssl_bench.evaluate.base import EVALUATIONS, Evaluation, EvalContext, Split, extract_features
from ssl_bench.evaluate.metrics import classification_metrics


def stratified_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a stratified random ``fraction`` of ``labels``: round(f·n_c) per class c, at least one.

    Multi-label rows are stratified by their full label vector.
    """
    g = torch.Generator().manual_seed(seed)
    keys = labels if labels.ndim == 1 else torch.unique(labels, dim=0, return_inverse=True)[1]
    chosen = []
    for c in torch.unique(keys):
        members = torch.nonzero(keys == c).flatten()
        n = max(1, int(round(fraction * len(members))))
        chosen.append(members[torch.randperm(len(members), generator=g)[:n]])
    return torch.sort(torch.cat(chosen)).values


class Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, num_outputs: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.num_features, num_outputs)

    def forward(self, x):
        return self.head(self.encoder(x))


@EVALUATIONS.register("finetune")
class FineTune(Evaluation):
    """Fine-tune encoder + linear head on a stratified label fraction; select on val, report test."""

    def __init__(
        self,
        label_fraction: float = 1.0,
        epochs: int = 20,
        lr: float = 0.01,
        batch_size: int = 128,
        weight_decay: float = 1e-4,
        seeds: int = 1,
        from_scratch: bool = False,
        select_split: Split = "val",
        select_metric: Literal["auc", "balanced_accuracy", "accuracy"] = "auc",
        test_split: Split = "test",
        augment: Optional[dict] = None,
    ):
        """``augment``: the augmentation block fine-tuning trains on (e.g. ``{name: byol, rotation: 0}``);
        null = the pre-training set without its blur and solarize (test images are sharp and not
        solarized; training on them is what the paper's "pre-training augmentations" leaves out)."""
        if not 0 < label_fraction <= 1:
            raise SSLBenchError(f"recipe key evaluate.finetune.label_fraction must be in (0, 1], got {label_fraction}")
        for k, v in (("epochs", epochs), ("batch_size", batch_size), ("seeds", seeds)):
            if v < 1:
                raise SSLBenchError(f"recipe key evaluate.finetune.{k} must be ≥ 1, got {v}")
        self.fraction, self.epochs, self.lr, self.batch_size = label_fraction, epochs, lr, batch_size
        self.weight_decay, self.seeds, self.from_scratch = weight_decay, seeds, from_scratch
        self.select_split, self.select_metric, self.test_split = select_split, select_metric, test_split
        if augment is not None and "name" not in augment:
            raise SSLBenchError(f"recipe key evaluate.finetune.augment must name an augmentation set, got {augment!r}")
        self.augment = augment

    @property
    def key(self) -> str:
        return f"finetune{'_scratch' if self.from_scratch else ''}@{self.fraction:g}"

    def run(self, ctx: EvalContext) -> dict:
        if ctx.encoder is None:
            raise SSLBenchError("evaluation finetune needs the trained encoder (run it through ssl-bench run)")
        block = self.views(ctx)
        train_view = ctx.view_of(block) if block is not None else ctx.train_view
        per_seed = [self._one(ctx, s, train_view) for s in range(self.seeds)]
        out = {k: float(np.mean([m[k] for m in per_seed])) for k in per_seed[0]}
        if self.seeds > 1:
            out.update({f"{k}_std": float(np.std([m[k] for m in per_seed], ddof=1)) for k in per_seed[0]})
        out["label_fraction"] = self.fraction
        out["per_seed"] = per_seed
        if block is not None:
            out["augment"] = block  # what the fine-tuning images were augmented with
        return out

    def views(self, ctx: EvalContext) -> Optional[dict]:
        """The augmentation block fine-tuning trains on: ``augment``, else the pre-training set without
        its blur and solarize (None: the context's own training view, when it names no set)."""
        if self.augment is not None:
            return dict(self.augment)
        return None if ctx.augment_cfg is None else sharp_views(ctx.augment_cfg)

    @classmethod
    def resolve(cls, block: dict, recipe: dict) -> dict:
        if block.get("augment") is None and isinstance(recipe.get("augment"), dict):
            return {**block, "augment": sharp_views(recipe["augment"])}
        return block


    def _one(self, ctx: EvalContext, seed: int, train_view=None) -> dict:
        train_view = train_view or ctx.train_view
        data, dev = ctx.data, ctx.device
        multilabel = data.task == "multi-label"
        torch.manual_seed(1000 + seed)
        encoder = ctx.encoder(random=self.from_scratch)
        model = Classifier(encoder, data.num_classes if not multilabel else data.train.labels.shape[1]).to(dev)
        if ctx.channels_last:
            model = model.to(memory_format=torch.channels_last)
        train_idx = stratified_subset(data.train.labels, self.fraction, seed)
        images, labels = data.train.images[train_idx].to(dev), data.train.labels[train_idx].to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        order_gen = torch.Generator().manual_seed(seed)
        aug_gen = torch.Generator(device=dev).manual_seed(seed)
        n = len(train_idx)
        bs = min(self.batch_size, n)
        steps_per_epoch = max(1, n // bs)
        total = steps_per_epoch * self.epochs
        best, best_state, step = -math.inf, None, 0
        for epoch in range(self.epochs):
            model.train()
            for idx in batches(n, bs, order_gen, drop_last=True):
                if len(idx) < 2:
                    continue
                for g in opt.param_groups:
                    g["lr"] = cosine_schedule(step, total + 1, self.lr, 0.0)
                x = train_view(images[idx.to(dev)], aug_gen)
                logits = model(x)
                y = labels[idx.to(dev)]
                loss = F.binary_cross_entropy_with_logits(logits, y.float()) if multilabel else F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
            score = self._evaluate(ctx, model, self.select_split)[self.select_metric]
            score = -math.inf if math.isnan(score) else score
            # model selection on the validation split (ties keep the earlier epoch); when the score is
            # undefined at every epoch (NaN: e.g. one class in the split) the last epoch is kept
            if score > best or (best_state is None and epoch == self.epochs - 1):
                best, best_state = score, copy.deepcopy(model.state_dict())
        if best == -math.inf:
            warnings.warn(
                f"fine-tuning: validation {self.select_metric} is undefined at every epoch (one class in the "
                f"{self.select_split} split?): nothing to select on, keeping the last epoch"
            )
        model.load_state_dict(best_state)
        return self._evaluate(ctx, model, self.test_split)

    @torch.no_grad()
    def _evaluate(self, ctx: EvalContext, model: nn.Module, split: str) -> dict:
        s = ctx.data.split(split)
        logits = torch.from_numpy(extract_features(model, s.images, ctx.eval_view, ctx.device, channels_last=ctx.channels_last))
        proba = torch.sigmoid(logits) if ctx.data.task == "multi-label" else logits.softmax(1)
        return classification_metrics(s.labels.numpy(), proba.numpy(), ctx.data.task)


def sharp_views(augment: dict) -> dict:
    """A pre-training augmentation block without blur and solarize (fine-tuning's default: the test
    images it is scored on are sharp and not solarized)."""
    from ssl_bench.augment import AUGMENTATIONS
    from ssl_bench.registry import accepted_options

    accepts = accepted_options(AUGMENTATIONS.get(augment["name"])) or set()
    return {**copy.deepcopy(augment), **{k: 0.0 for k in ("blur", "solarize") if k in accepts}}
