"""Writing the README's figures: a plotly figure to a PNG beside the scripts, when kaleido can."""

from __future__ import annotations

from pathlib import Path


def write_png(figure, path: Path, width: int, height: int) -> None:
    """Write ``figure`` to ``path``; without kaleido or a browser, say so and go on (the numbers stand)."""
    try:
        figure.write_image(path, width=width, height=height, scale=1)
        print(f"wrote {path}")
    except Exception as err:  # kaleido's errors have no common type
        print(f"no PNG ({type(err).__name__}: {err})")
