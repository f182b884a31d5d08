"""The headscope dashboard: one model, a prompt, and linked views of what the model does with it.

``create_app`` builds the Dash app around a ``ModelSession`` (the one loaded model) and a runs
directory (saved results to browse). The page keeps its view state (model, prompt, layer, head,
tab, destination token) in one store mirrored in the URL (``state``): every control writes it
through one callback, and every view renders from it, so a selection in one view (a head clicked in
the attention grid, the head map or the circuit graph, a token clicked in the strip or the pattern) drives the others.
Views compute only when their tab is open, and report a user's mistake as a message in the page.
Long analyses run as background callbacks (``jobs.ThreadManager``) with a progress bar and a
cancel button.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import dash
from dash import Dash, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from ..probes.models.files import alias_names
from ..probes.models.random_models import CONFIGS

from . import state
from .session import ModelSession
from .views import attention, circuit, heads, lens, runs, steer, trace
from .widgets import guarded

VIEWS = (attention, lens, trace, heads, circuit, steer, runs)
RENDERED = (attention, lens, heads, circuit, runs)  # views drawn from their tab's view state (trace, steer: on request)
OPEN = {view.TAB: view for view in RENDERED}
CONTROLS = [control for view in VIEWS for control in view.CONTROLS]  # their values are view state, in the URL
BY_ID = {control.id: control for control in CONTROLS}
CHOOSERS = [control for control in CONTROLS if control.choices]  # dropdowns: their options come with a link
PRECEDENCE = ("url", "prompt-run", "model-load", "model-spec", "tabs", "attn-grid", "heads-map", "circuit-graph",
              "attn-pattern", "token-click", "layer-select", "head-select", *BY_ID)


def create_app(session: ModelSession, runs_dir: str | Path, default_model: str = "default") -> Dash:
    import diskcache

    from .jobs import ThreadManager

    runs_root = Path(runs_dir).expanduser().resolve()
    manager = ThreadManager(diskcache.Cache(tempfile.mkdtemp(prefix="headscope-jobs-")))
    app = Dash(__name__, title="headscope", background_callback_manager=manager,
               suppress_callback_exceptions=True, assets_folder=str(Path(__file__).with_name("assets")))
    app.layout = _layout(default_model)
    _register_core(app, session, default_model, runs_root)

    @app.server.route("/status")
    def status():  # the loaded model and loading state, for scripts and tests
        return {k: v for k, v in session.status().items() if k != "started"}
    for view in VIEWS:
        view.register(app, session, runs_root)
    return app


def _layout(default_model: str) -> html.Div:
    options = alias_names() + [f"random:{name}" for name in CONFIGS]
    return html.Div(className="page", children=[
        dcc.Location(id="url", refresh=False),
        dcc.Store(id="view", data=state.default_view(default_model, CONTROLS)),
        *[dcc.Store(id=state.tab_view(view.TAB)) for view in RENDERED],
        dcc.Store(id="autorun"),
        dcc.Store(id="model-store"),
        dcc.Interval(id="model-poll", interval=400),
        html.Header(className="bar", children=[
            html.H1("headscope"),
            dcc.Input(id="model-spec", type="text", list="model-options", value=default_model, debounce=True,
                      placeholder="model: alias, random:<arch>, .gguf, directory or hub name",
                      style={"width": "320px"}),
            html.Datalist(id="model-options", children=[html.Option(value=o) for o in options]),
            html.Button("Load model", id="model-load"),
            html.Span(id="model-status", className="status"),
            html.Progress(id="model-progress", style={"display": "none"}),
        ]),
        html.Section(className="prompt", children=[
            dcc.Textarea(id="prompt", value=state.DEFAULT_PROMPT, rows=3),
            html.Button("Run", id="prompt-run", className="primary"),
            html.Div(id="prompt-error"),
            html.Div(id="tokens", className="tokens"),
            dcc.Store(id="token-click"),  # {"index": i}, written by the strip's click handler (assets)
            dcc.Store(id="tokens-data"),  # the strip's tokens and the (model, prompt) they are of
        ]),
        dcc.Tabs(id="tabs", value="attention", children=[
            dcc.Tab(label=view.LABEL, value=view.TAB, children=view.layout()) for view in VIEWS]),
    ])


def _register_core(app: Dash, session: ModelSession, default_model: str, runs_root: Path) -> None:
    @app.callback(
        Output("url", "search"), Output("view", "data"), Output("prompt", "value"), Output("tabs", "value"),
        Output("model-spec", "value"), Output("layer-select", "value"), Output("head-select", "value"),
        Output("autorun", "data"), Output("model-poll", "disabled", allow_duplicate=True),
        *[Output(c.id, "value") for c in CONTROLS],
        *[Output(c.id, "options", allow_duplicate=True) for c in CHOOSERS],
        Output("layer-select", "options", allow_duplicate=True), Output("head-select", "options", allow_duplicate=True),
        Input("url", "search"), Input("prompt-run", "n_clicks"), Input("tabs", "value"),
        Input("model-load", "n_clicks"), Input("model-spec", "value"), Input("attn-grid", "clickData"),
        Input("heads-map", "clickData"), Input("layer-select", "value"), Input("head-select", "value"),
        Input("attn-pattern", "clickData"), Input("token-click", "data"),
        Input("circuit-graph", "tapNodeData"), *[Input(c.id, "value") for c in CONTROLS],
        State("prompt", "value"), State("view", "data"), prevent_initial_call="initial_duplicate",
    )
    def sync(search, _run, tab, _load, spec, grid_click, map_click, layer, head, pattern_click, token_click,
             node, *rest):
        values, (prompt, view) = rest[:len(CONTROLS)], rest[len(CONTROLS):]
        fired = {key.rsplit(".", 1)[0] for key in ctx.triggered_prop_ids}
        # several inputs can fire together: take the most deliberate one
        trigger = next((t for t in PRECEDENCE if t in fired), ctx.triggered_id if fired else None)
        before = view
        view = dict(view or state.default_view(default_model, CONTROLS))
        # Dash can drop the page's first answer when another input fires before it arrives: whichever
        # answer comes first reads the URL
        from_url = trigger in (None, "url") or not view.get("linked")
        view["linked"] = True
        choices = {}
        if from_url:
            view = state.parse(search, view, CONTROLS)
            # a dropdown's options come with the linked value: set before them, the value would be cleared
            # (and a value from another callback, arriving while this one runs, can be lost by Dash)
            for control in CHOOSERS:
                choices[control.id] = control.choices(session, runs_root, view)
                view[control.key] = state.among(choices[control.id], view[control.key])
        elif trigger == "prompt-run":
            view.update(prompt=prompt or "", dest=None)
        elif trigger == "tabs":
            view["tab"] = tab
        elif trigger in ("model-load", "model-spec"):
            # the box's value, committed on Enter or blur (its n_submit reaches Dash before the new value)
            view["model"] = (spec or "").strip() or default_model
        elif trigger in ("attn-grid", "heads-map"):
            # both figures put head h at x in [h, h + 1) (named "H{h}" on the head map) and layer l at y
            # in [l, l + 1): Dash's click data carries x and y, not the heatmap's customdata
            point = ((grid_click if trigger == "attn-grid" else map_click) or {}).get("points", [{}])[0]
            if "x" in point and "y" in point:
                view.update(layer=int(float(point["y"])), head=int(float(str(point["x"]).lstrip("H"))))
        elif trigger == "circuit-graph" and node and node.get("head") is not None:  # not input, MLPs, logits
            view.update(layer=int(node["layer"]), head=int(node["head"]))
        elif trigger == "layer-select" and layer is not None:
            view["layer"] = int(layer)
        elif trigger == "head-select" and head is not None:
            view["head"] = int(head)
        elif trigger == "attn-pattern":
            label = (pattern_click or {}).get("points", [{}])[0].get("y", "")
            if str(label).split(":")[0].isdigit():
                view["dest"] = int(str(label).split(":")[0])
        elif trigger == "token-click" and token_click:
            view["dest"] = int(token_click["index"])
        elif trigger in BY_ID:
            control = BY_ID[trigger]
            view[control.key] = control.clean(values[CONTROLS.index(control)])
        session.load(view["model"])
        if view != before and hasattr(OPEN.get(view["tab"]), "prefetch"):  # a round trip before its render asks
            OPEN[view["tab"]].prefetch(session, view)
        # controls take the view's values only when the view came from elsewhere (the URL, a click on a
        # figure): echoing a control's own value back would undo what the user is typing. Only this
        # callback writes them: a dropdown's options callback writes its options alone (had it written the
        # value too, from a view read before this answer, it would undo a link).
        picked = from_url or trigger in ("attn-grid", "heads-map", "circuit-graph")
        keep = dash.no_update
        search_now = state.encode(view, CONTROLS)
        return (search_now if search_now != search else keep, view if view != before else keep,
                view["prompt"] if from_url else keep, view["tab"] if from_url else keep,
                view["model"] if from_url else keep, view["layer"] if picked else keep,
                view["head"] if picked else keep,
                # a shared link to a computed view (a trace, live head scores, the circuit) computes it
                {"tab": view["tab"], "search": search_now} if from_url else keep,
                False if from_url or trigger in ("model-load", "model-spec") else keep,  # poll while it loads
                *[view[c.key] if from_url else keep for c in CONTROLS],
                *[(state.stand_ins(view[c.key]) if choices[c.id] is None else choices[c.id]) if from_url else keep
                  for c in CHOOSERS],
                *((structure_choices(session, view["model"]) or (state.stand_ins(view["layer"]),
                                                                  state.stand_ins(view["head"])))
                  if from_url else (keep, keep)))

    @app.callback(Output("model-store", "data"), Output("model-status", "children"),
                  Output("model-progress", "style"), Output("model-progress", "value"), Output("model-progress", "max"),
                  Output("model-poll", "disabled"), Input("model-poll", "n_intervals"), State("model-store", "data"))
    def poll(_, known):
        status = session.status()
        summary = {k: status[k] for k in ("spec", "state", "error", "version", "loaded", "info")}
        done, total = 0, 1
        if status["state"] == "loading":
            text = f"loading {status['spec']} ... {status['elapsed']:.0f} s"
            if status.get("progress"):  # the download, the de-quantisation, the weights: whichever runs now
                done, total, desc = status["progress"]
                text += f": {desc} {done}/{total}"
        elif status["state"] == "error":
            text = f"could not load {status['spec']!r}: {status['error']}" + (
                f" (still using {status['loaded']})" if status["loaded"] else "")
        elif status["info"]:
            info = status["info"]
            text = (f"{info['model']}: {info['architecture']}, {info['n_layers']} layers x {info['n_heads']} heads, "
                    f"{info['device']}")
        else:
            text = "no model"
        loading = status["state"] == "loading"
        bar = {"display": "inline-block"} if loading else {"display": "none"}
        store = dash.no_update if summary == known else summary  # views re-render only on a change
        # polling stops once nothing is loading (a forward would share the CPU with it); a load restarts it
        return store, text, bar, str(done), str(max(total, 1)), not loading and summary == known

    @app.callback(Output("layer-select", "options"), Output("head-select", "options"), Input("model-store", "data"))
    def structure(store):
        """The loaded model's layers and heads as choices (their values come with the view, from ``sync``)."""
        options = structure_choices(session, (store or {}).get("loaded"))
        if options is None:
            raise PreventUpdate
        return options

    @app.callback(Output("tokens-data", "data"), Output("prompt-error", "children"), Input("view", "data"),
                  Input("model-store", "data"), State("tokens-data", "data"))
    @guarded(outputs=2, error_at=1)
    def token_strip(view, store, held):
        """The prompt's tokens (each one's text as shown and its id), sent again only for a new prompt or
        model; ``assets/tokens.js`` draws them as plain spans with one click handler, and marks the chosen
        one in place (Dash's components for hundreds of spans took the browser a core during the forward)."""
        if not (store or {}).get("loaded"):
            return None, ""
        key = [store["loaded"], view["prompt"]]
        if held and held["key"] == key:
            raise PreventUpdate
        toks = session.tokens(view["prompt"])
        return {"key": key, "ids": toks.ids,
                "text": [text if text.strip() else repr(text)[1:-1] or "\u2423" for text in toks.strings]}, ""

    app.clientside_callback("function (strip, view) { return window.headscopeTokens.show(strip, view && view.dest); }",
                            Output("tokens", "title"), Input("tokens-data", "data"), Input("view", "data"))

    # the view state goes to the open tab's store only (and the others are emptied once), so a new prompt
    # or selection calls the open view's callbacks alone, not a request per view that would do nothing
    tabs = [view.TAB for view in RENDERED]
    app.clientside_callback(
        "function (view, ...held) { return window.headscopeTabs.route(view, %s, held); }" % json.dumps(tabs),
        *[Output(state.tab_view(tab), "data") for tab in tabs], Input("view", "data"),
        *[State(state.tab_view(tab), "data") for tab in tabs])


def structure_choices(session: ModelSession, spec: str | None) -> tuple[list, list] | None:
    """The layers and heads of model ``spec`` as dropdown options, once it is the loaded one."""
    model = session.model
    if model is None or model.spec != spec:
        return None
    return ([{"label": f"L{l}", "value": l} for l in range(model.n_layers)],
            [{"label": f"H{h}", "value": h} for h in range(model.n_heads)])


def serve(spec: str = "default", runs_dir: str = "runs", host: str = "127.0.0.1", port: int = 8050,
          device: str = "auto", dtype: str = "float32", debug: bool = False) -> None:
    """Start the dashboard (``headscope app``); the model loads in the background while the page opens."""
    session = ModelSession(device=device, dtype=dtype)
    session.load(spec)
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    app = create_app(session, runs_dir, default_model=spec)
    print(f"headscope dashboard on http://{host}:{port}/ (model {spec}, runs in {Path(runs_dir).resolve()})",
          flush=True)
    app.run(host=host, port=port, debug=debug, use_reloader=False)

