"""Circuit discovery from data (issue 18): the graph of edges between components."""

from .graph import EdgeGraph

__all__ = ["EdgeGraph"]
