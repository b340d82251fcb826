"""Evaluation protocols run on the frozen encoder after pre-training."""

from ssl_bench.evaluate.base import EVALUATIONS, EvalContext, Evaluation, extract_features, run_evaluations
from ssl_bench.evaluate import linear as _linear  # noqa: F401
from ssl_bench.evaluate import knn as _knn  # noqa: F401
from ssl_bench.evaluate import finetune as _finetune  # noqa: F401
from ssl_bench.evaluate import transfer as _transfer  # noqa: F401
from ssl_bench.evaluate import embedding as _embedding  # noqa: F401
from ssl_bench.evaluate import tsne as _tsne  # noqa: F401

__all__ = ["EVALUATIONS", "EvalContext", "Evaluation", "extract_features", "run_evaluations"]
