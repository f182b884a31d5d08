"""The dashboard's view state and its URL: one dict, mirrored in the query string.

``{"model", "prompt", "layer", "head", "tab", "dest"}`` plus one key per view control (``Control``:
the trace's subject, target and samples, the lens's target and kind, the heads score, the circuit's
thresholds and kinds, the compared heads, ...) is all a page needs; the URL holds the same (controls
only where they differ from their defaults), so a shared link reopens the same view exactly. Parsing
is forgiving: a missing or malformed value falls back to its default (the views then say what is
wrong, e.g. a layer out of range for the model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, urlencode

TABS = ("attention", "lens", "trace", "heads", "circuit", "steer", "runs")
DEFAULT_PROMPT = "The Eiffel Tower is located in the city of"
BASE = ("model", "prompt", "layer", "head", "tab", "dest")


def tab_view(tab: str) -> str:
    """The id of the store that holds the view state while ``tab`` is open (None while it is not): a
    view renders from it, so a change of the view state calls only the open tab's callbacks."""
    return f"view-{tab}"


@dataclass(frozen=True)
class Control:
    """One view control whose value is part of the view state: URL key ``key``, component ``id``'s
    ``value``, its default, and the type of its value (``many``: a list of them, comma-separated in the URL).
    ``choices(session, runs_root, view)``, for a dropdown, gives its options for ``view`` (None while they
    cannot be known)."""

    key: str
    id: str
    default: Any = None
    kind: type = str
    many: bool = False
    choices: Callable[[Any, Any, dict], list | None] | None = None

    def read(self, text: str) -> Any:
        """The value a URL parameter holds (ValueError if it is not one)."""
        if self.many:
            return [self.kind(part) for part in text.split(",") if part != ""]
        return self.kind(text) if text != "" else None

    def write(self, value: Any) -> str:
        return ",".join(str(v) for v in value) if self.many else str(value)

    def clean(self, value: Any) -> Any:
        """A control's value as the view keeps it (a cleared box is None, numbers as numbers)."""
        if value in (None, "") or (self.many and not isinstance(value, list)):
            return [] if self.many else None
        try:
            return [self.kind(v) for v in value] if self.many else self.kind(value)
        except (TypeError, ValueError):
            return self.default


def among(options: list | None, value: Any) -> Any:
    """``value`` without the choices ``options`` lack (None for a single choice they lack); all of it
    while the options are not known."""
    if options is None:
        return value
    have = {o["value"] if isinstance(o, dict) else o for o in options}
    if isinstance(value, list):
        return [v for v in value if v in have]
    return value if value in have else None


def stand_ins(value: Any) -> list:
    """Options holding just ``value``'s choices, for a dropdown whose real options are not known yet
    (a Dash dropdown clears a value that is not among its options)."""
    return [{"label": str(v), "value": v} for v in (value if isinstance(value, list) else [value]) if v is not None]


def default_view(model: str, controls: Iterable[Control] = ()) -> dict:
    view = {"model": model, "prompt": DEFAULT_PROMPT, "layer": 0, "head": 0, "tab": "attention", "dest": None}
    view.update({c.key: c.default for c in controls})
    return view


def parse(search: str | None, fallback: dict, controls: Iterable[Control] = ()) -> dict:
    """The view a query string describes, starting from ``fallback``."""
    query = parse_qs((search or "").lstrip("?"), keep_blank_values=True)
    view = dict(fallback)
    for key in ("model", "prompt"):
        if query.get(key):
            view[key] = query[key][0]
    for key in ("layer", "head", "dest"):
        if query.get(key):
            try:
                view[key] = int(query[key][0])
            except ValueError:
                pass
    if query.get("tab") and query["tab"][0] in TABS:
        view["tab"] = query["tab"][0]
    for control in controls:
        if control.key in query:
            try:
                view[control.key] = control.read(query[control.key][0])
            except ValueError:
                pass
    return view


def encode(view: dict, controls: Iterable[Control] = ()) -> str:
    """The query string of a view (``?model=...&prompt=...``); controls only where not at their default."""
    params = {k: view[k] for k in BASE if view.get(k) is not None}
    params.update({c.key: c.write(view[c.key]) for c in controls
                   if c.key in view and view[c.key] != c.default and view[c.key] is not None})
    return "?" + urlencode(params)
