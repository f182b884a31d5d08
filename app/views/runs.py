"""Runs view: browse the results saved under the runs directory (the CLI's ``--out`` directories).

A run is a directory holding ``meta.json``, up to ``MAX_DEPTH`` levels below the runs root. The page
names runs by their path relative to the root and never takes a path from the browser as it is: a
requested run must be one the listing found, and a downloaded file must be a plain file inside
such a run (no ``..``, no links out of the root), whatever the URL says.
"""

from __future__ import annotations

import json
from pathlib import Path

from dash import Input, Output, dcc, html
from dash.exceptions import PreventUpdate
from flask import abort, send_file

from ...probes import HeadscopeError, load_result

from ..state import Control, tab_view
from ..widgets import loading, error_box, guarded, open_tab

TAB, LABEL = "runs", "Runs"
def run_choices(_session, runs_root: Path, _view=None) -> list:
    """The saved runs under ``runs_root``, labelled with their kind, model and date."""
    options = []
    for run in find_runs(runs_root):
        try:
            meta = json.loads((runs_root / run / "meta.json").read_text())
            label = f"{run}  ({meta.get('kind', '?')}, {meta.get('model', '?')}, {meta.get('created', '')})"
        except (OSError, ValueError):
            label = f"{run}  (unreadable meta.json)"
        options.append({"label": label, "value": run})
    return options


RUN = Control("run", "runs-list", choices=run_choices)
CONTROLS = (RUN,)
MAX_DEPTH = 3
DOWNLOADABLE = (".parquet", ".html", ".json", ".png", ".safetensors")


def find_runs(root: Path) -> list[str]:
    """Relative paths of the result directories under ``root``, sorted."""
    if not root.is_dir():
        return []
    runs = []
    for directory in (m.parent for depth in range(1, MAX_DEPTH + 1) for m in root.glob("*/" * depth + "meta.json")):
        resolved = directory.resolve()
        if resolved.is_relative_to(root) and not any(p.startswith(".") for p in directory.relative_to(root).parts):
            runs.append(directory.relative_to(root).as_posix())
    return sorted(set(runs))


def safe_file(root: Path, run: str, name: str) -> Path:
    """The file ``name`` of run ``run``, if both are what the listing allows."""
    if run not in find_runs(root) or "/" in name or name.startswith(".") or not name.endswith(DOWNLOADABLE):
        raise HeadscopeError(f"no such file {name!r} in run {run!r}")
    path = (root / run / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise HeadscopeError(f"no such file {name!r} in run {run!r}")
    return path


def layout():
    return html.Div(className="view", children=[
        html.Div(className="controls", children=[
            html.Label(["saved run ", dcc.Dropdown(id=RUN.id, className="wide", placeholder="choose a run")]),
            html.Button("Refresh", id="runs-refresh"),
            html.Span(id="runs-root", className="muted"),
        ]),
        html.Div(id="runs-error"),
        html.Div(id="runs-files", className="files"),
        loading(dcc.Graph(id="runs-graph")),
        html.Pre(id="runs-meta", className="meta"),
    ])


def register(app, session, runs_root: Path) -> None:
    @app.server.route("/runs-file/<path:run>/<name>")
    def download(run: str, name: str):
        try:
            path = safe_file(runs_root, run, name)
        except HeadscopeError:
            abort(404)
        return send_file(path, as_attachment=not name.endswith(".html"))

    @app.callback(Output(RUN.id, "options"), Output("runs-root", "children"), Input("runs-refresh", "n_clicks"),
                  Input("tabs", "value"))
    def listing(_clicks, tab):
        """The saved runs (the dropdown drops a chosen run that is not among them)."""
        if tab != TAB:
            raise PreventUpdate
        options = run_choices(session, runs_root)
        return options, f"{len(options)} runs in {runs_root}"

    @app.callback(Output("runs-graph", "figure"), Output("runs-files", "children"), Output("runs-meta", "children"),
                  Output("runs-error", "children"), Input(tab_view(TAB), "data"))
    @guarded(outputs=4, error_at=3)
    def open_run(view):
        run = open_tab(view, TAB).get(RUN.key)
        if not run:
            raise PreventUpdate
        if run not in find_runs(runs_root):
            return {}, [], "", error_box(f"run {run!r} is not under the runs directory")
        directory = runs_root / run
        links = [html.A(f.name, href=f"/runs-file/{run}/{f.name}", target="_blank")
                 for f in sorted(directory.iterdir()) if f.is_file() and f.name.endswith(DOWNLOADABLE)]
        result = load_result(directory)
        meta = {k: v for k, v in result.meta.items() if k not in ("versions", "tokens", "token_ids")}
        return result.plot(), links, json.dumps(meta, indent=1, default=str)[:4000], ""
