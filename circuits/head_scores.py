"""Head scores in whatever form the project's results give them, as ``{(layer, head): value}``, and
``HeadScores``, a result of one score per head (its plot: the layer x head map).

Accepted: a mapping ``{(layer, head): value}``; a frame with ``layer``, ``head`` and a score column
(``column``, or the first of effect, score, importance; rows of one head are averaged, so a per-prompt
table works); a Series indexed by ``(layer, head)``; or a result whose main table is such a frame
(``HeadAblation``, ``HeadReport``, ``RetrievalHeads.heads()``).
"""

from __future__ import annotations

from typing import ClassVar

import pandas as pd

from ..probes import HeadscopeError, Result

Head = tuple[int, int]
COLUMNS = ("effect", "score", "importance")


def head_scores(source, column: str | None = None) -> dict[Head, float]:
    """``{(layer, head): value}`` from any of the forms above (module docstring); None gives ``{}``."""
    if source is None:
        return {}
    if isinstance(source, Result):
        source = source.frame
    if isinstance(source, pd.Series):
        if source.index.nlevels != 2:
            raise HeadscopeError("a Series of head scores needs a (layer, head) index")
        return {(int(l), int(h)): float(v) for (l, h), v in source.groupby(level=[0, 1]).mean().items()}
    if isinstance(source, pd.DataFrame):
        if not {"layer", "head"} <= set(source.columns):
            raise HeadscopeError("a frame of head scores needs columns layer and head")
        names = [column] if column else [c for c in COLUMNS if c in source.columns][:1]
        if not names or names[0] not in source.columns:
            raise HeadscopeError(f"the head-score frame needs a column {column or 'effect, score or importance'} "
                                 "beside layer and head")
        means = source.groupby(["layer", "head"])[names[0]].mean()
        return {(int(l), int(h)): float(v) for (l, h), v in means.items()}
    try:
        return {(int(l), int(h)): float(v) for (l, h), v in dict(source).items()}
    except (TypeError, ValueError):
        raise HeadscopeError(f"head scores must be a mapping {{(layer, head): value}}, a frame or a Series, "
                             f"not {type(source).__name__}") from None


class HeadScores(Result):
    """One score per head (``layer``, ``head``, ``score``); ``meta["title"]`` says what the score is."""

    kind: ClassVar[str] = "head-scores"
    table: ClassVar[str] = "heads"

    def plot(self, selected: Head | None = None):
        """The layer x head map, the ``selected`` head outlined."""
        import plotly.graph_objects as go

        grid = self.frame.pivot(index="layer", columns="head", values="score")
        custom = [[[l, h] for h in grid.columns] for l in grid.index]
        signed = bool((grid.values < 0).any())
        fig = go.Figure(go.Heatmap(z=grid.values, x=[f"H{h}" for h in grid.columns], y=list(grid.index),
                                   customdata=custom, colorscale="RdBu" if signed else "Blues",
                                   zmid=0 if signed else None,
                                   hovertemplate="L%{customdata[0]}H%{customdata[1]}: %{z:.4f}<extra></extra>"))
        if selected is not None:
            fig.add_scatter(x=[f"H{selected[1]}"], y=[selected[0]], mode="markers", hoverinfo="skip", showlegend=False,
                            marker=dict(symbol="square-open", size=14, color="black", line=dict(width=2)))
        fig.update_layout(title=self.meta.get("title", "head scores"),
                          yaxis=dict(title="layer", range=[len(grid) - 0.5, -0.5], dtick=1), height=520)
        return fig
