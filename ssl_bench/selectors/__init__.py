"""Positive selectors: for each sample, the indices of its extra positives in the batch."""

from ssl_bench.selectors.base import SELECTORS, BatchPlan, SelectionContext, Selector, selection_counts
from ssl_bench.selectors import augmentation as _augmentation  # noqa: F401
from ssl_bench.selectors import oracle as _oracle  # noqa: F401
from ssl_bench.selectors import micle as _micle  # noqa: F401
from ssl_bench.selectors import fnc as _fnc  # noqa: F401
from ssl_bench.selectors import ft as _ft  # noqa: F401
from ssl_bench.selectors import nn as _nn  # noqa: F401
from ssl_bench.selectors import similarity as _similarity  # noqa: F401
from ssl_bench.selectors import tracin as _tracin  # noqa: F401

__all__ = ["SELECTORS", "BatchPlan", "SelectionContext", "Selector", "selection_counts"]
