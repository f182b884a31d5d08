"""Attention view: every head at a glance, one head's pattern large, one token's attention by head."""

from __future__ import annotations

from dash import Input, Output, dcc, html
from dash.exceptions import PreventUpdate

from ...probes.readouts.attention import attention_views

from ..widgets import guarded, needs_model

TAB, LABEL = "attention", "Attention"
MAX_ROWS = 128  # destination rows computed and sent for the large pattern
GRID = 12  # tile size of the every-head grid


def layout():
    return html.Div(className="view", children=[
        html.Div(className="controls", children=[
            html.Label(["layer ", dcc.Dropdown(id="layer-select", clearable=False, className="narrow")]),
            html.Label(["head ", dcc.Dropdown(id="head-select", clearable=False, className="narrow")]),
            html.Label(["compare heads ", dcc.Dropdown(id="attn-compare", multi=True, className="wide",
                                                       placeholder="other heads of this layer")]),
            html.Span("click a head in the grid, a row of the pattern, or a token above", className="muted"),
        ]),
        html.Div(id="attn-error"),
        html.Div(className="row", children=[
            dcc.Loading(dcc.Graph(id="attn-grid", config={"displayModeBar": False}), className="col-narrow"),
            dcc.Loading(dcc.Graph(id="attn-pattern"), className="col-wide"),
        ]),
        dcc.Loading(dcc.Graph(id="attn-token")),
    ])


def register(app, session, runs_root) -> None:
    @app.callback(Output("attn-compare", "options"), Input("model-store", "data"))
    def compare_options(store):
        info = (store or {}).get("info")
        return [{"label": f"H{h}", "value": h} for h in range(info["n_heads"])] if info else []

    @app.callback(Output("attn-grid", "figure"), Output("attn-pattern", "figure"), Output("attn-token", "figure"),
                  Output("attn-error", "children"), Input("view", "data"), Input("model-store", "data"),
                  Input("attn-compare", "value"))
    @guarded(outputs=4, error_at=3)
    def render(view, store, compare):
        needs_model(store)
        if view["tab"] != TAB:
            raise PreventUpdate
        heads = [view["head"]] + [h for h in (compare or []) if h != view["head"]]
        n = len(session.memo(("tokens", view["prompt"]), lambda model: model.tokenize(view["prompt"])))
        dest = view.get("dest")
        dest = n - 1 if dest is None or not 0 <= dest < n else dest
        start = max(0, min(n - MAX_ROWS, dest - MAX_ROWS // 2))  # rows around the chosen destination
        rows = (start, min(n, start + MAX_ROWS))
        grid, pattern = session.memo(  # the grid and the shown pattern from one forward pass
            ("attention", view["prompt"], view["layer"], tuple(heads), rows),
            lambda model: attention_views(model, view["prompt"], view["layer"], heads, rows=rows, grid=GRID))
        return grid.plot(), pattern.plot(view["head"]), pattern.token_plot(dest), ""
