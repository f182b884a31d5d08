"""Heads view: a layer x head map of any head score; click a head to see its pattern on the prompt,
its direct effect on the target, and the target's log-probability with that head ablated.

Scores: the detectors (induction, previous-token, duplicate-token; on repeated random tokens), the
ablation effect, direct effect, self-repair (``circuits.heads.direct``) and gradient importance of every
head on the current prompt (computed in the background), and any per-head column of a head table saved under the runs directory (head reports,
retrieval and arithmetic runs), one choice per operation, ablation mode, model or prompt set.
"""

from __future__ import annotations

from pathlib import Path

from dash import Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from ...circuits.heads.ablation import prepare
from ...circuits.heads.direct import head_direct_effects
from ...circuits.heads.single_heads import head_ablation, single_heads
from ...circuits.heads.detectors import DETECTORS, detector_scores
from ...circuits.head_scores import HeadScores
from ...circuits.heads.importance import gradient_importance
from ...probes import HeadscopeError
from ...probes.readouts.attention import attention_pattern
from ...probes.readouts.components import component_attribution

from .. import exports, saved_scores
from ..jobs import job_progress
from ..state import Control, tab_view
from ..widgets import loading, guarded, job_controls, job_options, needs_model, target_input, open_tab

TAB, LABEL = "heads", "Heads"
LIVE = {"ablation": "ablation effect on this prompt (zero, log-prob)",
        "direct": "direct effect on this prompt (zero, log-prob, the direct path alone)",
        "self_repair": "self-repair on this prompt (direct effect - ablation effect)",
        "gradient": "gradient importance on this prompt (Michel et al.)"}


def score_choices(_session, runs_root: Path, _view=None, live: dict | None = None) -> list:
    """Detectors, the live scores (enabled once computed) and saved runs' scores."""
    options = [{"label": f"detector: {name}", "value": name} for name in DETECTORS]
    options += [{"label": label, "value": key, "disabled": not (live or {}).get(key)} for key, label in LIVE.items()]
    return options + saved_scores.choices(runs_root)


SCORE = Control("score", "heads-score", "induction", choices=score_choices)
TARGET = Control("heads_target", "heads-target")
CONTROLS = (SCORE, TARGET)


def layout():
    return html.Div(className="view", children=[
        html.Div(className="controls", children=[
            html.Label(["score ", dcc.Dropdown(id=SCORE.id, value=SCORE.default, clearable=False,
                                               className="wide")]),
            target_input(TARGET.id),
            *job_controls("heads", "Compute on this prompt"),
        ]),
        html.Div(id="heads-error"),
        dcc.Store(id="heads-live"),
        html.Div(className="row", children=[
            loading(dcc.Graph(id="heads-map"), className="col-half"),
            html.Div(className="col-half", children=[
                html.Div(id="heads-detail"),
                loading(dcc.Graph(id="heads-pattern")),
            ]),
        ]),
        exports.actions(TAB),
    ])


