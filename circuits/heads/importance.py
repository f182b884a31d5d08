"""Head importance: gradient importance (Michel et al.), pruning curves and top-k vs random-k masking.

Gradient importance ("Are Sixteen Heads Really Better than One?", Michel, Levy & Neubig 2019): a
gate ``g_h`` multiplies each head's output ``z``; ``I_h`` is the mean over prompts of
``|d metric / d g_h|`` at ``g = 1``, optionally L2-normalised within each layer (the reference's
default). The reference accumulates ``|grad|`` of a batch's loss and divides by the token count;
here every row has its own gates, so one forward and one backward give each prompt's own gradient and
the absolute value is taken per prompt (the reference at batch size 1; with the target metrics a
prompt's one scored token is its token). ``gradient`` keeps the signed mean, times the metric's sign:
the first-order estimate of the zero-ablation effect. The metric ``kl`` has no gradient at the clean
point (its minimum), so it is refused.

Pruning curve (Michel et al., Figure 3): heads are removed in order of increasing importance in steps
of 5% of all heads, the importance computed once before pruning (not recomputed after each step), and
the metric evaluated at each step; the same with random orders (several seeds) as the control. The
knee is the step after which the metric falls fastest.

Top-k vs random-k: the k most important heads masked together, against k heads drawn at random from
the heads outside the top k (the retrieval-head reference's control may draw the top heads themselves).
"""

from __future__ import annotations

import random
import time

import numpy as np
import pandas as pd
import torch

from ..head_scores import head_scores
from ...probes.models import hooks
from ...probes import HeadscopeError, Intervention, Result, run
from ...probes.engine.batching import row_chunks

from .ablation import Ablation, Head, ablate, all_heads, prompt_metric


class HeadImportance(Result):
    """Gradient importance per head: ``importance`` (mean |grad|, normalised if asked) and ``gradient``."""

    kind = "head-importance"
    table = "importance"

    def plot(self):
        import plotly.graph_objects as go

        grid = self.frame.pivot(index="layer", columns="head", values="importance")
        fig = go.Figure(go.Heatmap(z=grid.values, x=list(grid.columns), y=list(grid.index), colorscale="Viridis",
                                   hovertemplate="L%{y}H%{x}<br>importance %{z:.4g}<extra></extra>"))
        fig.update_layout(title=f"gradient head importance ({self.meta['metric']}, "
                                f"{'layer-normalised' if self.meta['normalize'] else 'raw'})",
                          xaxis_title="head", yaxis_title="layer", height=460)
        return fig


def gradient_importance(setup: Ablation, *, normalize: bool = True, batch_size: int | None = None) -> HeadImportance:
    """Michel et al.'s head importance on a prepared prompt set (module docstring)."""
    started = time.perf_counter()
    model, enc, metric = setup.model, setup.encoded, setup.metric
    if metric == "kl":
        raise HeadscopeError("metric 'kl' has zero gradient at the clean run; use logprob, prob, logit_diff or loss")
    L, H = model.n_layers, model.n_heads
    abs_sum, signed_sum = torch.zeros(L, H), torch.zeros(L, H)
    n_max = max(len(t) for t in enc.tokens)
    for sl in row_chunks(model, len(enc.tokens), n_max, batch_size):
        toks = enc.tokens[sl]
        batch = model.batch(toks)
        gates = torch.ones(L, len(toks), H, device=model.device, dtype=model.dtype, requires_grad=True)
        gated = [_gate(l, gates[l], batch, setup.positions) for l in range(L)]
        out = run(model, batch, gated, logits_at=None if metric == "loss" else batch.last, grad=True)
        values = prompt_metric(setup, out.logits, batch, list(range(len(enc.tokens)))[sl])
        (grad,) = torch.autograd.grad(values.sum(), gates)
        grad = grad.float().cpu()  # [L, B, H]
        abs_sum += grad.abs().sum(1)
        signed_sum += grad.sum(1)
    n = len(enc.tokens)
    importance = abs_sum / n
    if normalize:
        importance = importance / importance.norm(dim=1, keepdim=True).clamp(min=1e-20)
    frame = pd.DataFrame({"layer": np.repeat(np.arange(L), H), "head": np.tile(np.arange(H), L),
                          "importance": importance.flatten().numpy(),
                          "gradient": (setup.sign * signed_sum / n).flatten().numpy()})
    meta = {"model": model.spec, **setup.describe(), "normalize": normalize,
            "seconds": round(time.perf_counter() - started, 3)}
    return HeadImportance(frame, meta)


def _gate(layer: int, gate: torch.Tensor, batch, positions: str) -> Intervention:
    """Multiply layer ``layer``'s ``z`` by a per-(row, head) gate at every position or at each row's last token."""
    if positions == "all":
        return Intervention.scale(hooks.z(layer), gate[:, None, :, None])
    return Intervention.scale(hooks.z(layer), gate[:, :, None], rows=torch.arange(len(gate)), positions=batch.last)


def ranking(scores) -> list[Head]:
    """Heads from most to least important (ties broken by layer, head)."""
    scores = head_scores(scores)
    return sorted(scores, key=lambda h: (-scores[h], h))


