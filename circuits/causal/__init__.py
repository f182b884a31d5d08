"""Causal tracing (ROME), averaged indirect effects over facts, activation and attribution patching."""

from .fact_effects import average_indirect_effects, read_facts
from .patching import activation_patching, attribution_patching, rank_correlation
from .tracing import trace

__all__ = ["activation_patching", "attribution_patching", "average_indirect_effects", "rank_correlation",
           "read_facts", "trace"]
