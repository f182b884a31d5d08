"""Circuit view, from two sources, drawn with dash-cytoscape; clicking a head selects it in every view.

- **From data** (``circuits.edges``): a circuit saved by ``headscope circuit``, or one found in the
  background for a shipped prompt set with the loaded model (``found_circuit``). The slider picks how
  many edges to draw (the largest |effect|, pruned to paths from the input to the logits, as the
  faithfulness curve evaluates them) and the summary gives the curve's faithfulness at that size.
  Edges are red where they carry the clean behaviour and blue where they oppose it, as wide as their
  effect; layers run from the input at the bottom to the logits at the top. The composition graph can
  be laid over it (dashed), with the overlap between the two stated.
- **Composition** (``circuits.composition``): the weights-only head graph, computed once per model in
  the background, then re-thresholded live; edges coloured by kind, nodes sized by a saved head score.
"""

from __future__ import annotations

from pathlib import Path

import dash_cytoscape as cyto
import pandas as pd
from dash import Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from ...circuits.composition.graph import circuit_graph
from ...circuits.composition.scores import KINDS, composition
from ...circuits.edges import find_circuit
from ...probes import HeadscopeError

from .. import exports, saved_circuits, saved_scores
from ..jobs import job_progress
from ..state import Control, tab_view
from ..widgets import guarded, job_controls, job_options, needs_model, open_tab

TAB, LABEL = "circuit", "Circuit"
SOURCES = {"data": "from data (a saved circuit)", "composition": "composition (weights)"}
SOURCE = Control("source", "circuit-source", "composition")
CIRCUIT_RUN = Control("circuit_run", "circuit-saved-run", choices=lambda _session, runs_root, _view:
                      saved_circuits.choices(runs_root))
SHOWN = Control("shown", "circuit-edge-count", 40, int)
OVERLAY = Control("overlay", "circuit-overlay", [], str, many=True)
FIND_SET = Control("find_set", "circuit-find-set", "ioi")
FIND_SETS = ("ioi", "greater-than")  # the shipped sets with corrupted prompts
FIND_PROMPTS = 16  # prompts of a circuit found in the page (the command line takes any number)
MAX_SHOWN = 500  # edges drawn at most: beyond that the browser's layout slows and nothing is readable
KIND_CHOICE = Control("kinds", "circuit-kinds", list(KINDS), str, many=True)
MIN_Z = Control("min_z", "circuit-min-z", 10.0, float)
MAX_EDGES = Control("max_edges", "circuit-max-edges", 80, int)
NODE_SIZE = Control("node_size", "circuit-importance", choices=lambda _session, runs_root, _view:
                    saved_scores.choices(runs_root))
CONTROLS = (SOURCE, CIRCUIT_RUN, FIND_SET, SHOWN, OVERLAY, KIND_CHOICE, MIN_Z, MAX_EDGES, NODE_SIZE)
COMPOSITION_CONTROLS = (KIND_CHOICE, MIN_Z, MAX_EDGES, NODE_SIZE)
COLORS = {"q": "#c0392b", "k": "#2c7fb8", "v": "#27ae60"}
SIGN = {True: "#c0392b", False: "#2c7fb8"}  # carries the clean behaviour / opposes it
COLUMN, ROW = 130, 55  # pixels between heads of a layer, and between layers, at zoom 1
STYLE = [
    {"selector": "node", "style": {"label": "data(label)", "width": "data(size)", "height": "data(size)",
                                   "font-size": 14, "text-valign": "top", "text-margin-y": -4,
                                   "background-color": "#555"}},
    {"selector": "edge[part]", "style": {"label": "data(part)", "font-size": 11, "color": "#555",
                                         "text-rotation": "autorotate", "text-margin-y": -8}},  # q, k, v, in
    {"selector": "edge.overlay", "style": {"line-style": "dashed", "line-color": "#7f8c8d",
                                           "target-arrow-color": "#7f8c8d", "opacity": 0.8}},
    {"selector": "node.selected", "style": {"background-color": "#f39c12", "border-width": 2,
                                            "border-color": "#000"}},
    {"selector": "edge", "style": {"width": "data(width)", "line-color": "data(color)", "opacity": 0.7,
                                   "curve-style": "bezier", "target-arrow-shape": "triangle",
                                   "target-arrow-color": "data(color)"}},
]


