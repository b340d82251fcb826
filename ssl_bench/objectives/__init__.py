"""Objectives: online/target networks and a loss that accepts extra positives."""

from ssl_bench.objectives.base import OBJECTIVES, Embedder, Objective, PredictorObjective, Stage, StepOutput, ViewOutput

# the built-in members are imported on first use (ssl_bench/catalog.py)
__all__ = ["OBJECTIVES", "Embedder", "Objective", "Stage", "PredictorObjective", "StepOutput", "ViewOutput"]
