"""Test helpers that build what ``ssl-bench run`` builds — the real training step and the real
evaluation context — instead of re-implementing them."""

from __future__ import annotations

from typing import Optional

import torch

from ssl_bench.recipe import load_recipe
from ssl_bench.step import Batch, TrainStep
from ssl_bench.train import training_step


def breast_recipe(**blocks) -> dict:
    """A small but complete BYOL recipe on real BreastMNIST (blocks override the defaults)."""
    cfg = {
        "name": "test",
        "data": {"name": "medmnist", "flag": "breastmnist", "size": 28, "download": False},
        "augment": {"name": "byol"},
        "backbone": {"name": "resnet18", "small_image_stem": True, "stem_pool": True},
        "objective": {"name": "byol", "hidden_dim": 128, "projection_dim": 64},
        "selector": {"name": "none"},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.05, "threads": 2},
        "evaluate": [],
    }
    for k, v in blocks.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) and "name" not in v else v
    return cfg


def real_step(cfg: dict, total_steps: int = 100) -> tuple[TrainStep, object]:
    """The training step ``ssl-bench run`` would train ``cfg`` with, and the recipe's components."""
    threads = torch.get_num_threads()
    try:
        return training_step(load_recipe(data=cfg), device="cpu", total_steps=total_steps)
    finally:
        torch.set_num_threads(threads)


def real_batch(data, n: int = 32, seed: int = 0, split: str = "train") -> Batch:
    """A :class:`Batch` of ``n`` real images of ``data`` (uint8, as the loop gathers them)."""
    s = data.split(split)
    idx = torch.randperm(len(s), generator=torch.Generator().manual_seed(seed))[:n]
    groups = None if s.groups is None else s.groups[idx]
    return Batch(images=s.images[idx], labels=s.labels[idx], indices=idx, groups=groups)


def eval_context(data, backbone: Optional[dict] = None, seed: int = 7, view_size: Optional[int] = None,
                 augment: Optional[dict] = None):
    """The evaluation context ``ssl-bench run`` builds after pre-training, around a seeded (untrained)
    BYOL network: frozen features, fine-tuning copies of its backbone, the training and evaluation views."""
    from ssl_bench.augment import AUGMENTATIONS
    from ssl_bench.backbones import build_backbone
    from ssl_bench.data.normalize import Normalize
    from ssl_bench.evaluate import EvalContext
    from ssl_bench.objectives import OBJECTIVES

    backbone = backbone or {"name": "resnet18"}
    torch.manual_seed(seed)
    objective = OBJECTIVES.build({"name": "byol", "hidden_dim": 64, "projection_dim": 32},
                                 build_backbone(backbone, in_chans=data.channels))
    size = view_size or data.image_size
    block = {"name": "byol", "size": size, **(augment or {})}
    return EvalContext.of_objective(
        objective, data, AUGMENTATIONS.build(block), size, Normalize.fit(data.train.images), torch.device("cpu"),
        backbone_cfg=backbone, augment_cfg=block,
    )
