"""Fine-tuning: the whole network (encoder + a linear head) on a stratified fraction of the training labels.

The protocol of BYOL-TracIn's Table 1 (Zeng et al., MICCAI 2023; arXiv 2306.00112): initialise from
the pre-trained encoder, add a linear head, fine-tune everything on a stratified random
``label_fraction`` of the training labels (paper: 0.1, 0.5, 1.0), keep the epoch with the best
validation ``select_metric`` (ties: the earlier epoch; a score undefined at every epoch, e.g. one
class in the split: the last epoch, with a warning), report on the test split.  Repeated for
``seeds`` different label subsets and heads; the reported value is the mean over them (the per-seed
values are kept under ``per_seed``).  ``from_scratch: true`` runs the same protocol from a randomly
initialised encoder (the paper's "Random" row); so does a recipe with ``train.epochs: 0``.

Two registered presets, both validated against published numbers (docs/validation.md):

- ``finetune_medmnist`` is MedMNIST v2's training recipe (Yang et al., Scientific Data 2023; its
  ResNet-18 (28) rows: BreastMNIST ACC 0.863 / AUC 0.901, PneumoniaMNIST 0.854 / 0.944, RetinaMNIST
  0.524 / 0.717): Adam lr 1e-3, no weight decay, batch 128, 100 epochs with the learning rate × 0.1
  at 50 % and 75 % of them, no augmentation, cross-entropy, the epoch of best validation AUC.
- ``finetune`` (the default) is that recipe with what the measurements of this project changed
  (docs/paper_fidelity.md): a class-balanced cross-entropy (weights n / (C·n_c), as scikit-learn's
  ``class_weight="balanced"``), because with imbalanced labels (HAM10000: 67 % "nv") the plain loss
  sat at the label prior and predicted one class — HAM10000 at 32 px from scratch, 5 epochs, BMA
  0.143 plain vs 0.46 balanced; and horizontal flips as the only augmentation.  The pre-training
  augmentations (area-0.08 crops, colour jitter) that the paper's text names are not the default: at
  28–32 px they often crop the lesion away, and with them a from-scratch ResNet-18 stayed at chance
  (BMA 0.143; BreastMNIST AUC 0.755 where MedMNIST reports 0.901).  ``augment`` sets any block.

Every result keeps the chosen epoch (``chosen_epoch``), the validation scores of every epoch
(``val_history``: the select metric and the others, so selection and report can be compared) and the
baselines of :func:`~ssl_bench.evaluate.metrics.classification_metrics` (majority-class accuracy,
chance BMA, the histogram of the test predictions).
"""

from __future__ import annotations

import copy
import inspect
import math
import time
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

__all__ = ["Precision", "stratified_subset", "class_weights", "FineTune", "MedMNISTFineTune"]

