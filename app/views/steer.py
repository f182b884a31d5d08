"""Steer view: a steering vector from contrast pairs typed in the page (or a saved one), added at a layer
with a strength while the model continues the prompt; the steered and unsteered continuations appear
side by side as they are produced, with the behaviour score (the logit difference of a target and a
foil at the prompt's last position, steered and not)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from dash import Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from ...circuits.metrics import target_metric
from ...circuits.steering import Setting, Steering, SteeringSweep, SteeringVector
from ...circuits.steering.apply import ALL
from ...circuits.steering.vectors import METHODS, SIDES, make_vector
from ...probes import HeadscopeError, load_result, run
from ...probes.engine.generate import generate
from ...probes.progress import tell

from .. import exports
from ..jobs import job_progress
from ..state import Control
from ..widgets import guarded, job_controls, job_options
from .runs import find_runs

TAB, LABEL = "steer", "Steer"
PAIRS_TEXT = "\n".join(f"{p['positive']} | {p['negative']}" for p in (
    {"positive": "I loved the film. It was wonderful and I was very happy.",
     "negative": "I hated the film. It was awful and I was very unhappy."},
    {"positive": "The meal was excellent, and everyone enjoyed it.",
     "negative": "The meal was dreadful, and everyone disliked it."},
    {"positive": "What a delightful holiday; it made my day better.",
     "negative": "What a miserable holiday; it made my day worse."}))


def vector_choices(_session, runs_root: Path, _view=None) -> list:
    """The pairs typed here, or any saved run that holds a steering vector (a vector or a steer run)."""
    options = [{"label": "the pairs below", "value": "pairs"}]
    for name in find_runs(runs_root):
        try:
            kind = json.loads((runs_root / name / "meta.json").read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            continue
        if kind in (SteeringVector.kind, SteeringSweep.kind):
            options.append({"label": f"saved run {name} ({kind})", "value": name})
    return options


SOURCE = Control("vector", "steer-source", "pairs", choices=vector_choices)
METHOD = Control("method", "steer-method", "mean-diff")
PAIRS = Control("pairs", "steer-pairs", PAIRS_TEXT)
LAYER = Control("steer_layer", "steer-layer", None, int)
STRENGTH = Control("strength", "steer-strength", 4.0, float)
TARGET = Control("steer_target", "steer-target", " great")
FOIL = Control("steer_foil", "steer-foil", " terrible")
TOKENS = Control("steer_tokens", "steer-tokens", 24, int)
CONTROLS = (SOURCE, METHOD, PAIRS, LAYER, STRENGTH, TARGET, FOIL, TOKENS)


def layout():
    return html.Div(className="view", children=[
        html.Div(className="controls", children=[
            html.Label(["vector ", dcc.Dropdown(id=SOURCE.id, value=SOURCE.default, clearable=False, className="wide")]),
            html.Label(["method ", dcc.Dropdown(id=METHOD.id, value=METHOD.default, clearable=False,
                                                options=list(METHODS), style={"width": "130px"})]),
            html.Label(["layer ", dcc.Input(id=LAYER.id, type="number", min=0, className="number",
                                            placeholder="middle")]),
            html.Label(["strength ", dcc.Input(id=STRENGTH.id, type="number", value=STRENGTH.default, step="any",
                                               className="number")]),
            html.Label(["target ", dcc.Input(id=TARGET.id, type="text", value=TARGET.default, debounce=True,
                                             className="narrow")]),
            html.Label(["foil ", dcc.Input(id=FOIL.id, type="text", value=FOIL.default, debounce=True,
                                           className="narrow")]),
            html.Label(["new tokens ", dcc.Input(id=TOKENS.id, type="number", value=TOKENS.default, min=1, max=200,
                                                 className="number")]),
            *job_controls("steer", "Generate"),
        ]),
        html.Label(["contrast pairs, one per line: positive | negative (an in-context vector reads them as "
                    "demonstrations, negative -> positive)",
                    dcc.Textarea(id=PAIRS.id, value=PAIRS.default, rows=4, style={"width": "100%"})]),
        html.Div(id="steer-error"),
        html.Div(id="steer-score", className="muted"),
        html.Div(className="row", children=[
            html.Div(className="col-half", children=[html.H4("steered"), html.Pre(id="steer-steered",
                                                                                    className="generation")]),
            html.Div(className="col-half", children=[html.H4("unsteered"), html.Pre(id="steer-clean",
                                                                                      className="generation")]),
        ]),
        dcc.Graph(id="steer-graph"),
        exports.actions(TAB),
    ])


def register(app, session, runs_root) -> None:
    exports.register(app, session, runs_root, TAB, "steer-graph")

    @app.callback(Output(SOURCE.id, "options"), Input("model-store", "data"), Input("tabs", "value"))
    def options(_store, _tab):
        """The typed pairs and the saved vectors, listed again when the tab opens (a run saved since shows)."""
        return vector_choices(session, runs_root)

    @app.callback(
        Output("steer-steered", "children"), Output("steer-clean", "children"), Output("steer-score", "children"),
        Output("steer-graph", "figure"), Output(f"{TAB}-shown", "data"), Output("steer-error", "children"),
        Input("steer-run", "n_clicks"), Input("autorun", "data"), State("view", "data"),
        *[State(c.id, "value") for c in CONTROLS],
        **job_options("steer", [Output("steer-steered", "children"), Output("steer-clean", "children")], interval=250))
    def run_steer(set_progress, _clicks, autorun, view, *values):
        if ctx.triggered_id == "autorun" and (autorun or {}).get("tab") != TAB:
            raise PreventUpdate  # a shared link to the steer tab generates, else nothing to do
        return _steered(set_progress, view, *[c.clean(v) for c, v in zip(CONTROLS, values)])

    @guarded(outputs=6, error_at=5)
    def _steered(set_progress, view, source, method, pairs_text, layer, strength, target, foil, tokens):
        if strength is None:
            raise HeadscopeError("strength must be a number")
        if not tokens or tokens < 1:
            raise HeadscopeError(f"new tokens {tokens!r} must be a positive number")
        texts = {"steered": "", "clean": ""}
        with job_progress(set_progress, extra=lambda: (texts["steered"], texts["clean"])), session.use() as model:
            vector = _vector(session, model, runs_root, source, method, pairs_text, layer)
            steering = Steering(model, vector)
            setting = Setting(ALL if vector.meta["method"] == "icv" else (vector.layers[0] if layer is None else layer),
                              float(strength))
            steering.check([setting])
            rows = [setting, Setting(ALL, 0.0, "zero")]
            toks = model.tokenize(view["prompt"])
            n = len(toks)
            last, lengths = torch.full((2,), n - 1), torch.full((2,), n)
            score = _score(model, steering, rows, toks, target, foil, last, lengths)
            made: list[list[int]] = [[], []]

            def heard(indices, new, active):  # after each step: the text so far, to the page
                for row in active.nonzero()[:, 0].tolist():
                    made[row].append(int(new[row]))
                texts["steered"], texts["clean"] = (model.tokenizer.decode(m) for m in made)
                tell(len(made[0]) if active[0] else tokens, tokens, "generating")

            new = generate(model, [toks, toks], int(tokens), observe=heard,
                           interventions=lambda group, prompt: steering.interventions([rows[i] for i in group], prompt,
                                                                                      last, lengths))
        steered, clean = (model.tokenizer.decode(ids) for ids in new)
        return steered, clean, score, vector.plot(), session.show(vector), ""


def _vector(session, model, runs_root: Path, source: str | None, method: str | None, pairs_text: str | None,
            layer: int | None) -> SteeringVector:
    """The vector the page asks for: made from the typed pairs (remembered per pairs, method and layer), or
    a saved run's."""
    if source and source != "pairs":
        if source not in find_runs(runs_root):
            raise HeadscopeError(f"run {source!r} is not under the runs directory")
        result = load_result(runs_root / source)
        vector = result.steering_vector if isinstance(result, SteeringSweep) else result
        if not isinstance(vector, SteeringVector):
            raise HeadscopeError(f"run {source!r} holds a {result.kind} result, not a steering vector")
        return vector
    pairs = parse_pairs(pairs_text or "")
    method = method or METHOD.default
    if method not in METHODS:
        raise HeadscopeError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    layers = None if method == "icv" else [model.n_layers // 2 if layer is None else layer]
    key = ("steer-vector", method, tuple((p["positive"], p["negative"]) for p in pairs), layers and layers[0])
    return session.memo(key, lambda m: make_vector(m, method, pairs, layers))


def parse_pairs(text: str) -> list[dict]:
    """``positive | negative`` per non-blank line; a line without both sides is named in the error."""
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        sides = [part.strip() for part in line.split("|")]
        if len(sides) != 2 or not all(sides):
            raise HeadscopeError(f"pair line {number} ({line.strip()[:40]!r}) must be 'positive | negative', "
                                 "both sides non-empty")
        pairs.append(dict(zip(SIDES, sides)))
    if not pairs:
        raise HeadscopeError("type at least one contrast pair: positive | negative")
    return pairs


def _score(model, steering, rows, toks, target, foil, last, lengths) -> str:
    """The logit difference target - foil at the prompt's last position, steered and unsteered."""
    if not (target or "").strip() or not (foil or "").strip():
        return "give a target and a foil for the behaviour score (their logit difference at the prompt's last token)"
    t, _ = model.first_token(target, "target")
    f, _ = model.first_token(foil, "foil")
    batch = model.batch([toks, toks])
    logits = run(model, batch, steering.interventions(rows, True, last, lengths), logits_at=batch.last).logits
    steered, clean = target_metric(logits, "logit_diff", t, f).tolist()
    return (f"behaviour: logit difference {target!r} - {foil!r} at the last prompt token: {steered:+.3f} steered, "
            f"{clean:+.3f} unsteered ({steered - clean:+.3f})")
