"""Circuits as sets of edges of an ``EdgeGraph``: chosen from edge scores and pruned of dead ends.

A circuit is a boolean mask over ``graph.edges()``'s rows. ``top_edges`` keeps the n edges of largest
|score| (hannamw/EAP-IG ``Graph.apply_topn`` with ``absolute=True``); ``greedy_edges`` grows the
circuit from the logits, each step adding the best-scoring edge into a node already in it
(``Graph.apply_greedy``). ``prune`` then drops every edge that is not on a path from the input to
the logits (``Graph.prune_dead_nodes``): its writer must be reached from the input through circuit
edges and its reader must feed a node that reaches the logits. A key or value reader shared by
several query heads feeds all of them.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ...probes import HeadscopeError
from .graph import EdgeGraph


@dataclass(frozen=True)
class EdgeIndex:
    """Each edge's writer and reader as positions in ``graph.writers()`` / ``graph.readers()``, and each
    reader's consumers (the writers whose output it feeds; none for the logits)."""

    graph: EdgeGraph

    @cached_property
    def writer(self) -> np.ndarray:
        heard = self.heard
        return np.concatenate([np.arange(n) for n in heard])

    @cached_property
    def reader(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.heard)), self.heard)

    @cached_property
    def heard(self) -> np.ndarray:
        return np.array([self.graph.hears(name, layer) for name, layer in self.graph.readers()])

    @cached_property
    def consumers(self) -> list[list[int]]:
        g = self.graph
        position = {name: i for i, (name, _) in enumerate(g.writers())}
        group = g.n_heads // g.n_kv_heads
        out = []
        for name, layer in g.readers():
            if name == "logits":
                out.append([])
            elif name.startswith("MLP"):
                out.append([position[name]])
            else:
                head, part = name.split(".")
                h = int(head.split("H")[1])
                heads = [h] if part == "q" else range(h * group, (h + 1) * group)
                out.append([position[f"L{layer}H{k}"] for k in heads])
        return out

    @cached_property
    def fed_by(self) -> list[list[int]]:
        """For each writer, the readers that feed it."""
        out: list[list[int]] = [[] for _ in self.graph.writers()]
        for r, consumers in enumerate(self.consumers):
            for w in consumers:
                out[w].append(r)
        return out

    @cached_property
    def into(self) -> list[np.ndarray]:
        """For each reader, its edges' rows."""
        ends = np.cumsum(self.heard)
        return [np.arange(end - n, end) for n, end in zip(self.heard, ends)]


def check_size(graph: EdgeGraph, n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= graph.n_edges:
        raise HeadscopeError(f"a circuit of {n!r} edges: the graph has {graph.n_edges:,} edges; give 0 to "
                             f"{graph.n_edges:,}")


def top_edges(graph: EdgeGraph, scores: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` edges of largest |score|, as a mask (ties broken by edge order)."""
    check_size(graph, n)
    mask = np.zeros(graph.n_edges, dtype=bool)
    mask[np.argsort(-np.abs(scores), kind="stable")[:n]] = True
    return mask


def greedy_edges(graph: EdgeGraph, scores: np.ndarray, n: int) -> np.ndarray:
    """``n`` edges grown from the logits: each step adds the edge of largest |score| whose reader feeds
    a node already in the circuit (the logits at first), and brings its writer in."""
    check_size(graph, n)
    index = EdgeIndex(graph)
    mask = np.zeros(graph.n_edges, dtype=bool)
    heap: list[tuple[float, int]] = []
    opened = np.zeros(len(index.heard), dtype=bool)
    in_circuit = np.zeros(len(graph.writers()), dtype=bool)

    def open_reader(r: int) -> None:
        if not opened[r]:
            opened[r] = True
            for e in index.into[r]:
                heapq.heappush(heap, (-abs(float(scores[e])), int(e)))

    open_reader(len(index.heard) - 1)  # the logits
    for _ in range(n):
        _, e = heapq.heappop(heap)
        mask[e] = True
        w = index.writer[e]
        if not in_circuit[w]:
            in_circuit[w] = True
            for r in index.fed_by[w]:
                open_reader(r)
    return mask


def prune(graph: EdgeGraph, mask: np.ndarray) -> np.ndarray:
    """``mask`` without the edges that are not on a path from the input to the logits."""
    index = EdgeIndex(graph)
    n_writers = len(graph.writers())
    reached = np.zeros(n_writers, dtype=bool)
    reached[0] = True
    for w in range(1, n_writers):  # forward order: a writer is reached through any reader that feeds it
        reached[w] = any((mask[index.into[r]] & reached[:index.heard[r]]).any() for r in index.fed_by[w])
    alive_writer = np.zeros(n_writers, dtype=bool)
    alive_reader = np.zeros(len(index.heard), dtype=bool)
    alive_reader[-1] = True
    for w in range(n_writers - 1, -1, -1):  # backward: every reader of w's edges comes later in the order
        readers = index.reader[mask & (index.writer == w)]
        for r in readers:
            if not alive_reader[r] and r != len(index.heard) - 1:
                alive_reader[r] = alive_writer[index.consumers[r]].any()
        alive_writer[w] = alive_reader[readers].any() if len(readers) else False
    return mask & reached[index.writer] & alive_reader[index.reader]
