"""The masking test of retrieval heads: mask the top-k retrieval heads, or k random heads that are not
retrieval heads, and measure how well the model still retrieves the needle.

Accuracy is the mean ROUGE-1 recall of ``real_needle`` by the greedy answer (and the share of tests
above 0.5), over the same needle tests, for each k, against the unmasked model. Two masking modes:
``uniform`` zeroes the head's query after rotary embedding, so it attends uniformly to all it may
see (the reference's masking), and ``zero`` zeroes the head's output. Differences from the
reference (``needle_in_haystack_with_mask.py``): heads are masked in the prompt's forward pass too,
not only while decoding; random heads are drawn with a seed, several times, and never from the
retrieval heads (score above the threshold) or the top k (the reference's exclusion test never
matches, so its random heads can be top heads); any model size, not 32 x 32 heads. All variants of
one test run as rows of one batch, each row masking its own heads.

Intervals (``stats``: Student-t on the mean by default, or a seeded BCa bootstrap): each row's
``ci_low``/``ci_high`` is the interval of its accuracy over the needle tests, the band of the top-k and
unmasked curves; the random-k curve is the mean over the seeds' head sets with the interval over them
(``meta["interval"]``, n = seeds; ``meta["interval_over_tests"]``, n = tests). With one seed, or one
test, that interval is undefined (NaN), never zero width.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..head_scores import head_scores
from ..stats import check_interval, interval_meta, mean_interval
from ...probes import HeadscopeError, Model, Result
from ...probes.engine.attention_control import AttentionControl, head_masks
from ...probes.engine.generate import generate
from ...probes.progress import tracked

from .haystack import NeedleTest
from .scores import has_newline, rouge1_recall

MODES = ("uniform", "zero")
Head = tuple[int, int]


def read_head_scores(path: str | Path) -> dict[Head, float]:
    """Mean score per head from a ``{"layer-head": [scores]}`` file (the reference's format, or a
    retrieval run's ``retrieval_heads.json``), or from a retrieval run's directory."""
    path = Path(path)
    if path.is_dir():
        path = path / "retrieval_heads.json"
    if not path.is_file():
        raise HeadscopeError(f"head score file not found: {path}")
    try:
        raw = json.loads(path.read_text())
        scores = {}
        for key, values in raw.items():
            layer, head = (int(x) for x in key.split("-"))
            scores[(layer, head)] = sum(values) / len(values) if values else 0.0
    except (ValueError, AttributeError, TypeError) as err:
        raise HeadscopeError(f"{path} is not a {{\"layer-head\": [scores]}} file ({err})") from None
    if not scores:
        raise HeadscopeError(f"{path} lists no heads")
    return scores


class MaskingTest(Result):
    """One row per (mode, heads masked: none / top / random, k, seed): accuracy with its interval over the
    tests, and share solved; ``recalls``: the recall of every test under every row (``row``: its index)."""

    kind = "retrieval-masking"
    table = "masking"
    TABLES = ("recalls",)
    title = "headscope retrieval-head masking"

    def _interval(self) -> tuple[str, float, int]:
        info = self.meta.get("interval") or {}
        method = "bootstrap" if str(info.get("method", "")).startswith("bootstrap") else "t"
        return method, info.get("level", 0.95), self.meta.get("seed", 0)

    def curves(self) -> pd.DataFrame:
        """One row per (mode, kind, k): ``accuracy`` with its interval (``ci_low``, ``ci_high``) over ``n``
        values, ``over`` naming them: random heads, the mean over the seeds' head sets and its interval over
        them; top-k and unmasked, the row's accuracy and its interval over the needle tests."""
        method, level, seed = self._interval()
        f = self.frame
        if "ci_low" not in f:  # a result saved before the rows carried intervals
            f = f.assign(ci_low=np.nan, ci_high=np.nan)
        rows = []
        for (mode, kind, k), part in f.groupby(["mode", "kind", "k"], sort=False):
            if kind == "random":
                mean, low, high = mean_interval(part["accuracy"].to_numpy(), method=method, level=level, seed=seed)
                n, over = len(part), "seeds"
            else:
                row = part.iloc[0]
                mean, low, high, n, over = row["accuracy"], row["ci_low"], row["ci_high"], self.meta["n_tests"], "tests"
            rows.append({"mode": mode, "kind": kind, "k": int(k), "accuracy": float(mean), "ci_low": float(low),
                         "ci_high": float(high), "n": int(n), "over": over})
        return pd.DataFrame(rows)

    def derived(self) -> dict[str, pd.DataFrame]:
        return {"curves": self.curves()}

    def report(self) -> list:
        return [f"<h1>Masking retrieval heads: {self.meta['model']}</h1>",
                f"<p>{self.meta['n_tests']} needle tests; {self.meta['accuracy']}. {self.meta['seconds']} s.</p>",
                self.plot(), "<h2>Curves</h2>", self.curves().to_html(index=False, float_format=lambda v: f"{v:.3f}"),
                "<h2>Rows</h2>", self.frame.to_html(index=False, float_format=lambda v: f"{v:.3f}")]

    def plot(self):
        """Accuracy against k, top-k retrieval heads vs k random other heads, each with its interval band
        (``curves``); the title says the method, the level and what each interval is over."""
        import plotly.graph_objects as go

        method, level, _ = self._interval()
        curves = self.curves()
        fig = go.Figure()
        base = curves[curves["kind"] == "none"].iloc[0]
        colors = {"top": ("#c0392b", "rgba(192,57,43,0.18)"), "random": ("#2c7fb8", "rgba(44,127,184,0.18)")}
        for mode, dash in zip(MODES, ("solid", "dot")):
            part = curves[curves["mode"] == mode]
            if part.empty:
                continue
            for kind, label in (("top", "top-k retrieval heads"), ("random", "k random other heads")):
                c = part[part["kind"] == kind].sort_values("k")
                line, fill = colors[kind]
                name = f"{label} ({mode})"
                fig.add_scatter(x=list(c["k"]) + list(c["k"])[::-1], y=list(c["ci_high"]) + list(c["ci_low"])[::-1],
                                fill="toself", fillcolor=fill, line=dict(width=0), hoverinfo="skip",
                                legendgroup=name, name=f"{level:.0%} interval, {name}", showlegend=False)
                fig.add_scatter(x=c["k"], y=c["accuracy"], name=name, legendgroup=name, mode="lines+markers",
                                line=dict(color=line, dash=dash), customdata=c[["ci_low", "ci_high", "n"]].to_numpy(),
                                hovertemplate="k=%{x}: %{y:.3f}, " + f"{level:.0%}" + " [%{customdata[0]:.3f}, "
                                              "%{customdata[1]:.3f}] over %{customdata[2]}<extra></extra>")
        if np.isfinite([base["ci_low"], base["ci_high"]]).all():
            fig.add_hrect(y0=base["ci_low"], y1=base["ci_high"], fillcolor="gray", opacity=0.12, line_width=0)
        fig.add_hline(y=base["accuracy"], line_dash="dash", line_color="gray", annotation_text="no heads masked")
        name = "Student-t" if method == "t" else "BCa bootstrap"
        fig.update_layout(title=f"needle retrieval with heads masked<br><sub>bands: {level:.0%} {name} intervals "
                                f"on the mean; random heads over {self.meta['seeds']} head sets, top-k and unmasked over "
                                f"{self.meta['n_tests']} tests (n = 1: undefined)</sub>",
                          xaxis_title="k heads masked", yaxis_title="mean ROUGE-1 recall", yaxis_range=[0, 1.05])
        return fig


def masking_test(
    model: Model,
    tests: list[NeedleTest],
    scores,
    ks: list[int],
    *,
    modes: tuple[str, ...] = MODES,
    seeds: int = 3,
    threshold: float = 0.1,
    max_new_tokens: int = 50,
    seed: int = 0,
    interval: str = "t",
    level: float = 0.95,
    progress: bool = True,
) -> MaskingTest:
    """Mask the top-k heads by ``scores`` (any form ``head_scores`` reads) vs k random non-retrieval heads
    (module docstring); intervals at ``level`` (``interval``: t, or bootstrap seeded with ``seed``)."""
    started = time.perf_counter()
    check_interval(interval, level)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise HeadscopeError(f"seeds {seeds!r} (random head sets per k) must be at least 1")
    if not tests:
        raise HeadscopeError("no needle tests given")
    scores = head_scores(scores)
    all_heads = [(l, h) for l in range(model.n_layers) for h in range(model.n_heads)]
    for mode in modes:
        if mode not in MODES:
            raise HeadscopeError(f"unknown masking mode {mode!r}; use {' or '.join(MODES)}")
    for head in scores:
        if head not in set(all_heads):
            raise HeadscopeError(f"head L{head[0]}H{head[1]} of the score file is not a head of this model")
    ranked = sorted(all_heads, key=lambda hd: -scores.get(hd, 0.0))
    retrieval = {hd for hd in all_heads if scores.get(hd, 0.0) > threshold}
    if not ks or any(k < 1 or k > len(all_heads) for k in ks):
        raise HeadscopeError(f"k values {list(ks)} must be between 1 and the number of heads ({len(all_heads)})")
    variants = [("none", "none", 0, -1, [])]
    for mode in modes:
        for k in sorted(set(ks)):
            top = ranked[:k]
            others = [hd for hd in all_heads if hd not in retrieval and hd not in set(top)]
            if k > len(others):
                raise HeadscopeError(f"k={k} is more than the {len(others)} heads that are neither retrieval heads "
                                     f"nor among the top {k}")
            variants.append((mode, "top", k, -1, top))
            for s in range(seeds):
                variants.append((mode, "random", k, s, random.Random(seed * 1000 + k * 31 + s).sample(others, k)))
    recalls = {i: [] for i in range(len(variants))}
    for test in tracked(tests, desc="masking", unit="test", disable=not progress):
        for mode in modes:  # the unmasked model rides along with the first mode's batch
            rows = [i for i, v in enumerate(variants) if v[0] == mode or (v[0] == "none" and mode == modes[0])]
            masks = head_masks([variants[i][4] for i in rows], model.n_heads)
            control = AttentionControl(**{"uniform" if mode == "uniform" else "silenced": masks})
            answers = generate(model, [test.tokens] * len(rows), max_new_tokens, stop=has_newline, control=control,
                               batch_size=len(rows))
            for i, new in zip(rows, answers):
                text = model.tokenizer.decode(new, skip_special_tokens=True).strip()
                recalls[i].append(rouge1_recall(test.needle.real_needle, text))
    values = np.array([recalls[i] for i in range(len(variants))], dtype=float)  # [variant, test]
    accuracy, low, high = mean_interval(values, axis=1, method=interval, level=level, seed=seed)
    frame = pd.DataFrame([{"mode": v[0], "kind": v[1], "k": v[2], "seed": v[3],
                           "heads": " ".join(f"L{l}H{h}" for l, h in v[4]),
                           "accuracy": float(accuracy[i]), "ci_low": float(low[i]), "ci_high": float(high[i]),
                           "solved": float((values[i] > 0.5).mean())}
                          for i, v in enumerate(variants)])
    meta = {"model": model.spec, "modes": list(modes), "ks": sorted(set(ks)), "seeds": seeds, "seed": seed,
            "threshold": threshold, "interval": interval_meta(interval, level, seeds),
            "interval_over_tests": interval_meta(interval, level, len(tests)),
            "n_retrieval_heads": len(retrieval), "n_tests": len(tests), "max_new_tokens": max_new_tokens,
            "accuracy": "mean ROUGE-1 recall of real_needle by the greedy answer; solved: share above 0.5",
            "heads_are": "query heads", "seconds": round(time.perf_counter() - started, 2)}
    per_test = pd.DataFrame({"row": np.repeat(np.arange(len(variants)), len(tests)),
                             "test": np.tile(np.arange(len(tests)), len(variants)), "recall": values.reshape(-1)})
    return MaskingTest(frame, meta, {"recalls": per_test})