SelectMetric = Literal["auc", "balanced_accuracy", "accuracy"]
Precision = Literal["auto", "32-true", "bf16-mixed"]


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


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Balanced class weights n / (C · n_c) over the classes present (scikit-learn's
    ``compute_class_weight("balanced")``); an absent class gets weight 0."""
    counts = torch.bincount(labels.reshape(-1), minlength=num_classes).float()
    present = counts > 0
    w = torch.zeros(num_classes)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w


def step_lr(schedule: str, step: int, total: int, lr: float, milestones: tuple, gamma: float) -> float:
    """The learning rate at ``step`` of ``total``: ``multistep`` (× ``gamma`` at each milestone, a
    fraction of the steps) or ``cosine`` (to 0)."""
    if schedule == "cosine":
        return cosine_schedule(step, total + 1, lr, 0.0)
    return lr * gamma ** sum(step >= round(m * total) for m in milestones)


@EVALUATIONS.register("finetune")
class FineTune(Evaluation):
    """Fine-tune encoder + linear head on a stratified label fraction; select on val, report test."""

    DEFAULT_VIEWS = {"name": "flip"}  # the views when ``augment`` is null

    def __init__(
        self,
        label_fraction: float = 1.0,
        epochs: int = 20,
        lr: float = 1e-3,
        batch_size: int = 128,
        weight_decay: float = 0.0,
        seeds: int = 1,
        from_scratch: bool = False,
        select_split: Split = "val",
        select_metric: SelectMetric = "auc",
        test_split: Split = "test",
        augment: Optional[dict] = None,
        optimizer: Literal["adam", "sgd"] = "adam",
        momentum: float = 0.9,
        schedule: Literal["multistep", "cosine"] = "multistep",
        milestones: tuple[float, float] = (0.5, 0.75),
        gamma: float = 0.1,
        class_weight: Literal["balanced", "none"] = "balanced",
        precision: Precision = "auto",
    ):
        """``augment``: the augmentation block fine-tuning trains on (null: the protocol's default
        views, horizontal flips for ``finetune``, none for ``finetune_medmnist``).

        ``optimizer``: adam (default) or sgd (with ``momentum``).

        ``schedule``: multistep (lr × ``gamma`` at each of the ``milestones``) or cosine (to 0).

        ``milestones``: where multistep lowers the learning rate, as fractions of the epochs.

        ``gamma``: the factor of each multistep milestone.

        ``class_weight``: balanced = cross-entropy weighted n / (C·n_c) over the fine-tuning labels (single-label
        tasks); none = plain.

        ``precision``: auto = bf16 autocast where the device has native bf16 (as train.precision), else fp32; the loss
        and metrics are fp32.
        """
        if not 0 < label_fraction <= 1:
            raise SSLBenchError(f"recipe key evaluate.{self.registered_name}.label_fraction must be in (0, 1], got "
                                f"{label_fraction}")
        for k, v in (("epochs", epochs), ("batch_size", batch_size), ("seeds", seeds)):
            if v < 1:
                raise SSLBenchError(f"recipe key evaluate.{self.registered_name}.{k} must be ≥ 1, got {v}")
        for k, v in (("lr", lr), ("weight_decay", weight_decay), ("momentum", momentum), ("gamma", gamma)):
            if not v >= 0:
                raise SSLBenchError(f"recipe key evaluate.{self.registered_name}.{k} must be ≥ 0, got {v}")
        if any(not 0 <= m <= 1 for m in milestones):
            raise SSLBenchError(f"recipe key evaluate.{self.registered_name}.milestones are fractions of the epochs in "
                                f"[0, 1], got {list(milestones)}")
        self.fraction, self.epochs, self.lr, self.batch_size = label_fraction, epochs, lr, batch_size
        self.weight_decay, self.seeds, self.from_scratch = weight_decay, seeds, from_scratch
        self.select_split, self.select_metric, self.test_split = select_split, select_metric, test_split
        if augment is not None and (not isinstance(augment, dict) or "name" not in augment):
            raise SSLBenchError(f"recipe key evaluate.{self.registered_name}.augment must name an augmentation set, "
                                f"got {augment!r}")
        self.augment = augment
        self.optimizer, self.momentum, self.schedule = optimizer, momentum, schedule
        self.milestones, self.gamma = tuple(milestones), gamma
        self.class_weight, self.precision = class_weight, precision

    @property
    def key(self) -> str:
        return f"{self.registered_name or 'finetune'}{'_scratch' if self.from_scratch else ''}@{self.fraction:g}"

    def run(self, ctx: EvalContext) -> dict:
        if ctx.encoder is None:
            raise SSLBenchError(f"evaluation {self.registered_name} needs the trained encoder (run it through "
                                "ssl-bench run)")
        block = self.views()
        per_seed = [self.run_seed(ctx, s) for s in range(self.seeds)]
        numeric = [k for k, v in per_seed[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        out = {k: float(np.mean([m[k] for m in per_seed])) for k in numeric}
        if self.seeds > 1:
            out.update({f"{k}_std": float(np.std([m[k] for m in per_seed], ddof=1)) for k in numeric})
        for k in ("positive_class", "predicted_classes"):  # what the seeds predicted, not an average
            if k in out:
                out[k] = int(per_seed[0][k]) if k == "positive_class" else int(max(m[k] for m in per_seed))
        out["pred_histogram"] = [int(v) for v in np.sum([m["pred_histogram"] for m in per_seed], axis=0)]
        out["label_fraction"] = self.fraction
        out["select_metric"] = self.select_metric
        out["per_seed"] = per_seed
        out["augment"] = block  # what the fine-tuning images were augmented with
        return out

    def views(self) -> dict:
        """The augmentation block fine-tuning trains on: ``augment``, else the protocol's default."""
        return dict(self.augment) if self.augment is not None else dict(self.DEFAULT_VIEWS)

    @classmethod
    def resolve(cls, block: dict, recipe: dict) -> dict:
        if block.get("augment") is None:  # recipe.yaml says which views fine-tuning trained on
            return {**block, "augment": dict(cls.DEFAULT_VIEWS)}
        return block

    def run_seed(self, ctx: EvalContext, seed: int, test_proba: bool = False) -> dict:
        """One fine-tuning (label subset and head of ``seed``): the test metrics of the chosen epoch,
        ``chosen_epoch`` and ``val_history``; ``test_proba``: also the test probabilities (``proba``)."""
        from ssl_bench.device import autocast, resolve_precision

        train_view = ctx.view_of(self.views())
        data, dev = ctx.data, ctx.device
        multilabel = data.task == "multi-label"
        precision = resolve_precision(self.precision, dev)
        torch.manual_seed(1000 + seed)
        encoder = ctx.encoder(random=self.from_scratch)
        n_out = data.num_classes if not multilabel else data.train.labels.shape[1]
        model = Classifier(encoder, n_out).to(dev)
        if ctx.channels_last:
            model = model.to(memory_format=torch.channels_last)
        train_idx = stratified_subset(data.train.labels, self.fraction, seed)
        images, labels = data.train.images[train_idx].to(dev), data.train.labels[train_idx].to(dev)
        weight = None
        if self.class_weight == "balanced" and not multilabel:
            weight = class_weights(labels.cpu(), n_out).to(dev)
        if self.optimizer == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum,
                                  weight_decay=self.weight_decay)
        order_gen = torch.Generator().manual_seed(seed)
        aug_gen = torch.Generator(device=dev).manual_seed(seed)
        n = len(train_idx)
        bs = min(self.batch_size, n)
        steps_per_epoch = max(1, n // bs)
        total = steps_per_epoch * self.epochs
        best, best_state, best_epoch, step, history = -math.inf, None, None, 0, []
        t0 = time.perf_counter()
        for epoch in range(self.epochs):
            model.train()
            loss_sum, n_steps = 0.0, 0
            for idx in batches(n, bs, order_gen, drop_last=True):
                if len(idx) < 2:
                    continue
                for g in opt.param_groups:
                    g["lr"] = step_lr(self.schedule, step, total, self.lr, self.milestones, self.gamma)
                x = train_view(images[idx.to(dev)], aug_gen)
                with autocast(precision, dev):
                    logits = model(x)
                logits = logits.float()  # the loss in fp32
                y = labels[idx.to(dev)]
                if multilabel:
                    loss = F.binary_cross_entropy_with_logits(logits, y.float())
                else:
                    loss = F.cross_entropy(logits, y, weight=weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum, n_steps, step = loss_sum + float(loss.detach()), n_steps + 1, step + 1
            val = self._evaluate(ctx, model, self.select_split, precision)
            history.append({"epoch": epoch + 1, "train_loss": loss_sum / max(n_steps, 1),
                            **{k: val[k] for k in ("auc", "balanced_accuracy", "accuracy") if k in val}})
            score = val[self.select_metric]
            score = -math.inf if math.isnan(score) else score
            # model selection on the validation split (ties keep the earlier epoch); when the score is
            # undefined at every epoch (NaN: e.g. one class in the split) the last epoch is kept
            if score > best or (best_state is None and epoch == self.epochs - 1):
                best, best_state, best_epoch = score, copy.deepcopy(model.state_dict()), epoch + 1
            if ctx.log is not None:
                ctx.log(f"  {self.key} seed {seed} epoch {epoch + 1}/{self.epochs}  loss "
                        f"{history[-1]['train_loss']:.4f}  val {self.select_metric} {val[self.select_metric]:.4f}  "
                        f"({time.perf_counter() - t0:.0f} s)")
        if best == -math.inf:
            warnings.warn(
                f"fine-tuning: validation {self.select_metric} is undefined at every epoch (one class in the "
                f"{self.select_split} split?): nothing to select on, keeping the last epoch"
            )
        model.load_state_dict(best_state)
        out = self._evaluate(ctx, model, self.test_split, precision, keep_proba=test_proba)
        out["chosen_epoch"] = best_epoch
        out["val_history"] = history
        return out

    @torch.no_grad()
    def _evaluate(self, ctx: EvalContext, model: nn.Module, split: str, precision: str = "32-true",
                  keep_proba: bool = False) -> dict:
        s = ctx.data.split(split)
        logits = extract_features(model, s.images, ctx.eval_view, ctx.device, channels_last=ctx.channels_last,
                                  precision=precision)
        logits = torch.from_numpy(logits).float()
        proba = torch.sigmoid(logits) if ctx.data.task == "multi-label" else logits.softmax(1)
        out = classification_metrics(s.labels.numpy(), proba.numpy(), ctx.data.task, ctx.data.positive_class)
        if keep_proba:
            out["proba"] = proba.numpy()
        return out


def with_defaults(base: type, **defaults):
    """An ``__init__`` for a subclass of ``base`` that is ``base.__init__`` with other defaults — in its
    signature too, which is what the registry checks, fills into recipe.yaml and lists."""
    sig = inspect.signature(base.__init__)
    params = [p.replace(default=defaults[p.name]) if p.name in defaults else p for p in sig.parameters.values()]

    def __init__(self, **options):
        base.__init__(self, **{**defaults, **options})

    __init__.__signature__ = sig.replace(parameters=params)
    __init__.__annotations__ = dict(base.__init__.__annotations__)
    __init__.__doc__ = base.__init__.__doc__
    return __init__


@EVALUATIONS.register("finetune_medmnist")
class MedMNISTFineTune(FineTune):
    """MedMNIST v2's training recipe (Adam 1e-3, 100 epochs, lr × 0.1 at 50/75, no augmentation).

    Yang et al., "MedMNIST v2", Scientific Data 2023 (arXiv 2110.14795): the options of ``finetune``
    with MedMNIST's values as defaults (100 epochs, plain cross-entropy); ``augment`` null = none."""

    DEFAULT_VIEWS = {"name": "none"}
    __init__ = with_defaults(FineTune, epochs=100, class_weight="none")
