"""Arithmetic heads: prompt suites, head effects per operation, layer and neuron analysis."""

from .heads import arithmetic_heads
from .neurons import neuron_attribution
from .prompts import arithmetic_prompts

__all__ = ["arithmetic_heads", "arithmetic_prompts", "neuron_attribution"]