def register(app, session, runs_root: Path) -> None:
    exports.register(app, session, runs_root, TAB, "heads-map")

    @app.callback(Output(SCORE.id, "options"), Input("model-store", "data"), Input("heads-live", "data"),
                  Input("tabs", "value"))
    def options(_store, live, _tab):
        return score_choices(session, runs_root, live=live)

    @app.callback(
        Output("heads-live", "data"), Output("heads-error", "children"),
        Input("heads-run", "n_clicks"), Input("autorun", "data"), State("view", "data"), State(TARGET.id, "value"),
        **job_options("heads"))
    def compute_live(set_progress, _clicks, autorun, view, target):
        if ctx.triggered_id == "autorun" and ((autorun or {}).get("tab") != TAB or view.get(SCORE.key) not in LIVE):
            raise PreventUpdate  # a shared link to a live score computes it, else nothing to do
        return _live(set_progress, view, target)

    @guarded(outputs=2, error_at=1)
    def _live(set_progress, view, target):
        with job_progress(set_progress), session.use() as model:
            record = _record(model, view["prompt"], target)
            setup = prepare(model, [record], metric="logprob")
            ablation = single_heads(setup).frame
            direct = head_direct_effects(setup, list(zip(ablation["layer"], ablation["head"])), [0])
            grad = gradient_importance(setup).frame
        heads = ablation.merge(direct, on=["prompt", "layer", "head"])
        heads["self_repair"] = heads["direct_effect"] - heads["effect"]
        scores = {key: heads[["layer", "head", column]].rename(columns={column: "score"})
                  for key, column in (("ablation", "effect"), ("direct", "direct_effect"), ("self_repair", "self_repair"))}
        scores["gradient"] = grad[["layer", "head", "importance"]].rename(columns={"importance": "score"})
        meta = {"model": model.spec, "prompt": view["prompt"], "target": record["target"]}
        return {key: session.show(HeadScores(frame, {**meta, "score": key, "title": f"{LIVE[key]}, target "
                                                      f"{record['target']!r}"}))
                for key, frame in scores.items()}, ""

    @app.callback(Output("heads-map", "figure"), Output(f"{TAB}-shown", "data"),
                  Output("heads-error", "children", allow_duplicate=True), Input(tab_view(TAB), "data"),
                  Input("model-store", "data"), Input("heads-live", "data"), prevent_initial_call="initial_duplicate")
    @guarded(outputs=3, error_at=2)
    def head_map(view, store, live):
        needs_model(store)
        open_tab(view, TAB)
        score = view.get(SCORE.key) or SCORE.default
        if score in DETECTORS:
            scores = session.memo(("detectors",), detector_scores)
            frame = scores[["layer", "head", score]].rename(columns={score: "score"})
            result = HeadScores(frame, {"model": store["loaded"], "score": score, "title":
                                        f"{score} score (TransformerLens head detector, repeated random tokens)"})
        else:
            result = _scores(session, score, live, runs_root)
        return result.plot((view["layer"], view["head"])), session.show(result), ""

    @app.callback(Output("heads-detail", "children"), Output("heads-pattern", "figure"),
                  Input(tab_view(TAB), "data"), Input("model-store", "data"), State("heads-target", "value"))
    @guarded(outputs=2, error_at=0)
    def detail(view, store, target):
        needs_model(store)
        open_tab(view, TAB)
        layer, head, prompt = view["layer"], view["head"], view["prompt"]

        def compute(model):
            record = _record(model, prompt, target)
            comp = component_attribution(model, prompt, target=record["target"]).frame
            dla = float(comp[(comp["kind"] == "head") & (comp["layer"] == layer) & (comp["head"] == head)]["dla"].iloc[0])
            one = head_ablation(model, [record], metric="logprob", heads=[(layer, head)], progress=False).frame.iloc[0]
            return record["target"], dla, float(one["clean"]), float(one["ablated"])

        target_token, dla, clean, ablated = session.memo(("head-detail", prompt, target, layer, head), compute)
        pattern = session.memo(("pattern", prompt, layer, (head,), None),
                               lambda model: attention_pattern(model, prompt, layer, head))
        text = html.Ul([
            html.Li(f"L{layer}H{head} on the prompt's last token, target {target_token!r}"),
            html.Li(f"direct logit attribution: {dla:+.3f}"),
            html.Li(f"log p(target): {clean:.3f} clean, {ablated:.3f} with the head zero-ablated "
                    f"({ablated - clean:+.3f})"),
        ])
        return text, pattern.plot()


def _record(model, prompt: str, target: str | None) -> dict:
    """The prompt as a one-record prompt set; the target defaults to the model's top next token."""
    if not target:
        from ...probes import run

        batch = model.batch([prompt])
        top = int(run(model, batch, logits_at=batch.last).logits[0].argmax())
        target = model.tokenizer.decode([top])
    return {"prompt": prompt, "target": target}


def _scores(session, score: str, live: dict | None, runs_root: Path) -> HeadScores:
    """A computed or saved per-head score."""
    if score in LIVE:
        if not (live or {}).get(score):
            raise HeadscopeError("press 'Compute on this prompt' first")
        return session.shown(live[score])
    if saved_scores.is_choice(score):
        frame, title = saved_scores.read_choice(runs_root, score)
        return HeadScores(frame, {"title": title, "score": score})
    raise HeadscopeError(f"unknown score {score!r}")
