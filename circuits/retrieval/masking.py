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
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pandas as pd

from ..head_scores import head_scores
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
    """One row per (mode, heads masked: none / top / random, k, seed): accuracy and share solved."""

    kind = "retrieval-masking"
    table = "masking"
    title = "headscope retrieval-head masking"

    def report(self) -> list:
        return [f"<h1>Masking retrieval heads: {self.meta['model']}</h1>",
                f"<p>{self.meta['n_tests']} needle tests; {self.meta['accuracy']}. {self.meta['seconds']} s.</p>",
                self.plot(), self.frame.to_html(index=False, float_format=lambda v: f"{v:.3f}")]

    def plot(self):
        import plotly.graph_objects as go

        fig = go.Figure()
        base = self.frame[self.frame["kind"] == "none"]["accuracy"].iloc[0]
        for mode, dash in zip(MODES, ("solid", "dot")):
            part = self.frame[self.frame["mode"] == mode]
            if part.empty:
                continue
            top = part[part["kind"] == "top"].sort_values("k")
            rand = part[part["kind"] == "random"].groupby("k")["accuracy"].agg(["mean", "min", "max"]).reset_index()
            fig.add_scatter(x=top["k"], y=top["accuracy"], name=f"top-k retrieval heads ({mode})",
                            line=dict(color="#c0392b", dash=dash))
            fig.add_scatter(x=rand["k"], y=rand["mean"], name=f"k random other heads ({mode})",
                            line=dict(color="#2c7fb8", dash=dash),
                            error_y=dict(type="data", symmetric=False, array=rand["max"] - rand["mean"],
                                         arrayminus=rand["mean"] - rand["min"]))
        fig.add_hline(y=base, line_dash="dash", line_color="gray", annotation_text="no heads masked")
        fig.update_layout(title="needle retrieval with heads masked", xaxis_title="k heads masked",
                          yaxis_title="mean ROUGE-1 recall", yaxis_range=[0, 1.05])
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
    progress: bool = True,
) -> MaskingTest:
    """Mask the top-k heads by ``scores`` (any form ``head_scores`` reads) vs k random non-retrieval heads
    (module docstring)."""
    started = time.perf_counter()
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
    frame = pd.DataFrame([{"mode": v[0], "kind": v[1], "k": v[2], "seed": v[3],
                           "heads": " ".join(f"L{l}H{h}" for l, h in v[4]),
                           "accuracy": sum(recalls[i]) / len(recalls[i]),
                           "solved": sum(r > 0.5 for r in recalls[i]) / len(recalls[i])}
                          for i, v in enumerate(variants)])
    meta = {"model": model.spec, "modes": list(modes), "ks": sorted(set(ks)), "seeds": seeds, "threshold": threshold,
            "n_retrieval_heads": len(retrieval), "n_tests": len(tests), "max_new_tokens": max_new_tokens,
            "accuracy": "mean ROUGE-1 recall of real_needle by the greedy answer; solved: share above 0.5",
            "heads_are": "query heads", "seconds": round(time.perf_counter() - started, 2)}
    return MaskingTest(frame, meta)
