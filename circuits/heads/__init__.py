"""Heads: ablation, gradient importance, pruning and masking curves, detectors, the batch head report."""

from .single_heads import head_ablation
from .detectors import attention_sink, detector_scores
from .importance import gradient_importance, pruning_curve, top_vs_random
from .report import head_report

__all__ = ["attention_sink", "detector_scores", "gradient_importance", "head_ablation", "head_report",
           "pruning_curve", "top_vs_random"]
