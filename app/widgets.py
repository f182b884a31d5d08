"""Pieces every view uses: error messages in the page instead of blank views or stack traces."""

from __future__ import annotations

import functools

import dash
from dash import html
from dash.exceptions import PreventUpdate

from ..probes import HeadscopeError, HeadscopeFailure
from ..probes.progress import Cancelled


def error_box(message: str) -> html.Div:
    return html.Div(message, className="error", role="alert")


def guarded(outputs: int, error_at: int):
    """Wrap a callback: a ``HeadscopeError`` (a user's mistake) or ``HeadscopeFailure`` (a corrupt file, a
    failed download) becomes its one-line message in output
    ``error_at`` and leaves the other outputs as they were; any other error is reported the same way,
    by type and message, never as a traceback."""

    def wrap(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except PreventUpdate:
                raise
            except Cancelled:
                message = "cancelled"
            except (HeadscopeError, HeadscopeFailure) as err:  # a mistake, or a failure it can describe
                message = str(err)
            except Exception as err:  # an analysis failing on an input we did not foresee: say so in the page
                message = f"internal error ({type(err).__name__}): {str(err).splitlines()[0] if str(err) else ''}"
            result = [dash.no_update] * outputs
            result[error_at] = error_box(message)
            return tuple(result) if outputs > 1 else result[0]

        return call

    return wrap


def loading(child, **kwargs):
    """A spinner over ``child`` while it is recomputed, shown only past a second: an animation drawn
    during every quick update would take a core from the model's forward on a small machine."""
    from dash import dcc

    return dcc.Loading(child, delay_show=1000, **kwargs)


def open_tab(view: dict | None, tab: str) -> dict:
    """The view state of an open ``tab`` (from its ``state.tab_view`` store); stops the callback otherwise."""
    if not view or view.get("tab") != tab:
        raise PreventUpdate
    return view


def needs_model(store: dict | None) -> None:
    """Stop a view's callback until a model is loaded."""
    if not (store or {}).get("loaded"):
        raise PreventUpdate


def target_input(element_id: str, value: str | None = None):
    """A label and text box for an optional target token."""
    from dash import dcc

    return html.Label(["target ", dcc.Input(id=element_id, type="text", debounce=True, value=value,
                                            placeholder="default: the model's top token")])


def job_controls(prefix: str, label: str) -> list:
    """Run and cancel buttons, a progress bar and its label for the background job ``prefix``."""
    return [html.Button(label, id=f"{prefix}-run", className="primary"),
            html.Button("Cancel", id=f"{prefix}-cancel", disabled=True),
            html.Progress(id=f"{prefix}-progress", value="0", max="1"),
            html.Span(id=f"{prefix}-label", className="muted")]


def job_options(prefix: str, shown: list | None = None, interval: int = 1000) -> dict:
    """The background-callback arguments that wire ``job_controls(prefix)``: the run button is off
    and cancel on while the job runs, and the job's progress fills the bar (and the outputs ``shown``,
    given as ``job_progress``'s ``extra``), polled every ``interval`` milliseconds."""
    from dash import Input, Output

    return dict(background=True, prevent_initial_call=True, interval=interval,
                running=[(Output(f"{prefix}-run", "disabled"), True, False),
                         (Output(f"{prefix}-cancel", "disabled"), False, True)],
                cancel=[Input(f"{prefix}-cancel", "n_clicks")],
                progress=[Output(f"{prefix}-progress", "value"), Output(f"{prefix}-progress", "max"),
                          Output(f"{prefix}-label", "children"), *(shown or [])])
