"""Evaluation protocols run on the frozen encoder after pre-training."""

from ssl_bench.evaluate.base import EVALUATIONS, EvalContext, Evaluation, extract_features, run_evaluations

# the built-in members are imported on first use (ssl_bench/catalog.py)
__all__ = ["EVALUATIONS", "EvalContext", "Evaluation", "extract_features", "run_evaluations"]
