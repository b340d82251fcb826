"""Every registry, and the module that defines each built-in member.

A registry knows its built-in members' names from ``locations`` without importing them, and imports
a member's module the first time the member is built or inspected (mmengine's lazy ``locations``,
timm's lazy model entries).  So checking a recipe's keys, ``train`` block and component names costs
no import of torch, timm or scikit-learn (ssl_bench/recipe.py checks those first), and a run imports
only the components its recipe names.  ``tests/test_catalog.py`` fails when a location and the
module's registration disagree.

To add a built-in component: register it in its module with the registry's decorator and add its
name and module here.  Plug-ins need nothing here (their files are imported, and register, as they
are loaded).
"""

from __future__ import annotations

from ssl_bench.registry import Registry

__all__ = ["DATASETS", "AUGMENTATIONS", "BACKBONES", "OBJECTIVES", "SELECTORS", "EVALUATIONS", "REGISTRIES"]

DATASETS = Registry(
    "dataset",
    base="ssl_bench.data.base:DataSplits",
    finish="ssl_bench.data.base:finish_dataset",
    locations={
        "medmnist": "ssl_bench.data.medmnist",
        "npz": "ssl_bench.data.npz",
        "isic": "ssl_bench.data.isic",
        "chestxray14": "ssl_bench.data.chestxray",
        "shenzhen": "ssl_bench.data.shenzhen",
        "folder": "ssl_bench.data.folder",
    },
)

AUGMENTATIONS = Registry(
    "augmentation",
    locations={name: "ssl_bench.augment.sets" for name in ("simclr", "byol", "rot90", "randrot", "light", "flip",
                                                           "none")},
)

# any timm architecture by name (TimmBackbone); the names are read from a per-timm-version cache
# where one exists, so that checking `backbone.name` need not import timm (ssl_bench/backbones.py)
BACKBONES = Registry("backbone", fallback="ssl_bench.backbones:timm_fallback",
                     fallback_names="ssl_bench.timm_names:timm_models", contains="ssl_bench.timm_names:is_timm_model")

OBJECTIVES = Registry(
    "objective",
    provided=("backbone",),
    locations={
        "byol": "ssl_bench.objectives.byol",
        "simsiam": "ssl_bench.objectives.simsiam",
        "simclr": "ssl_bench.objectives.simclr",
        "tsimcne": "ssl_bench.objectives.tsimcne",
    },
)

SELECTORS = Registry(
    "selector",
    locations={
        "none": "ssl_bench.selectors.augmentation",
        "oracle": "ssl_bench.selectors.oracle",
        "micle": "ssl_bench.selectors.micle",
        "fnc": "ssl_bench.selectors.fnc",
        "ft": "ssl_bench.selectors.ft",
        "nn": "ssl_bench.selectors.nn",
        "fs": "ssl_bench.selectors.similarity",
        "tracin": "ssl_bench.selectors.tracin",
    },
)

EVALUATIONS = Registry(
    "evaluation",
    base="ssl_bench.evaluate.base:Evaluation",
    locations={
        "linear": "ssl_bench.evaluate.linear",
        "knn": "ssl_bench.evaluate.knn",
        "finetune": "ssl_bench.evaluate.finetune",
        "finetune_medmnist": "ssl_bench.evaluate.finetune",
        "transfer": "ssl_bench.evaluate.transfer",
        "embedding": "ssl_bench.evaluate.embedding",
        "tsne": "ssl_bench.evaluate.tsne",
    },
)

# recipe block → registry (evaluate[] blocks: EVALUATIONS)
REGISTRIES = {
    "data": DATASETS,
    "augment": AUGMENTATIONS,
    "selection_augment": AUGMENTATIONS,
    "backbone": BACKBONES,
    "objective": OBJECTIVES,
    "selector": SELECTORS,
}
