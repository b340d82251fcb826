"""Positive selectors: for each sample, the indices of its extra positives in the batch."""

from ssl_bench.selectors.base import SELECTORS, BatchPlan, SelectionContext, Selector, selection_counts

# the built-in members are imported on first use (ssl_bench/catalog.py)
__all__ = ["SELECTORS", "BatchPlan", "SelectionContext", "Selector", "selection_counts"]
