"""Causal-trace view: subject and target fields, the three heatmaps, run in the background with a
progress bar and a cancel button."""

from __future__ import annotations

from dash import Input, Output, State, dcc, html

from ...circuits.causal.tracing import trace

from ..jobs import job_progress
from ..widgets import error_box, guarded, job_controls, job_options, target_input

TAB, LABEL = "trace", "Causal trace"


def layout():
    return html.Div(className="view", children=[
        html.Div(className="controls", children=[
            html.Label(["subject ", dcc.Input(id="trace-subject", type="text", value="The Eiffel Tower")]),
            target_input("trace-target"),
            html.Label(["noise samples ", dcc.Input(id="trace-samples", type="number", value=10, min=1, max=50,
                                                    className="number")]),
            *job_controls("trace", "Trace"),
        ]),
        html.Div(id="trace-error"),
        dcc.Graph(id="trace-graph"),
    ])


def register(app, session, runs_root) -> None:
    @app.callback(
        Output("trace-graph", "figure"), Output("trace-error", "children"),
        Input("trace-run", "n_clicks"),
        State("view", "data"), State("trace-subject", "value"), State("trace-target", "value"),
        State("trace-samples", "value"), **job_options("trace"))
    def run_trace(set_progress, _clicks, view, subject, target, samples):
        return _traced(set_progress, view, subject, target, samples)

    @guarded(outputs=2, error_at=1)
    def _traced(set_progress, view, subject, target, samples):
        if not samples or int(samples) < 1:
            return {}, error_box(f"noise samples {samples!r} must be a positive number")
        with job_progress(set_progress), session.use() as model:
            result = trace(model, view["prompt"], subject or "", target or None, samples=int(samples))
        notes = " ".join(result.meta["notes"])
        summary = (f"clean p({result.meta['target']!r}) = {result.meta['high_score']:.3f}, corrupted "
                   f"{result.meta['low_score']:.3f}. {notes}")
        return result.plot(), html.Div(summary, className="muted")
