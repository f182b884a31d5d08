"""Self-contained HTML report pages: text, tables and plotly figures, plotly's script inlined once so
the page opens offline."""

from __future__ import annotations

import html

STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;font-size:13px}"
         "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}h2{margin-top:2em}")


def html_page(title: str, parts: list) -> str:
    """A page of ``parts``: HTML strings, or plotly figures (the first one carries plotly.js)."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{STYLE}</style></head><body>"]
    first = True
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        else:
            out.append(part.to_html(include_plotlyjs="inline" if first else False, full_html=False))
            first = False
    out.append("</body></html>")
    return "\n".join(out)


def write_report(path, title: str, parts: list) -> None:
    """Write the page of ``parts`` to ``path``: the one place report pages are written."""
    from pathlib import Path

    Path(path).write_text(html_page(title, parts), encoding="utf-8")
