"""Single-head ablations of every head: the ``HeadAblation`` result and the functions that make it.

Each head is ablated alone (``ablation``: modes, metrics, positions), every head of the model as rows of
batched sweeps. ``effect`` is signed so that positive means the head supports the behaviour; each head's
mean over the prompts carries a Student-t interval by default (``stats``).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ...probes import Model, Result
from ..stats import check_interval, interval_meta, mean_interval
from .ablation import Ablation, Head, ablate, all_heads, prepare


class HeadAblation(Result):
    """Single-head ablations: one row per (prompt, layer, head) with ``clean``, ``ablated``, ``effect``."""

    kind = "head-ablation"
    table = "heads_by_prompt"

    def summary(self) -> pd.DataFrame:
        """Per head: mean effect over prompts with its interval (``meta["interval"]``: Student-t 95% unless
        the run asked otherwise), and mean clean/ablated (and direct effect and self-repair, where the
        frame has them: the head report's)."""
        info = self.meta.get("interval") or {}
        method = "bootstrap" if str(info.get("method", "")).startswith("bootstrap") else "t"
        level, seed = info.get("level", 0.95), self.meta.get("seed", 0)
        rows = []
        for (layer, head), part in self.frame.groupby(["layer", "head"], sort=True):
            mean, low, high = mean_interval(part["effect"].to_numpy(), method=method, level=level, seed=seed)
            rows.append({"layer": layer, "head": head, "effect": float(mean), "ci_low": float(low),
                         "ci_high": float(high), "clean": part["clean"].mean(), "ablated": part["ablated"].mean(),
                         **{c: part[c].mean() for c in ("direct_effect", "self_repair") if c in part},
                         "n_prompts": len(part)})
        return pd.DataFrame(rows)

    def grid(self) -> pd.DataFrame:
        return self.summary().pivot(index="layer", columns="head", values="effect")

    def effects_by_head(self) -> dict[str, list[float]]:
        """``{"layer-head": [effect per prompt]}``, the retrieval-head reference's export format."""
        return {f"{l}-{h}": part.sort_values("prompt")["effect"].tolist()
                for (l, h), part in self.frame.groupby(["layer", "head"], sort=True)}

    def plot(self):
        import plotly.graph_objects as go

        summary = self.summary()
        grid = summary.pivot(index="layer", columns="head", values="effect")
        low = summary.pivot(index="layer", columns="head", values="ci_low")
        high = summary.pivot(index="layer", columns="head", values="ci_high")
        fig = go.Figure(go.Heatmap(
            z=grid.values, x=list(grid.columns), y=list(grid.index), colorscale="RdBu", zmid=0,
            customdata=np.stack([low.values, high.values], -1),
            hovertemplate="L%{y}H%{x}<br>effect %{z:.4f}<br>95% [%{customdata[0]:.4f}, %{customdata[1]:.4f}]"
                          "<extra></extra>"))
        m = self.meta
        fig.update_layout(title=f"{m['mode']} ablation, {m['metric']} ({m['effect']}), positions {m['positions']}, "
                                f"{m['n_prompts']} prompts", xaxis_title="head", yaxis_title="layer", height=460)
        return fig


def head_ablation(
    model: Model,
    prompts,
    *,
    mode: str = "zero",
    metric: str = "logprob",
    positions: str = "all",
    mean_over: str = "all",
    reference: list[str] | None = None,
    heads: list[Head] | None = None,
    interval: str = "t",
    level: float = 0.95,
    batch_size: int | None = None,
    progress: bool = True,
) -> HeadAblation:
    """Ablate every head (or ``heads``) alone on every prompt (``ablation``'s docstring for the options);
    each head's mean effect gets a ``level`` interval over the prompts (``interval``: t or bootstrap)."""
    started = time.perf_counter()
    check_interval(interval, level)
    setup = prepare(model, prompts, mode=mode, metric=metric, positions=positions, mean_over=mean_over,
                    reference=reference, batch_size=batch_size)
    result = single_heads(setup, heads, batch_size=batch_size, progress=progress, started=started)
    result.meta["interval"] = interval_meta(interval, level, len(setup.prompts))
    return result


def single_heads(setup: Ablation, heads: list[Head] | None = None, *, indices: list[int] | None = None,
                 batch_size: int | None = None, progress: bool = False, started: float | None = None) -> HeadAblation:
    """``head_ablation`` on a prepared prompt set (``indices``: a subset of its prompts)."""
    started = time.perf_counter() if started is None else started
    heads = all_heads(setup.model) if heads is None else list(heads)
    indices = list(range(len(setup.prompts))) if indices is None else list(indices)
    clean, ablated, _, _ = ablate(setup, [[h] for h in heads], indices=indices, batch_size=batch_size,
                                  progress=progress, desc="head ablation")
    frame = pd.DataFrame({
        "prompt": np.tile(indices, len(heads)),
        "layer": np.repeat([l for l, _ in heads], len(indices)),
        "head": np.repeat([h for _, h in heads], len(indices)),
        "clean": np.tile(clean, len(heads)),
        "ablated": ablated.reshape(-1),
    })
    frame["effect"] = setup.sign * (frame["clean"] - frame["ablated"])
    meta = {"model": setup.model.spec, **setup.describe(), "interval": interval_meta("t", 0.95, len(indices)),
            "seconds": round(time.perf_counter() - started, 3)}
    return HeadAblation(frame, meta)
