"""Objectives: online/target networks and a loss that accepts extra positives."""

from ssl_bench.objectives.base import OBJECTIVES, Embedder, Objective, PredictorObjective, Stage, StepOutput, ViewOutput
from ssl_bench.objectives import byol as _byol  # noqa: F401
from ssl_bench.objectives import simsiam as _simsiam  # noqa: F401
from ssl_bench.objectives import simclr as _simclr  # noqa: F401
from ssl_bench.objectives import tsimcne as _tsimcne  # noqa: F401

__all__ = ["OBJECTIVES", "Embedder", "Objective", "Stage", "PredictorObjective", "StepOutput", "ViewOutput"]
