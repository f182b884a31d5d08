"""Keep what a view computed: save it as a run under the runs directory, or download it.

Each view with a result puts ``actions(tab)`` beside its figure and, on every render, hands its
result to ``ModelSession.show``, whose token goes into the ``{tab}-shown`` store. "Save as run"
writes that result with ``Result.save`` into ``<runs>/<name>`` (a new directory, under the same
rules as ``--out``: an existing directory is never replaced), where the Runs tab lists it. The
downloads are the main table as Parquet, the whole result as JSON (``Result.to_json``), and the
figure as shown in the page: HTML from its figure, SVG and PNG drawn by plotly.js in the browser.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

from dash import Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from ..probes import HeadscopeError

from .widgets import guarded

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
FILES = ("parquet", "json", "html")
IMAGES = ("svg", "png")


def actions(tab: str) -> html.Div:
    """The save box and download buttons of view ``tab``."""
    return html.Div(className="actions", children=[
        dcc.Store(id=f"{tab}-shown"),
        dcc.Input(id=f"{tab}-run-name", type="text", placeholder=f"run name (default: {tab}-<time>)",
                  className="run-name"),
        html.Button("Save as run", id=f"{tab}-save"),
        html.Span("download:", className="muted"),
        *[html.Button(kind.upper(), id=f"{tab}-download-{kind}", className="link") for kind in FILES + IMAGES],
        dcc.Download(id=f"{tab}-download"),
        html.Span(id=f"{tab}-saved", className="muted"),
    ])


def run_name(name: str | None, tab: str) -> str:
    """The run directory's name: the user's, if it is one plain name, or ``<tab>-<time>``."""
    name = (name or "").strip() or f"{tab}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not NAME.fullmatch(name):
        raise HeadscopeError(f"run name {name!r} must be one name of letters, digits, '_', '.' and '-'")
    return name


def register(app, session, runs_root: Path, tab: str, graph_id: str) -> None:
    """Wire ``actions(tab)`` to the result shown in ``tab`` and its figure ``graph_id``."""

    @app.callback(Output(f"{tab}-saved", "children"), Input(f"{tab}-save", "n_clicks"),
                  State(f"{tab}-shown", "data"), State(f"{tab}-run-name", "value"), prevent_initial_call=True)
    @guarded(outputs=1, error_at=0)
    def save(_clicks, token, name):
        result = session.shown(token)
        name = run_name(name, tab)
        if (runs_root / name).exists():  # the page never replaces a run
            raise HeadscopeError(f"run {name!r} exists already under the runs directory; choose another name")
        result.save(runs_root / name)
        return f"saved as run {name!r} (Runs tab)"

    @app.callback(Output(f"{tab}-download", "data"), Output(f"{tab}-saved", "children", allow_duplicate=True),
                  *[Input(f"{tab}-download-{kind}", "n_clicks") for kind in FILES],
                  State(f"{tab}-shown", "data"), State(graph_id, "figure"), prevent_initial_call=True)
    @guarded(outputs=2, error_at=1)
    def download(*args):
        token, figure = args[-2:]
        kind = str(ctx.triggered_id).rsplit("-", 1)[-1]
        if kind not in FILES:
            raise PreventUpdate
        result = session.shown(token)
        stem = f"{result.meta.get('kind', tab)}"
        if kind == "parquet":
            buffer = io.BytesIO()
            result.frame.to_parquet(buffer, index=False)
            return dcc.send_bytes(buffer.getvalue(), f"{stem}.parquet"), ""
        if kind == "json":
            return dcc.send_string(result.to_json(), f"{stem}.json"), ""
        if not figure:
            raise HeadscopeError("nothing is drawn yet")
        import plotly.io as pio

        # the figure as the page shows it, with plotly.js inside the file: it opens offline
        return dcc.send_string(pio.to_html(figure, include_plotlyjs=True, full_html=True), f"{stem}.html"), ""

    for kind in IMAGES:
        app.clientside_callback(
            f"""function (n) {{
                const gd = document.querySelector('#{graph_id} .js-plotly-plot');
                if (!n || !gd || !gd.data) return window.dash_clientside.no_update;
                Plotly.downloadImage(gd, {{format: '{kind}', filename: '{tab}'}});
                return '';
            }}""",
            Output(f"{tab}-saved", "children", allow_duplicate=True), Input(f"{tab}-download-{kind}", "n_clicks"),
            prevent_initial_call=True)
