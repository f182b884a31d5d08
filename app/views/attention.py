"""Attention view: every head at a glance, one head's pattern large, one token's attention by head."""

from __future__ import annotations

import contextlib

from dash import Input, Output, dcc, html
from dash.exceptions import PreventUpdate

from ...probes.readouts.attention import attention_views

from .. import exports
from ..state import Control, tab_view
from ..widgets import loading, guarded, needs_model, open_tab

TAB, LABEL = "attention", "Attention"
def head_choices(session, _runs_root, view: dict) -> list | None:
    """The heads of the view's model, once it is the loaded one."""
    model = session.model
    if model is None or model.spec != view["model"]:
        return None
    return [{"label": f"H{h}", "value": h} for h in range(model.n_heads)]


COMPARE = Control("compare", "attn-compare", [], int, many=True, choices=head_choices)
CONTROLS = (COMPARE,)
MAX_ROWS = 128  # destination rows computed and sent for the large pattern
GRID = 12  # tile size of the every-head grid


def layout():
    return html.Div(className="view", children=[
        html.Div(className="controls", children=[
            html.Label(["layer ", dcc.Dropdown(id="layer-select", clearable=False, className="narrow")]),
            html.Label(["head ", dcc.Dropdown(id="head-select", clearable=False, className="narrow")]),
            html.Label(["compare heads ", dcc.Dropdown(id=COMPARE.id, value=COMPARE.default, multi=True, className="wide",
                                                       placeholder="other heads of this layer")]),
            html.Span("click a head in the grid, a row of the pattern, or a token above", className="muted"),
        ]),
        html.Div(id="attn-error"),
        html.Div(className="row", children=[
            loading(dcc.Graph(id="attn-grid", config={"displayModeBar": False}), className="col-narrow"),
            loading(dcc.Graph(id="attn-pattern"), className="col-wide"),
        ]),
        loading(dcc.Graph(id="attn-token")),
        exports.actions(TAB),
    ])


def register(app, session, runs_root) -> None:
    exports.register(app, session, runs_root, TAB, "attn-pattern")

    @app.callback(Output(COMPARE.id, "options"), Input("model-store", "data"))
    def compare_options(store):
        """The loaded model's heads as choices (the dropdown drops a chosen head the model lacks)."""
        options = head_choices(session, runs_root, {"model": (store or {}).get("loaded")})
        if options is None:
            raise PreventUpdate
        return options

    @app.callback(Output("attn-grid", "figure"), Output("attn-pattern", "figure"), Output("attn-token", "figure"),
                  Output(f"{TAB}-shown", "data"), Output("attn-error", "children"), Input(tab_view(TAB), "data"),
                  Input("model-store", "data"))
    @guarded(outputs=5, error_at=4)
    def render(view, store):
        needs_model(store)
        open_tab(view, TAB)
        (key, compute), dest = _views(session, view)
        grid, pattern = session.memo(key, compute)  # the grid and the shown pattern from one forward pass
        return grid.plot(), pattern.plot(view["head"]), pattern.token_plot(dest), session.show(pattern), ""


def _views(session, view: dict):
    """The memo key and computation of ``view``'s grid and pattern (the chosen head and the compared
    ones of its layer, ``MAX_ROWS`` destination rows around the chosen token), and that token."""
    heads = [view["head"]] + [h for h in view.get(COMPARE.key) or [] if h != view["head"]]
    n = len(session.tokens(view["prompt"]))
    dest = view.get("dest")
    dest = n - 1 if dest is None or not 0 <= dest < n else dest
    start = max(0, min(n - MAX_ROWS, dest - MAX_ROWS // 2))  # rows around the chosen destination
    rows = (start, min(n, start + MAX_ROWS))
    key = ("attention", view["prompt"], view["layer"], tuple(heads), rows)
    return (key, lambda model: attention_views(model, view["prompt"], view["layer"], heads, rows=rows, grid=GRID)), dest


def prefetch(session, view: dict) -> None:
    """Start computing what ``render`` will draw for ``view`` (called as the view state changes, a round
    trip before the render's own request arrives)."""
    if session.model is None or session.model.spec != view["model"]:
        return
    with contextlib.suppress(Exception):  # a mistake (an empty prompt) is reported by the render
        session.prefetch(*_views(session, view)[0])
