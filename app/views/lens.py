"""Lens view: the logit lens grid (or the tuned lens, when this model has one) and the target's
trajectory across layers, both lenses overlaid where a tuned lens exists."""

from __future__ import annotations

from dash import Input, Output, dcc, html

from ...probes.readouts.lens import logit_lens
from ...probes.readouts.tuned_lens import default_path, load_tuned_lens

from .. import exports
from ..state import Control, tab_view
from ..widgets import loading, guarded, needs_model, target_input, open_tab

TAB, LABEL = "lens", "Lens"
TARGET = Control("lens_target", "lens-target")
KIND = Control("lens_kind", "lens-kind", "logit")
COLOR = Control("lens_color", "lens-color", "top_prob")
CONTROLS = (TARGET, KIND, COLOR)
WINDOW = 16  # positions shown: the chosen destination and those before it


def layout():
    return html.Div(className="view", children=[
        html.Div(className="controls", children=[
            target_input(TARGET.id),
            dcc.RadioItems(id="lens-kind", options=[{"label": "logit lens", "value": "logit"},
                                                    {"label": "tuned lens", "value": "tuned"}],
                           value=KIND.default, inline=True),
            dcc.RadioItems(id="lens-color", options=[{"label": "top-1 probability", "value": "top_prob"},
                                                     {"label": "target probability", "value": "target_prob"}],
                           value=COLOR.default, inline=True),
            html.Span(id="lens-note", className="muted"),
        ]),
        html.Div(id="lens-error"),
        loading(dcc.Graph(id="lens-grid")),
        loading(dcc.Graph(id="lens-trajectory")),
        exports.actions(TAB),
    ])


def register(app, session, runs_root) -> None:
    exports.register(app, session, runs_root, TAB, "lens-grid")

    @app.callback(Output("lens-kind", "options"), Output("lens-note", "children"), Input("model-store", "data"))
    def kinds(store):
        needs_model(store)
        with session.use() as model:
            trained = default_path(model).is_file()
        note = "" if trained else f"no tuned lens for this model yet (headscope lens-train --model {store['loaded']})"
        return [{"label": "logit lens", "value": "logit"},
                {"label": "tuned lens", "value": "tuned", "disabled": not trained}], note

    @app.callback(Output("lens-grid", "figure"), Output("lens-trajectory", "figure"), Output(f"{TAB}-shown", "data"),
                  Output("lens-error", "children"), Input(tab_view(TAB), "data"), Input("model-store", "data"))
    @guarded(outputs=4, error_at=3)
    def render(view, store):
        needs_model(store)
        open_tab(view, TAB)
        target, kind, color = view.get(TARGET.key) or None, view.get(KIND.key), view.get(COLOR.key) or COLOR.default
        n = len(session.tokens(view["prompt"]))
        dest = view.get("dest")
        dest = n - 1 if dest is None or not 0 <= dest < n else dest
        positions = list(range(max(0, dest - WINDOW + 1), dest + 1))

        def compute(model):
            plain = logit_lens(model, view["prompt"], target=target, positions=positions)
            tuned = None
            if default_path(model).is_file():
                tuned = logit_lens(model, view["prompt"], target=target, positions=positions,
                                   lens=load_tuned_lens(model))
            return plain, tuned

        plain, tuned = session.memo(("lens", view["prompt"], target, tuple(positions)), compute)
        shown = tuned if kind == "tuned" and tuned is not None else plain
        others = [tuned] if tuned is not None else []
        return shown.plot(color), plain.trajectory(dest, *others), session.show(shown), ""
