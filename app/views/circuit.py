"""Circuit view: the head graph from composition scores (``circuits.composition``), drawn with
dash-cytoscape. Heads sit at (head, layer); edges are the writer -> reader pairs whose z-score against
random matrices passes the threshold, coloured by kind and as wide as their score; nodes are sized by
a head score from a saved head report (or uniform). Clicking a node selects that head in every view.
The scores are weights-only: computed once per model in the background, then re-thresholded live.
"""

from __future__ import annotations

from pathlib import Path

import dash_cytoscape as cyto
import pandas as pd
from dash import Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from ...circuits.composition.graph import circuit_graph
from ...circuits.composition.scores import KINDS, composition
from ...probes import HeadscopeError

from .. import exports, saved_scores
from ..jobs import job_progress
from ..state import Control
from ..widgets import guarded, job_controls, job_options, needs_model

TAB, LABEL = "circuit", "Circuit"
KIND_CHOICE = Control("kinds", "circuit-kinds", list(KINDS), str, many=True)
MIN_Z = Control("min_z", "circuit-min-z", 10.0, float)
MAX_EDGES = Control("max_edges", "circuit-max-edges", 80, int)
NODE_SIZE = Control("node_size", "circuit-importance", choices=lambda _session, runs_root, _view:
                    saved_scores.choices(runs_root))
CONTROLS = (KIND_CHOICE, MIN_Z, MAX_EDGES, NODE_SIZE)
COLORS = {"q": "#c0392b", "k": "#2c7fb8", "v": "#27ae60"}
STYLE = [
    {"selector": "node", "style": {"label": "data(label)", "width": "data(size)", "height": "data(size)",
                                   "font-size": 9, "background-color": "#555"}},
    {"selector": "node.selected", "style": {"background-color": "#f39c12", "border-width": 2,
                                            "border-color": "#000"}},
    {"selector": "edge", "style": {"width": "data(width)", "line-color": "data(color)", "opacity": 0.7,
                                   "curve-style": "bezier", "target-arrow-shape": "triangle",
                                   "target-arrow-color": "data(color)"}},
]


def layout():
    return html.Div(className="view", children=[
        html.Div(className="controls", children=[
            *job_controls("circuit", "Compute composition"),
            html.Label(["kinds ", dcc.Checklist(id=KIND_CHOICE.id, options=list(KINDS), value=KIND_CHOICE.default,
                                                inline=True)]),
            html.Label(["min z ", dcc.Input(id=MIN_Z.id, type="number", value=MIN_Z.default, step=1, debounce=True)]),
            html.Label(["max edges ", dcc.Input(id=MAX_EDGES.id, type="number", value=MAX_EDGES.default, min=1, max=1000,
                                                debounce=True)]),
            html.Label(["node size ", dcc.Dropdown(id=NODE_SIZE.id, className="wide",
                                                   placeholder="a head score from a saved run")]),
        ]),
        html.Div(id="circuit-error"),
        dcc.Store(id="circuit-done"),
        html.Div(id="circuit-summary", className="muted"),
        cyto.Cytoscape(id="circuit-graph", layout={"name": "preset"}, style={"width": "100%", "height": "640px"},
                       stylesheet=STYLE, elements=[]),
        exports.actions(TAB),
        dcc.Graph(id="circuit-figure", style={"display": "none"}),  # the graph as a figure, for the downloads
    ])


def register(app, session, runs_root: Path) -> None:
    exports.register(app, session, runs_root, TAB, "circuit-figure")

    @app.callback(Output(NODE_SIZE.id, "options"), Input("tabs", "value"))
    def importance_options(_tab):
        """Saved head scores, read again whenever a tab opens (a run may have been saved since)."""
        return saved_scores.choices(runs_root)

    @app.callback(Output("circuit-done", "data"), Output("circuit-error", "children"),
                  Input("circuit-run", "n_clicks"), Input("autorun", "data"), State("view", "data"),
                  **job_options("circuit"))
    def compute(set_progress, _clicks, autorun, view):
        if ctx.triggered_id == "autorun" and (autorun or {}).get("tab") != TAB:
            raise PreventUpdate  # a shared link to the circuit computes it, else nothing to do
        return _compute(set_progress, view)

    @guarded(outputs=2, error_at=1)
    def _compute(set_progress, view):
        with job_progress(set_progress):
            result = session.memo(("composition",), lambda model: composition(model, top=0))
        return {"model": result.meta["model"]}, ""

    @app.callback(Output("circuit-graph", "elements"), Output("circuit-summary", "children"),
                  Output("circuit-figure", "figure"), Output(f"{TAB}-shown", "data"),
                  Output("circuit-error", "children", allow_duplicate=True),
                  Input("circuit-done", "data"), Input("view", "data"), Input("model-store", "data"),
                  prevent_initial_call="initial_duplicate")
    @guarded(outputs=5, error_at=4)
    def draw(done, view, store):
        needs_model(store)
        if view["tab"] != TAB:
            raise PreventUpdate
        kinds, min_z, max_edges, importance = (view.get(c.key) for c in CONTROLS)
        result = session.peek(("composition",))
        if result is None:
            return [], "press 'Compute composition' (weights only: seconds to a minute on a CPU)", {}, None, ""
        if not kinds:
            raise HeadscopeError("choose at least one kind of composition")
        scores = saved_scores.read_choice(runs_root, importance)[0] if importance else None
        graph = circuit_graph(result, scores, min_z=float(min_z or 0), max_edges=int(max_edges or 1), kinds=kinds)
        chance = ", ".join(f"{k} {result.meta['baselines'][k][0]:.3f}" for k in kinds)
        summary = f"{len(graph.frame)} edges between {len(graph.nodes)} heads with z >= {min_z} (chance: {chance})"
        return _elements(graph, (view["layer"], view["head"])), summary, graph.plot(), session.show(graph), ""


def _elements(graph, selected: tuple[int, int]) -> list[dict]:
    data = graph.cytoscape()
    imp = pd.Series([n["data"]["importance"] for n in data["nodes"]], dtype=float).abs()
    top = imp.max() if imp.notna().any() and imp.max() > 0 else None
    best = graph.frame["score"].max() if len(graph.frame) else 1.0
    nodes = []
    for node, value in zip(data["nodes"], imp):
        d = node["data"]
        size = 14 + (26 * value / top if top and pd.notna(value) else 0)
        nodes.append({"data": {**d, "size": size}, "position": {"x": 150 * d["head"], "y": 45 * d["layer"]},
                      "classes": "selected" if (d["layer"], d["head"]) == selected else ""})
    edges = [{"data": {**e["data"], "color": COLORS[e["data"]["kind"]], "width": 1 + 5 * e["data"]["score"] / best}}
             for e in data["edges"]]
    return nodes + edges
