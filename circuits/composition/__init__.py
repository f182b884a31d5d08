"""Head communication: composition scores, SVD channels, their data-side effects, the head graph, the laundry-list task."""

from .channel_effects import channel_test
from .graph import circuit_graph
from .laundry import laundry_task
from .scores import composition

__all__ = ["channel_test", "circuit_graph", "composition", "laundry_task"]
