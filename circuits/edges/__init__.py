"""Circuit discovery from data (issue 18): the graph of edges between components and every edge's
attribution score (EAP, EAP-IG)."""

from .attribution import EdgeScores, edge_attribution, exact_edge_effects
from .graph import EdgeGraph

__all__ = ["EdgeGraph", "EdgeScores", "edge_attribution", "exact_edge_effects"]