class PruningCurve(Result):
    """Metric after removing a growing fraction of heads, by importance and in random orders."""

    kind = "pruning-curve"
    table = "pruning"

    def plot(self):
        import plotly.graph_objects as go

        fig = go.Figure()
        for order, part in self.frame.groupby("order", sort=False):
            random_order = order.startswith("random")
            fig.add_trace(go.Scatter(x=part["fraction"], y=part["value"], name=order, mode="lines+markers",
                                     line=dict(dash="dot" if random_order else "solid",
                                               color="lightgray" if random_order else "crimson")))
        knee = self.meta.get("knee_fraction")
        if knee is not None:
            fig.add_vline(x=knee, line_dash="dash", annotation_text=f"knee {knee:.0%}")
        fig.update_layout(title=f"pruning curve: heads removed by {self.meta['importance']} (low first) vs random",
                          xaxis_title="fraction of heads removed", yaxis_title=f"mean {self.meta['metric']}",
                          xaxis_tickformat=".0%", height=420)
        return fig


def pruning_curve(
    setup: Ablation,
    importance,
    *,
    step: float = 0.05,
    seeds: tuple[int, ...] = (0, 1, 2),
    importance_name: str = "importance",
    batch_size: int | None = None,
    progress: bool = False,
) -> PruningCurve:
    """Remove heads from least to most ``importance`` (any form ``head_scores`` reads) in ``step``
    fractions, and in random orders."""
    started = time.perf_counter()
    importance = head_scores(importance)
    if not 0 < step <= 1:
        raise HeadscopeError(f"step {step} must be in (0, 1]")
    heads = all_heads(setup.model)
    missing = [h for h in heads if h not in importance]
    if missing:
        raise HeadscopeError(f"importance lacks head L{missing[0][0]}H{missing[0][1]}")
    fractions = sorted({min(1.0, round(i * step, 10)) for i in range(int(np.ceil(1 / step)) + 1)})
    counts = [int(round(f * len(heads))) for f in fractions]
    orders = {"by importance": ranking(importance)[::-1]}
    for seed in seeds:
        shuffled = list(heads)
        random.Random(seed).shuffle(shuffled)
        orders[f"random (seed {seed})"] = shuffled
    head_sets = [order[:c] for order in orders.values() for c in counts]
    _, ablated, _, ok = ablate(setup, head_sets, batch_size=batch_size, progress=progress, desc="pruning curve")
    values = ablated.mean(1).reshape(len(orders), len(counts))
    accuracy = ok.mean(1).reshape(len(orders), len(counts))
    frame = pd.DataFrame([{"order": name, "fraction": f, "n_removed": c, "value": values[i, j],
                           "accuracy": accuracy[i, j]}
                          for i, name in enumerate(orders) for j, (f, c) in enumerate(zip(fractions, counts))])
    kept = setup.sign * values[0]  # higher = behaviour intact
    drops = kept[:-1] - kept[1:]
    knee = int(np.argmax(drops)) if len(drops) else 0
    meta = {"model": setup.model.spec, **setup.describe(), "importance": importance_name, "recomputed": False,
            "step": step, "seeds": list(seeds), "knee_fraction": fractions[knee], "knee_removed": counts[knee],
            "seconds": round(time.perf_counter() - started, 3)}
    return PruningCurve(frame, meta)


class MaskingCurve(Result):
    """Metric and accuracy with the top-k heads masked together vs k random heads outside the top k."""

    kind = "masking-curve"
    table = "masking"

    def plot(self):
        import plotly.graph_objects as go

        summary = self.frame.groupby(["control", "k"], as_index=False)[["value", "accuracy"]].mean()
        fig = go.Figure()
        for control, part in summary.groupby("control"):
            fig.add_trace(go.Scatter(x=part["k"], y=part["value"], name=f"{control} k heads", mode="lines+markers"))
        fig.update_layout(title="masking the top-k heads vs k random heads", xaxis_title="k",
                          yaxis_title=f"mean {self.meta['metric']}", height=400)
        return fig


def top_vs_random(
    setup: Ablation,
    ranked,
    ks: list[int],
    *,
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
    batch_size: int | None = None,
    progress: bool = False,
) -> MaskingCurve:
    """Mask the first k of ``ranked`` (heads, most important first; or head scores in any form
    ``head_scores`` reads, ranked here) vs k random heads not among them."""
    if not (isinstance(ranked, (list, tuple)) and all(isinstance(h, tuple) for h in ranked)):
        ranked = ranking(ranked)
    started = time.perf_counter()
    heads = all_heads(setup.model)
    largest = min(len(ranked), len(heads) // 2)  # k random heads must fit outside the top k
    for k in ks:
        if not isinstance(k, (int, np.integer)) or not 0 <= k <= largest:
            raise HeadscopeError(f"k={k!r} must be an integer between 0 and {largest}")
    labels, head_sets = [], []
    for k in ks:
        top = ranked[:k]
        labels.append(("top", k, -1))
        head_sets.append(top)
        rest = [h for h in heads if h not in set(top)]
        for seed in seeds:
            labels.append(("random", k, seed))
            head_sets.append(random.Random(f"{seed}-{k}").sample(rest, k))
    clean, ablated, clean_ok, ok = ablate(setup, head_sets, batch_size=batch_size, progress=progress, desc="masking")
    frame = pd.DataFrame([{"control": c, "k": k, "seed": s, "value": ablated[i].mean(), "accuracy": ok[i].mean(),
                           "heads": ";".join(f"{l}-{h}" for l, h in head_sets[i])}
                          for i, (c, k, s) in enumerate(labels)])
    meta = {"model": setup.model.spec, **setup.describe(), "clean_value": float(clean.mean()),
            "clean_accuracy": float(clean_ok.mean()), "seeds": list(seeds),
            "seconds": round(time.perf_counter() - started, 3)}
    return MaskingCurve(frame, meta)
