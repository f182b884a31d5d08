"""The dashboard's view state and its URL: one dict, mirrored in the query string.

``{"model", "prompt", "layer", "head", "tab", "dest"}`` is all a view needs; the URL holds the same,
so a shared link reopens the same model, prompt, head and tab. Parsing is forgiving: a missing or
malformed value falls back to its default (the views then say what is wrong, e.g. a layer out of
range for the model).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode

TABS = ("attention", "lens", "trace", "heads", "circuit", "runs")
DEFAULT_PROMPT = "The Eiffel Tower is located in the city of"


def default_view(model: str) -> dict:
    return {"model": model, "prompt": DEFAULT_PROMPT, "layer": 0, "head": 0, "tab": "attention", "dest": None}


def parse(search: str | None, fallback: dict) -> dict:
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
    return view


def encode(view: dict) -> str:
    """The query string of a view (``?model=...&prompt=...``)."""
    keys = ("model", "prompt", "layer", "head", "tab", "dest")
    return "?" + urlencode({k: view[k] for k in keys if view.get(k) is not None})
