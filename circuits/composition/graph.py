"""A head graph for the app and for cytoscape: heads as nodes, composition as edges.

Edges are the (writer, reader, kind) pairs of a ``Composition`` whose z-score against random matrices
is at least ``min_z`` (the strongest ``max_edges``), weighted by their score, with the share of the
top component when known. Nodes are the heads on those edges, sized by an importance score taken
from any head result: a mapping ``{(layer, head): value}`` or a frame with ``layer``, ``head`` and
one of ``effect`` / ``score`` / ``importance`` (a head-ablation summary, retrieval heads, ...).
"""

from __future__ import annotations

import json

import pandas as pd

from ...probes import Result
from ..head_scores import head_scores


Head = tuple[int, int]


class CircuitGraph(Result):
    """Edges (``frame``) and nodes (``nodes``) of a head graph."""

    kind = "circuit-graph"
    table = "edges"
    TABLES = ("nodes",)

    def cytoscape(self) -> dict:
        """Cytoscape.js elements: ``{"nodes": [{"data": ...}], "edges": [{"data": ...}]}``."""
        nodes = [{"data": {"id": f"L{r.layer}H{r.head}", "label": f"L{r.layer}H{r.head}", "layer": int(r.layer),
                           "head": int(r.head), "importance": None if pd.isna(r.importance) else float(r.importance)}}
                 for r in self.nodes.itertuples()]
        edges = [{"data": {"id": f"L{r.writer_layer}H{r.writer_head}-{r.kind}-L{r.reader_layer}H{r.reader_head}",
                           "source": f"L{r.writer_layer}H{r.writer_head}",
                           "target": f"L{r.reader_layer}H{r.reader_head}", "kind": r.kind,
                           "score": float(r.score), "z": float(r.z), "top1_share": float(r.top1_share)}}
                 for r in self.frame.itertuples()]
        return {"nodes": nodes, "edges": edges}

    def plot(self):
        import plotly.graph_objects as go

        pos = {(int(r.layer), int(r.head)): (int(r.head), int(r.layer)) for r in self.nodes.itertuples()}
        fig = go.Figure()
        for r in self.frame.itertuples():
            (x0, y0), (x1, y1) = pos[(r.writer_layer, r.writer_head)], pos[(r.reader_layer, r.reader_head)]
            fig.add_scatter(x=[x0, x1], y=[y0, y1], mode="lines", showlegend=False, hoverinfo="skip",
                            line=dict(width=1 + 3 * r.score / self.frame["score"].max(),
                                      color={"q": "#c0392b", "k": "#2c7fb8", "v": "#27ae60"}[r.kind]))
        imp = self.nodes["importance"].fillna(0).abs()
        fig.add_scatter(x=self.nodes["head"], y=self.nodes["layer"], mode="markers+text", showlegend=False,
                        text=[f"L{a}H{b}" for a, b in zip(self.nodes["layer"], self.nodes["head"])],
                        textposition="top center", marker=dict(size=8 + 24 * imp / max(imp.max(), 1e-9)))
        fig.update_layout(title="head graph: edges q (red), k (blue), v (green)", xaxis_title="head",
                          yaxis=dict(title="layer", autorange="reversed"), height=640)
        return fig

    def exports(self) -> dict[str, str]:
        return {"graph.json": json.dumps(self.cytoscape(), indent=1)}


def circuit_graph(comp: Result, importance=None, *, min_z: float = 5.0, max_edges: int = 200,
                  kinds=None) -> CircuitGraph:
    """The graph of ``comp``'s (a ``Composition``'s) pairs with ``z >= min_z`` (at most ``max_edges``, strongest first)."""
    kinds = comp.meta["kinds"] if kinds is None else list(kinds)
    edges = comp.frame[comp.frame["kind"].isin(kinds) & (comp.frame["z"] >= min_z)].nlargest(max_edges, "z")
    scores = head_scores(importance)
    heads = sorted({(int(a), int(b)) for a, b in edges[["writer_layer", "writer_head"]].itertuples(index=False)}
                   | {(int(a), int(b)) for a, b in edges[["reader_layer", "reader_head"]].itertuples(index=False)})
    nodes = pd.DataFrame({"layer": [l for l, _ in heads], "head": [h for _, h in heads],
                          "importance": [scores.get(hd, float("nan")) for hd in heads]})
    meta = {"model": comp.meta["model"], "min_z": min_z, "max_edges": max_edges, "kinds": kinds,
            "importance": "given" if scores else None}
    return CircuitGraph(edges.reset_index(drop=True), meta, {"nodes": nodes})
