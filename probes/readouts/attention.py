"""Attention patterns of a prompt, computed only where they are looked at.

``attention_pattern``: the weights of chosen heads of one layer, for a window of destination rows
(every source column), with the tokens, as a tidy frame (``layer, head, dest, src, weight``). Only
that layer's pattern is kept, and only the asked-for rows of it.

``attention_grid``: every head of every layer at a glance: each pattern max-pooled to at most
``size`` x ``size`` cells (max rather than mean, so that a thin diagonal such as a previous-token
head's stays visible), kept per layer as the forward runs. ``attention_views`` gives both from one
forward pass (the dashboard's attention view).

Both need the bridge's eager attention (SDPA never forms the weights); the weights are those the
model uses, softmax over the keys a position may attend to (sliding windows included).
"""

from __future__ import annotations

import time

import pandas as pd
import torch

from ..models import hooks
from ..engine.run import Record, run
from ..errors import HeadscopeError
from ..models.model import Model
from ..results.result import Result


TICKS = 24  # token labels drawn per axis at most (every token is in the hover): each costs layout time in the browser


class AttentionPattern(Result):
    """One row per (head, destination, source) of the computed window."""

    kind = "attention"
    table = "attention"

    def plot(self, head: int | None = None):
        """Destination x source heatmap of one head (default: the first), tokens on both axes."""
        import plotly.graph_objects as go

        head = self.meta["heads"][0] if head is None else head
        part = self.frame[self.frame["head"] == head]
        grid = part.pivot(index="dest", columns="src", values="weight")
        tokens = self.meta["tokens"]
        rows, cols = list(grid.index), list(grid.columns)
        fig = go.Figure(go.Heatmap(
            z=grid.values.astype("float32"), x=[_label(i, tokens) for i in cols], y=[_label(i, tokens) for i in rows],
            colorscale="Blues", zmin=0, zmax=1,
            hovertemplate="from %{y}<br>to %{x}<br>weight %{z:.3f}<extra></extra>"))
        fig.update_layout(title=f"L{self.meta['layer']}H{head} attention (rows {rows[0]}-{rows[-1]})",
                          xaxis={"title": "source token", "nticks": TICKS}, height=max(360, min(900, 14 * len(rows) + 140)),
                          yaxis={"title": "destination token", "autorange": "reversed", "nticks": TICKS})
        return fig

    def token_plot(self, dest: int):
        """One destination's attention over the source tokens, a bar series per head."""
        import plotly.graph_objects as go

        part = self.frame[self.frame["dest"] == dest]
        if part.empty:
            raise HeadscopeError(f"destination {dest} is not among the computed rows "
                                 f"{self.meta['rows'][0]}..{self.meta['rows'][1] - 1}")
        tokens = self.meta["tokens"]
        fig = go.Figure()
        for head, rows in part.groupby("head"):
            fig.add_trace(go.Bar(x=[_label(i, tokens) for i in rows["src"]], y=rows["weight"],
                                 name=f"L{self.meta['layer']}H{head}"))
        fig.update_layout(title=f"attention from {_label(dest, tokens)}", barmode="group", yaxis_title="weight",
                          xaxis={"title": "source token", "nticks": TICKS}, height=360)
        return fig


