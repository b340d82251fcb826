"""Containers for in-memory image data and the batch iterator of the training loop.

Images are held as one uint8 tensor ``[N, C, H, W]`` (the whole split fits in memory for every
dataset ssl-bench targets once decoded and resized; image folders are cached to that form).
Augmentation then runs in batches on the training device, so there is no per-sample Python work
and no DataLoader worker pool: slicing an index permutation is the whole loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import torch

from ssl_bench import catalog

__all__ = [
    "DatasetSpec", "ImageSet", "DataSplits", "check_classes", "finish_dataset", "DATASETS", "num_batches",
    "batches",
]

class DatasetSpec:
    """A dataset's options (a recipe's ``data`` block) whose :meth:`load` returns the splits; the
    registry loads it when it builds the block.  Plug-ins may instead register a function that
    returns :class:`DataSplits`."""

    def load(self) -> "DataSplits":  # pragma: no cover - abstract
        raise NotImplementedError



TASKS = ("binary-class", "multi-class", "multi-label", "ordinal-regression")


@dataclass
class ImageSet:
    """One split: ``images`` uint8 [N,C,H,W]; ``labels`` long [N] (or float [N,L] multi-label);
    ``groups`` long [N] (patient / lesion / volume id) or None."""

    images: torch.Tensor
    labels: torch.Tensor
    groups: Optional[torch.Tensor] = None

    def __post_init__(self):
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N,C,H,W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape[0] != n or (self.groups is not None and self.groups.shape[0] != n):
            raise ValueError("images, labels and groups must have the same length")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2


@dataclass
class DataSplits:
    """What a dataset adapter returns: named splits plus what evaluation needs to know."""

    name: str  # display name, e.g. "BreastMNIST"
    train: ImageSet
    test: ImageSet
    val: Optional[ImageSet] = None
    task: str = "multi-class"
    class_names: list[str] = field(default_factory=list)
    # image-file adapters: the file of every row per split, the files dropped by skip_corrupt, the cache
    files: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    cache_file: Optional[object] = None
    source: str = ""  # the file or folder the data was read from (data.root / data.path), for messages

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task}")

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def positive_class(self) -> int:
        """The index of a binary task's positive class, from its class names (BreastMNIST's "malignant"
        is label 0, Shenzhen's "tuberculosis" label 1): the class ``precision_pos`` is the precision
        of.  A name that reads as a finding (malignant, pneumonia, tuberculosis, abnormal, disease,
        positive, melanoma, yes, …) is positive; when neither or both do, label 1."""
        findings = ("malignan", "pneumonia", "tubercul", "abnormal", "disease", "positive", "melanoma", "cancer",
                    "tumor", "tumour", "lesion", "yes", "true")
        hits = [i for i, n in enumerate(self.class_names[:2]) if any(w in str(n).lower() for w in findings)
                and not str(n).lower().startswith(("non", "no ", "not ", "normal", "benign"))]
        return hits[0] if len(self.class_names) == 2 and len(hits) == 1 else 1

    def split(self, name: str) -> ImageSet:
        s = {"train": self.train, "val": self.val, "test": self.test}.get(name)
        if s is None:
            from ssl_bench.errors import SSLBenchError

            raise SSLBenchError(f"dataset {self.name} has no '{name}' split")
        return s

    def label_chance_rate(self) -> float:
        """Σ_c p_c² over the training labels: the chance that two random samples share a label."""
        labels = self.train.labels
        if labels.ndim == 2:  # multi-label: identical label vectors
            _, counts = torch.unique(labels, dim=0, return_counts=True)
        else:
            _, counts = torch.unique(labels, return_counts=True)
        p = counts.double() / counts.sum()
        return float((p**2).sum())


def check_classes(data: DataSplits, evaluations: Sequence = ()) -> None:
    """Refuse, before anything is trained or written, evaluations that cannot learn from ``data``'s
    labels: a single-label dataset whose training split holds one class (a linear probe, kNN,
    fine-tuning or an embedding score needs two).  Pre-training alone (no evaluation) needs no labels.

    Each evaluation is checked on the split it trains on (``train_split``, default ``train``) of
    the dataset it runs on: its own ``target`` dataset where it has one (``transfer``)."""
    for i, ev in enumerate(evaluations):
        target = getattr(ev, "target", data)
        if target is None or target.task == "multi-label":
            continue
        split_name = getattr(ev, "train_split", "train")
        split = getattr(target, split_name, None)
        if split is None or split.labels.numel() == 0:
            continue
        present = torch.unique(split.labels)
        if len(present) < 2:
            from ssl_bench.errors import SSLBenchError

            c = int(present[0])
            name = target.class_names[c] if 0 <= c < len(target.class_names) else str(c)
            key = f"evaluate[{i}]" + (".data" if target is not data else "")
            raise SSLBenchError(
                f"dataset {target.name}{f' ({target.source})' if target.source else ''}: every image of its "
                f"{split_name} split has the class '{name}', but evaluation {getattr(ev, 'key', key)} "
                f"(recipe key {key}) needs at least two classes; fix the labels, or set evaluate: [] to pre-train only"
            )


def finish_dataset(built):
    """What DATASETS.build returns: a dataset's options (a :class:`DatasetSpec`) → its loaded splits."""
    return built.load() if isinstance(built, DatasetSpec) else built


DATASETS = catalog.DATASETS


def num_batches(n: int, batch_size: int, drop_last: bool = True) -> int:
    """How many batches :func:`batches` yields for ``n`` samples."""
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    return -(-stop // batch_size)


def batches(
    n: int, batch_size: int, generator: torch.Generator, shuffle: bool = True, drop_last: bool = True
) -> Iterator[torch.Tensor]:
    """Index batches of one epoch (a seeded permutation of ``range(n)``)."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, num_batches(n, batch_size, drop_last) * batch_size, batch_size):
        yield order[start : start + batch_size]
