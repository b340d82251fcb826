"""Tutorial plug-in (docs/write_a_dataset.md): images whose class is written in their file name.

A folder (or .zip) of ``<anything>_<class>.png`` files, e.g. ``case0001_benign.png``; the classes
are the distinct suffixes in sorted order, the split is seeded and stratified by nothing but the
seed (each image its own group).  It inherits every decode option (``root``, ``size``, ``fit``,
``cache``, ``cache_dir``, ``skip_corrupt``, ``workers``) from :class:`~ssl_bench.data.images.ImageFiles`
and adds two of its own.

    plugins: [registries/filename_labels.py]
    data: {name: filename_labels, root: path/to/images, size: 64}
"""

from dataclasses import dataclass
from pathlib import PurePosixPath

import torch

from ssl_bench.data import DATASETS, DataSplits
from ssl_bench.data.images import ImageFiles, ImageStore, assemble, group_codes, resolve_root
from ssl_bench.data.splits import check_ratios, group_split
from ssl_bench.errors import SSLBenchError


@DATASETS.register("filename_labels")
@dataclass
class FilenameLabels(ImageFiles):
    """Images labelled by the last ``_``-separated part of their file name (a tutorial adapter)."""

    split_ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)
    split_seed: int = 0

    def load(self) -> DataSplits:
        root = resolve_root(self.root, "SSL_BENCH_FILENAME_ROOT", "image folder",
                            "a folder or .zip of <name>_<class>.png images")
        store = ImageStore(root)  # a folder or a .zip, read in place
        members = sorted(store.images())
        if not members:
            raise SSLBenchError(f"no images in {self.root}")
        names = [PurePosixPath(m).stem.rsplit("_", 1)[-1] for m in members]
        classes = sorted(set(names))
        labels = torch.tensor([classes.index(n) for n in names], dtype=torch.long)
        ids = [PurePosixPath(m).stem for m in members]
        split = group_split(ids, check_ratios(self.split_ratios), self.split_seed)
        task = "binary-class" if len(classes) == 2 else "multi-class"
        return assemble("FilenameLabels", store, members, labels, split, task, classes, group_codes(ids), self,
                        tag="filename-labels")