class AttentionGrid(Result):
    """Every head's pattern pooled to a small tile: one row per (layer, head, tile row, tile column)."""

    kind = "attention-grid"
    table = "attention_grid"

    def plot(self):
        """All tiles in one heatmap, layers down and heads across."""
        import numpy as np
        import plotly.graph_objects as go

        L, H, s = self.meta["n_layers"], self.meta["n_heads"], self.meta["size"]
        step = s + 1  # a blank line between tiles
        z = np.full((L * step, H * step), np.nan)
        f = self.frame
        z[f["layer"] * step + f["i"], f["head"] * step + f["j"]] = f["weight"]
        # head h's tile spans x in [h, h + 1) and layer l's y in [l, l + 1): a click says which head
        x, y = np.arange(H * step) / step, np.arange(L * step) / step
        fig = go.Figure(go.Heatmap(z=z.astype(np.float32), x=x, y=y, colorscale="Blues", zmin=0, zmax=1,
                                   showscale=False, hoverinfo="none"))
        fig.update_xaxes(tickvals=[h + s / (2 * step) for h in range(H)], ticktext=[f"H{h}" for h in range(H)],
                         side="top", showgrid=False)
        fig.update_yaxes(tickvals=[l + s / (2 * step) for l in range(L)], ticktext=[f"L{l}" for l in range(L)],
                         autorange="reversed", showgrid=False)
        cell = max(2, 48 // step)  # pixels per pooled cell
        fig.update_layout(title="every head (click one)", height=min(1600, 90 + cell * L * step),
                          width=max(260, 70 + cell * H * step), margin=dict(l=50, r=10, t=70, b=10))
        return fig


def _label(position: int, tokens: list[str]) -> str:
    return f"{position}:{tokens[position]!r}"


def attention_pattern(
    model: Model,
    prompt: str,
    layer: int,
    heads: int | list[int],
    *,
    rows: tuple[int, int] | None = None,
    max_rows: int = 256,
) -> AttentionPattern:
    """Attention weights of ``heads`` of ``layer`` for destination rows ``[start, end)`` (default: the
    last ``max_rows``), over every source position."""
    return attention_views(model, prompt, layer, heads, rows=rows, max_rows=max_rows, grid=None)[1]


def attention_grid(model: Model, prompt: str, *, size: int = 16) -> AttentionGrid:
    """Every head's pattern max-pooled to at most ``size`` x ``size`` tiles."""
    return attention_views(model, prompt, grid=size)[0]


def attention_views(
    model: Model,
    prompt: str,
    layer: int | None = None,
    heads: int | list[int] = (),
    *,
    rows: tuple[int, int] | None = None,
    max_rows: int = 256,
    grid: int | None = 16,
) -> tuple[AttentionGrid | None, AttentionPattern | None]:
    """The grid (tiles of at most ``grid`` x ``grid``; None: no grid) and, when ``layer`` is given, the
    pattern of its ``heads`` for the destination ``rows``, from one forward pass."""
    started = time.perf_counter()
    tokens = model.tokenize(prompt)
    n = len(tokens)
    if grid is not None and (isinstance(grid, bool) or not isinstance(grid, int) or grid < 1):
        raise HeadscopeError(f"size {grid!r} must be a positive integer")
    if layer is not None:
        model.check_layer(layer)
        heads = [model.check_head(h) for h in ([heads] if isinstance(heads, int) else heads)]
        if not heads:
            raise HeadscopeError("no head given")
        start, end = (max(0, n - max_rows), n) if rows is None else (int(rows[0]), int(rows[1]))
        if not 0 <= start < end <= n:
            raise HeadscopeError(f"rows {rows!r} must be (start, end) with 0 <= start < end <= {n}")
    s = None if grid is None else min(grid, n)
    detail: dict[str, torch.Tensor] = {}
    names = [hooks.pattern(l) for l in range(model.n_layers)] if grid is not None else []
    shown = None if layer is None else hooks.pattern(layer)
    index = None if layer is None else torch.tensor(heads, device=model.device)

    def keep(name, act):  # [1, head, dest, src] -> [head, s, s] tiles (max over each block); of the shown
        if name == shown:  # layer, only its heads and rows leave the forward
            detail["rows"] = act[0, index, start:end].detach().float().cpu()
            if name not in names:
                return act[:0]
        return torch.nn.functional.adaptive_max_pool2d(act[0].float(), s)

    recorded = Record(names + ([shown] if shown and shown not in names else []), keep=keep)
    cache = run(model, model.batch([tokens]), record=recorded, logits=False).cache  # stops after the last pattern
    seconds = round(time.perf_counter() - started, 3)
    grid_result = pattern = None
    if grid is not None:
        tiles = torch.stack([cache[name] for name in names]).cpu()
        l_idx, h_idx, i_idx, j_idx = torch.meshgrid(*(torch.arange(k) for k in tiles.shape), indexing="ij")
        frame = pd.DataFrame({"layer": l_idx.flatten().numpy(), "head": h_idx.flatten().numpy(),
                              "i": i_idx.flatten().numpy(), "j": j_idx.flatten().numpy(),
                              "weight": tiles.flatten().numpy()})
        grid_result = AttentionGrid(frame, {
            "model": model.spec, "prompt": prompt, "n_layers": model.n_layers, "n_heads": model.n_heads, "size": s,
            "n_tokens": n, "pooling": "max over each tile's block of (destination, source) cells", "seconds": seconds})
    if layer is not None:
        weights = detail["rows"]  # [heads, rows, src]
        h_idx, d_idx, s_idx = torch.meshgrid(torch.arange(len(heads)), torch.arange(start, end), torch.arange(n),
                                             indexing="ij")
        frame = pd.DataFrame({"layer": layer, "head": torch.tensor(heads)[h_idx.flatten()].numpy(),
                              "dest": d_idx.flatten().numpy(), "src": s_idx.flatten().numpy(),
                              "weight": weights.flatten().numpy()})
        pattern = AttentionPattern(frame, {
            "model": model.spec, "prompt": prompt, "layer": layer, "heads": heads, "rows": [start, end],
            "tokens": tokens.strings, "token_ids": tokens.ids, "seconds": seconds})
    return grid_result, pattern