def layout():
    return html.Div(className="view", children=[
        html.Div(className="controls", children=[
            dcc.RadioItems(id=SOURCE.id, options=[{"label": v, "value": k} for k, v in SOURCES.items()],
                           value=SOURCE.default, inline=True),
        ]),
        html.Div(className="controls", children=[
            html.Label(["saved circuit ", dcc.Dropdown(id=CIRCUIT_RUN.id, className="wide",
                                                       placeholder="a run of headscope circuit")]),
            html.Span("or", className="muted"),
            *job_controls("circuit-find", "Find a circuit"),
            html.Label(["for ", dcc.Dropdown(id=FIND_SET.id, options=list(FIND_SETS), value=FIND_SET.default,
                                             clearable=False, style={"width": "150px", "display": "inline-block"})]),
        ]),
        html.Div(className="controls", children=[
            html.Label(["edges shown ", html.Div(dcc.Slider(id=SHOWN.id, min=1, max=MAX_SHOWN, step=1,
                                                            value=SHOWN.default, updatemode="mouseup",
                                                            marks={n: str(n) for n in (1, 50, 100, 200, 300, 500)},
                                                            tooltip={"placement": "bottom"}),
                                                 style={"width": "420px", "display": "inline-block"})]),
            dcc.Checklist(id=OVERLAY.id, options=[{"label": " lay the composition graph over it",
                                                   "value": "composition"}], value=[], inline=True),
        ]),
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
        dcc.Store(id="circuit-found"),
        html.Div(id="circuit-summary", className="muted"),
        cyto.Cytoscape(id="circuit-graph", layout={"name": "preset", "fit": True, "padding": 30},
                       style={"width": "100%", "height": "640px"}, minZoom=0.3, maxZoom=3, stylesheet=STYLE,
                       elements=[]),
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
        if ctx.triggered_id == "autorun" and ((autorun or {}).get("tab") != TAB or (
                view.get(SOURCE.key) == "data" and "composition" not in (view.get(OVERLAY.key) or []))):
            raise PreventUpdate  # a shared link to the composition graph (or its overlay) computes it
        return _compute(set_progress, view)

    @guarded(outputs=2, error_at=1)
    def _compute(set_progress, view):
        with job_progress(set_progress):
            result = session.memo(("composition",), lambda model: composition(model, top=0))
        return {"model": result.meta["model"]}, ""

    @app.callback(Output("circuit-found", "data"), Output("circuit-error", "children", allow_duplicate=True),
                  Input("circuit-find-run", "n_clicks"), State("view", "data"), **job_options("circuit-find"))
    @guarded(outputs=2, error_at=1)
    def find(set_progress, _clicks, view):
        name = view.get(FIND_SET.key) or FIND_SET.default
        with job_progress(set_progress):
            result = session.memo(("circuit", name), lambda model: found_circuit(model, name))
        return {"model": result.meta["model"], "set": name}, ""

    @app.callback(Output(CIRCUIT_RUN.id, "options"), Input("tabs", "value"))
    def circuit_options(_tab):
        return saved_circuits.choices(runs_root)

    @app.callback(Output("circuit-graph", "elements"), Output("circuit-summary", "children"),
                  Output("circuit-figure", "figure"), Output(f"{TAB}-shown", "data"),
                  Output("circuit-graph", "style"), Output("circuit-error", "children", allow_duplicate=True),
                  Input("circuit-done", "data"), Input("circuit-found", "data"), Input(tab_view(TAB), "data"),
                  Input("model-store", "data"), prevent_initial_call="initial_duplicate")
    @guarded(outputs=6, error_at=5)
    def draw(done, found, view, store):
        open_tab(view, TAB)
        if view.get(SOURCE.key) == "data":
            return _draw_data(view)
        needs_model(store)
        graph = _composition_graph(view)
        if graph is None:
            return [], "press 'Compute composition' (weights only: seconds to a minute on a CPU)", {}, None, \
                _height(0), ""
        result = session.peek(("composition",))
        chance = ", ".join(f"{k} {result.meta['baselines'][k][0]:.3f}" for k in view.get(KIND_CHOICE.key))
        summary = (f"{len(graph.frame)} edges between {len(graph.nodes)} heads with z >= {view.get(MIN_Z.key)} "
                   f"(chance: {chance})")
        return _elements(graph, (view["layer"], view["head"])), summary, graph.plot(), session.show(graph), \
            _height(0), ""

    def _composition_graph(view):
        """The composition graph the view's thresholds give, or None before it is computed."""
        kinds, min_z, max_edges, importance = (view.get(c.key) for c in COMPOSITION_CONTROLS)
        result = session.peek(("composition",))
        if result is None:
            return None
        if not kinds:
            raise HeadscopeError("choose at least one kind of composition")
        scores = saved_scores.read_choice(runs_root, importance)[0] if importance else None
        return circuit_graph(result, scores, min_z=float(min_z or 0), max_edges=int(max_edges or 1), kinds=kinds)

    def _draw_data(view):
        run, name = view.get(CIRCUIT_RUN.key), view.get(FIND_SET.key) or FIND_SET.default
        found = session.peek(("circuit", name)) if not run and session.status().get("loaded") else None
        if not run and found is None:
            return [], (f"choose a saved circuit (headscope circuit --out under the runs directory), or press "
                        f"'Find a circuit' to find one for {name} with the loaded model"), {}, None, _height(0), ""
        result = saved_circuits.read(runs_root, run) if run else found
        n = max(1, min(int(view.get(SHOWN.key) or SHOWN.default), MAX_SHOWN))
        edges = result.shown(n)
        overlay, note = None, ""
        if "composition" in (view.get(OVERLAY.key) or []):
            overlay, note = _overlay(view, result.meta, edges)
        elements = data_elements(result, edges, (view["layer"], view["head"]), overlay)
        m = result.meta
        summary = (f"{len(edges)} of the top {n} edges by |effect| lie on paths from the input to the logits; "
                   f"faithfulness at {n:,} edges {result.faithfulness_at(n):.2f} (the curve, interpolated) of "
                   f"{m['n_edges']:,} edges in all. {m['method'].upper()} on {m['n_prompts']} prompts "
                   f"({m['prompts']}, {m['metric']}), {m['model']}; saved circuit {m['kept_edges']} edges, "
                   f"faithfulness {m['circuit_faithfulness']:.2f}, CPR {m['cpr']:.2f}, CMD {m['cmd']:.2f}"
                   + ("" if run else f", found in the background for {name}") + f". {note}")
        rows = len({e["data"]["layer"] for e in elements if "layer" in e["data"]})
        return elements, summary.strip(), result.plot(), session.show(result), _height(rows), ""

    def _overlay(view, meta, edges):
        """The composition graph to lay over a circuit of ``edges``, and the overlap in words (or None and
        what is missing)."""
        if session.status().get("loaded") != meta["model"]:
            return None, f"(load {meta['model']} and compute its composition graph to lay it over this circuit)"
        graph = _composition_graph(view)
        if graph is None:
            return None, "(press 'Compute composition' to lay the composition graph over this circuit)"
        group = meta["n_heads"] // meta["n_kv_heads"]
        data_pairs = {(r.upstream, r.downstream) for r in edges.itertuples()}
        common = sum((f"L{r.writer_layer}H{r.writer_head}",
                      f"L{r.reader_layer}H{r.reader_head if r.kind == 'q' else r.reader_head // group}.{r.kind}")
                     in data_pairs for r in graph.frame.itertuples())
        heads_only = sum(1 for r in edges.itertuples() if r.upstream.startswith("L") and "." in r.downstream)
        return graph, (f"Composition overlay (dashed): {len(graph.frame)} edges, {common} of them in this circuit; "
                       f"{heads_only} of the circuit's edges run from a head into a head's q, k or v.")


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


def found_circuit(model, name: str):
    """The circuit the page finds for the shipped set ``name``: EAP over its first ``FIND_PROMPTS`` prompts
    whose corrupted prompt keeps their token length under this model's tokenizer, 100 edges, two seeds
    of random circuits, no exact checks (minutes on a CPU for the default model)."""
    from ...circuits.prompt_sets import PromptSet, answer_metric, keeping_length, read_prompt_set

    shipped = read_prompt_set(name)
    kept = keeping_length(model, shipped.records)[:FIND_PROMPTS]
    if len(kept) < 2:
        raise HeadscopeError(f"only {len(kept)} of the {len(shipped)} {name} prompts keep their corrupted prompt's "
                             f"token length under {model.spec}'s tokenizer; use headscope circuit with a prompt file")
    return find_circuit(model, PromptSet(kept, name), metric=answer_metric(kept), edges=100, seeds=2, exact=False,
                        progress=False)


def _height(rows: int) -> dict:
    """The graph's box: the page's width, and tall enough for ``rows`` layers at a legible zoom."""
    return {"width": "100%", "height": f"{max(640, ROW * (rows + 1))}px"}


def _node(meta: dict, name: str, layer: int, head, selected, row: int) -> dict:
    """A node at its place: heads in their column, MLPs right of them, input and logits in the middle,
    on the ``row``-th line from the bottom."""
    H = meta["n_heads"]
    x = H / 2 if head is None and not name.startswith("MLP") else H + 0.5 if head is None else head
    return {"data": {"id": name, "label": name, "layer": layer, "head": head, "size": 18},
            "position": {"x": COLUMN * x, "y": -ROW * row},
            "classes": "selected" if (layer, head) == tuple(selected) else ""}


def data_elements(result, edges: pd.DataFrame, selected, overlay=None) -> list[dict]:
    """Cytoscape elements of ``edges`` of a saved ``Circuit``: coloured by sign, as wide as |effect|; one
    line per layer the circuit (or the ``overlay`` composition graph, dashed) passes through, the input
    at the bottom and the logits at the top, so a circuit of a few layers of a deep model stays legible
    without scrolling."""
    data = result.cytoscape(edges)
    nodes = {n["data"]["id"]: n["data"] for n in data["nodes"]}
    lines = []
    top = max((abs(e["data"]["effect"]) for e in data["edges"]), default=1.0) or 1.0
    for e in data["edges"]:
        lines.append({"data": {**e["data"], "color": SIGN[e["data"]["effect"] > 0],
                               "width": 1 + 7 * abs(e["data"]["effect"]) / top}})
    for r in [] if overlay is None else overlay.frame.itertuples():
        ends = [(r.writer_layer, r.writer_head), (r.reader_layer, r.reader_head)]
        for layer, head in ends:
            nodes.setdefault(f"L{layer}H{head}", {"id": f"L{layer}H{head}", "label": f"L{layer}H{head}",
                                                  "layer": int(layer), "head": int(head)})
        (wl, wh), (rl, rh) = ends
        lines.append({"data": {"id": f"L{wl}H{wh}-{r.kind}-L{rl}H{rh}", "source": f"L{wl}H{wh}",
                               "target": f"L{rl}H{rh}", "width": 1.5}, "classes": "overlay"})
    rows = {layer: i for i, layer in enumerate(sorted({n["layer"] for n in nodes.values()}))}
    return [_node(result.meta, n["id"], n["layer"], n["head"], selected, rows[n["layer"]])
            for n in nodes.values()] + lines
