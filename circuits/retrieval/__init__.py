"""Retrieval heads: needle-in-a-haystack tests, copy scores, masking top-k vs random heads."""

from .haystack import needle_grid, read_needles
from .masking import masking_test
from .scores import retrieval_heads

__all__ = ["masking_test", "needle_grid", "read_needles", "retrieval_heads"]
