"""Datasets: registered adapters that load images as uint8 tensors with labels and group ids."""

from ssl_bench.data.base import DATASETS, DataSplits, ImageSet, batches, num_batches
from ssl_bench.data import medmnist as _medmnist  # noqa: F401  (registers 'medmnist')
from ssl_bench.data import npz as _npz  # noqa: F401  (registers 'npz')
from ssl_bench.data import isic as _isic  # noqa: F401  (registers 'isic')
from ssl_bench.data import chestxray as _chestxray  # noqa: F401  (registers 'chestxray14')
from ssl_bench.data import shenzhen as _shenzhen  # noqa: F401  (registers 'shenzhen')
from ssl_bench.data import folder as _folder  # noqa: F401  (registers 'folder')

__all__ = ["DATASETS", "DataSplits", "ImageSet", "batches", "num_batches"]
