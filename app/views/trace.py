"""Causal-trace view: subject and target fields, the three heatmaps, run in the background with a
progress bar and a cancel button."""

from __future__ import annotations

from dash import Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from ...circuits.causal.tracing import trace

from ..jobs import job_progress
from .. import exports
from ..state import Control
from ..widgets import error_box, guarded, job_controls, job_options, target_input

TAB, LABEL = "trace", "Causal trace"
SUBJECT = Control("subject", "trace-subject", "The Eiffel Tower")
TARGET = Control("trace_target", "trace-target")
SAMPLES = Control("samples", "trace-samples", 10, int)
CONTROLS = (SUBJECT, TARGET, SAMPLES)


def layout():
    return html.Div(className="view", children=[
        html.Div(className="controls", children=[
            html.Label(["subject ", dcc.Input(id=SUBJECT.id, type="text", value=SUBJECT.default)]),
            target_input(TARGET.id),
            html.Label(["noise samples ", dcc.Input(id=SAMPLES.id, type="number", value=SAMPLES.default, min=1, max=50,
                                                    className="number")]),
            *job_controls("trace", "Trace"),
        ]),
        html.Div(id="trace-error"),
        dcc.Graph(id="trace-graph"),
        exports.actions(TAB),
    ])


def register(app, session, runs_root) -> None:
    exports.register(app, session, runs_root, TAB, "trace-graph")

    @app.callback(
        Output("trace-graph", "figure"), Output(f"{TAB}-shown", "data"), Output("trace-error", "children"),
        Input("trace-run", "n_clicks"), Input("autorun", "data"), State("view", "data"),
        *[State(c.id, "value") for c in CONTROLS], **job_options("trace"))
    def run_trace(set_progress, _clicks, autorun, view, subject, target, samples):
        if ctx.triggered_id == "autorun" and (autorun or {}).get("tab") != TAB:
            raise PreventUpdate  # a shared link opens the trace tab: it is computed, else nothing to do
        return _traced(set_progress, view, subject, target, samples)

    @guarded(outputs=3, error_at=2)
    def _traced(set_progress, view, subject, target, samples):
        if not samples or int(samples) < 1:
            return {}, None, error_box(f"noise samples {samples!r} must be a positive number")
        key = ("trace", view["prompt"], subject or "", target or None, int(samples))
        with job_progress(set_progress):  # the same trace again is remembered
            result = session.memo(key, lambda model: trace(model, view["prompt"], subject or "", target or None,
                                                           samples=int(samples)))
        notes = " ".join(result.meta["notes"])
        summary = (f"clean p({result.meta['target']!r}) = {result.meta['high_score']:.3f}, corrupted "
                   f"{result.meta['low_score']:.3f}. {notes}")
        return result.plot(), session.show(result), html.Div(summary, className="muted")
