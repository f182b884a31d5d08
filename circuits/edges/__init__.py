"""Circuit discovery from data (issue 18): the graph of edges between components, every edge's
attribution score (EAP, EAP-IG) or exact effect, circuits chosen from them and their faithfulness."""

from .attribution import EdgeScores, edge_attribution, exact_edge_effects
from .circuit import greedy_edges, prune, top_edges
from .discovery import Circuit, find_circuit
from .faithfulness import circuit_metrics
from .graph import EdgeGraph

__all__ = ["Circuit", "EdgeGraph", "EdgeScores", "circuit_metrics", "edge_attribution", "exact_edge_effects",
           "find_circuit", "greedy_edges", "prune", "top_edges"]
