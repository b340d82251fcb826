"""Datasets: registered adapters that load images as uint8 tensors with labels and group ids."""

from ssl_bench.data.base import DATASETS, DataSplits, ImageSet, batches, num_batches

# the built-in members are imported on first use (ssl_bench/catalog.py)
__all__ = ["DATASETS", "DataSplits", "ImageSet", "batches", "num_batches"]
