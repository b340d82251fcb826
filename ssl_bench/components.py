"""A recipe's parts, built and checked before anything is written: data, views, network, selector,
evaluations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ssl_bench.augment import AUGMENTATIONS
from ssl_bench.backbones import build_backbone
from ssl_bench.data import DATASETS, DataSplits
from ssl_bench.errors import SSLBenchError
from ssl_bench.evaluate import EVALUATIONS, Evaluation
from ssl_bench.objectives import OBJECTIVES, Objective
from ssl_bench.recipe import Recipe
from ssl_bench.selectors import SELECTORS, Selector
from ssl_bench.selectors.base import check_compatible

__all__ = ["method_name", "Components", "build_components"]


def method_name(recipe: dict, selector: Selector, objective: Objective) -> str:
    """The name in results and tables: the recipe's ``method``, else objective-selector display names
    (``BYOL-TracIn``; a frozen network's selector: ``BYOL-TracIn-pretrained``, as the paper's Table 1)."""
    if recipe.get("method"):
        return recipe["method"]
    obj = objective.display or recipe["objective"]["name"]
    if recipe["selector"]["name"] == "none":
        return obj
    return f"{obj}-{selector.display or recipe['selector']['name']}{selector.variant()}"


@dataclass
class Components:
    """Everything a recipe builds before the run directory is created (so bad input writes nothing)."""

    data: DataSplits
    augment: Callable
    selection_augment: Callable
    objective: Objective
    selector: Selector
    evaluations: list[Evaluation]
    view_size: int
    eval_cfgs: list = field(default_factory=list)


def build_components(recipe: Recipe) -> Components:
    """Build every part of ``recipe`` (the global RNG, seeded by the caller, initialises the network)."""
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
    check_compatible(selector, objective, cfg["selector"]["name"], cfg["objective"]["name"])
    selector.setup(objective, data)
    selector.seed(cfg["seed"] + 3)
    evaluations = [EVALUATIONS.build(ev, key=f"evaluate[{i}]") for i, ev in enumerate(cfg["evaluate"])]
    for ev in evaluations:  # e.g. a kNN k larger than the training split: refused before any training
        ev.check_data(data)
    probe_forward(objective, data.channels, view_size, cfg["backbone"]["name"])
    return Components(data, augment, selection_augment, objective, selector, evaluations, view_size, cfg["evaluate"])


@torch.no_grad()
def probe_forward(objective: Objective, channels: int, size: int, backbone: str) -> None:
    """One forward of two images in eval mode (nothing changes): a backbone that cannot take this
    image size is a one-line error before anything is written."""
    probe = torch.zeros(2, channels, size, size)
    try:
        objective.eval()
        objective(probe, probe)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise SSLBenchError(f"backbone '{backbone}' cannot take {channels}×{size}×{size} images: {type(e).__name__}: "
                            f"{first}") from e
    finally:
        objective.train()
