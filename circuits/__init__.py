"""Intervene and discover: causal tracing, patching, ablation, head importance and more."""
