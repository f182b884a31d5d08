"""Edge attribution patching for every edge of the ``EdgeGraph`` at once: EAP (Syed et al. 2023) and
EAP-IG (Hanna et al. 2024, "Have Faith in Faithfulness"; hannamw/EAP-IG ``get_scores_eap`` and
``get_scores_eap_ig``).

Patching reader d's input with writer u's corrupted output changes the metric by about
``Δ_u · ∂M/∂in_d``: ``Δ_u`` is u's output on the corrupted prompt minus its output on the clean one,
the product is summed over positions and the residual width, and the gradient is the clean run's
(EAP) or the mean over ``steps`` runs whose first-block input moves from the corrupted prompt's to
the clean one's, at the reference's points ``α = k / steps``, ``k = 0 .. steps - 1`` (EAP-IG).
``effect = -score`` estimates ``metric(clean) - metric(edge patched)``: positive when the edge
carries the clean behaviour. Each prompt's effect is kept; the frame has the mean over prompts
with its interval (``circuits.stats``).

A reader's gradient is the gradient of the stream it reads, by its own path: a query head's at
``hook_q``, taken back through its ``W_Q`` slice and the ``ln1`` norm at the block's input (keys and
values: per key-value head, through ``W_K`` / ``W_V``); an MLP's at ``mlp.hook_in`` through ``ln2``;
the logits' at the last block's output. A batch's scores are one product of a ``[writers, tokens x
d_model]`` and a ``[readers, tokens x d_model]`` matrix; no ``[positions, edges, d_model]`` tensor forms.

Deviations from the reference: the input node is the first block's input (token plus position
embeddings) rather than ``hook_embed``; their corrupted-minus-clean differences are the same. The
reference averages the metric over the batch; here every prompt's score is kept for the interval.
Architectures that normalise the attention output (Gemma's post-attention norm) are refused: a
head's output into the stream is not its own there.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from ...probes import HeadscopeError, Intervention, Model, Result, run
from ...probes.engine.batching import row_chunks
from ...probes.models import hooks
from ...probes.progress import tracked
from ...probes.models.placement import materialized
from ...probes.readouts.decompose import norm_of
from ..metrics import answers, target_metric
from ..prompt_sets import as_prompt_set
from ..stats import check_interval, interval_meta, mean_interval
from .corruption import Corruption, check_corruption
from .graph import EdgeGraph
from .prompts import check_metric, edge_prompts
from .writers import stack_writers, writer_hooks, writer_outputs

METHODS = ("eap", "eap-ig")


class EdgeScores(Result):
    """One row per edge of the graph: ``upstream``, ``downstream``, their layers, ``effect`` (mean over
    prompts of ``metric(clean) - metric(edge patched)``, estimated) with ``ci_low`` / ``ci_high``."""

    kind = "edge-scores"
    table = "edges"

    def top(self, n: int) -> "EdgeScores":
        """The ``n`` edges of largest |effect|."""
        order = self.frame["effect"].abs().sort_values(ascending=False).index[:n]
        return EdgeScores(self.frame.loc[order].reset_index(drop=True), dict(self.meta))

    def plot(self, n: int = 30):
        """The ``n`` edges of largest |effect|, with their intervals."""
        import plotly.graph_objects as go

        top = self.top(n).frame.iloc[::-1]
        labels = top["upstream"] + " -> " + top["downstream"]
        fig = go.Figure(go.Bar(x=top["effect"], y=labels, orientation="h",
                               error_x={"type": "data", "symmetric": False, "array": top["ci_high"] - top["effect"],
                                        "arrayminus": top["effect"] - top["ci_low"]}))
        fig.update_layout(title=f"{self.meta['method'].upper()} edge effects ({self.meta['metric']}), "
                                f"top {len(top)} of {len(self.frame):,}", xaxis_title="effect",
                          height=max(400, 18 * len(top) + 120))
        return fig


def edge_attribution(
    model: Model,
    prompts,
    *,
    method: str = "eap",
    metric: str = "logit_diff",
    steps: int = 5,
    interval: str = "t",
    level: float = 0.95,
    corruption: str = "prompt",
    batch_size: int | None = None,
    progress: bool = True,
) -> EdgeScores:
    """Every edge's estimated effect on ``metric`` over ``prompts`` (records with ``prompt``,
    ``target``, ``foil`` for ``logit_diff``, and ``corrupted`` of the same token length unless
    ``corruption`` is ``"mean"``, the writers' mean outputs: ``corruption``)."""
    started = time.perf_counter()
    if method not in METHODS:
        raise HeadscopeError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if method == "eap-ig" and (not isinstance(steps, int) or steps < 1):
        raise HeadscopeError(f"steps must be a whole number of at least 1, not {steps!r}")
    check_interval(interval, level)
    check_metric(metric, method)
    check_corruption(corruption)
    graph = EdgeGraph.of(model)
    prompts = as_prompt_set(prompts)
    encoded = edge_prompts(model, prompts, metric, corruption, batch_size)
    source = Corruption(model, encoded, corruption, batch_size)
    weights = ReaderWeights(model)
    points = [k / steps for k in range(steps)] if method == "eap-ig" else [None]
    width = max(len(t) for t in encoded.tokens)
    per_prompt = []
    for sl in tracked(row_chunks(model, len(prompts), width, batch_size, per_row=2), f"{method} edge scores",
                      disable=not progress):
        clean = model.batch(encoded.tokens[sl])
        ids = answers(encoded, range(sl.start, sl.stop), metric, model.vocab_size, model.device)
        corrupted_out = source.outputs(range(sl.start, sl.stop), clean)
        if method == "eap":  # the clean run's gradients and its writers' outputs, from one forward
            grads, clean_out = reader_gradients(model, clean, weights, ids, metric, writers=True)
        else:
            clean_out = writer_outputs(model, clean)
            grads = sum(reader_gradients(model, clean, weights, ids, metric,
                                         start=corrupted_out[:, 0] + a * (clean_out[:, 0] - corrupted_out[:, 0]))[0]
                        for a in points) / len(points)
        delta = clean_out.neg_().add_(corrupted_out)  # [b, writers, p, d], in the clean outputs' own buffer
        # per prompt, [writers, tokens x d] @ [tokens x d, readers]
        per_prompt.append(torch.bmm(delta.flatten(2), grads.flatten(2).transpose(1, 2)).cpu())
    scores = torch.cat(per_prompt)  # [prompts, writers, readers]
    frame = graph.edges()
    heard = np.array([graph.hears(name, layer) for name, layer in graph.readers()])
    writer_index = np.concatenate([np.arange(n) for n in heard])
    reader_index = np.repeat(np.arange(len(heard)), heard)
    effects = -scores[:, writer_index, reader_index].double().numpy()  # [prompts, edges]
    mean, low, high = mean_interval(effects, axis=0, method=interval, level=level)
    frame["effect"], frame["ci_low"], frame["ci_high"] = mean, low, high
    meta = {"model": model.spec, "method": method, "metric": metric, "corruption": corruption,
            "steps": steps if method == "eap-ig" else None,
            "n_prompts": len(prompts), "n_edges": graph.n_edges, "graph": graph.describe(), "prompts": prompts.name,
            "interval": interval_meta(interval, level, len(prompts)), "notes": encoded.notes,
            "seconds": round(time.perf_counter() - started, 2)}
    return EdgeScores(frame, meta)


def exact_edge_effects(model: Model, prompts, edges: pd.DataFrame, *, metric: str = "logit_diff",
                       interval: str = "t", level: float = 0.95, corruption: str = "prompt",
                       batch_size: int | None = None, progress: bool = True) -> pd.DataFrame:
    """``metric(clean) - metric(edge patched)`` of each edge in ``edges`` (a frame with ``upstream`` and
    ``downstream``), measured: the reader's input becomes the clean input minus the writer's clean
    output plus its corrupted one, everything else clean (path patching of one edge). Each (prompt,
    edge) is a row of batched forwards; the reader's new input is computed from the clean run (nothing
    before the reader changes), so every row is one ``set`` of a hook (``add`` for the logits).
    Returns ``edges`` with ``exact_effect``, ``exact_low``, ``exact_high`` (mean and interval over prompts)."""
    check_metric(metric)
    check_interval(interval, level)
    check_corruption(corruption)
    graph = EdgeGraph.of(model)
    writers = {name: i for i, (name, _) in enumerate(graph.writers())}
    readers = dict(graph.readers())
    edges = edges[["upstream", "downstream"]].reset_index(drop=True)
    for up, down in zip(edges["upstream"], edges["downstream"]):
        if up not in writers or down not in readers or writers[up] >= graph.hears(down, readers[down]):
            raise HeadscopeError(f"{up} -> {down} is not an edge of {model.spec}'s graph ({graph.describe()})")
    prompts = as_prompt_set(prompts)
    encoded = edge_prompts(model, prompts, metric, corruption, batch_size)
    source = Corruption(model, encoded, corruption, batch_size)
    L = model.n_layers
    weights = ReaderWeights(model)
    names = [h for l in range(L) for h in (hooks.resid_pre(l), hooks.resid_mid(l), hooks.q(l), hooks.k(l), hooks.v(l),
                                           hooks.mlp_in(l))]
    effects = np.zeros((len(prompts), len(edges)))
    for i in tracked(range(len(prompts)), "exact edge patching", unit="prompt", disable=not progress):
        clean = model.batch(encoded.tokens[i:i + 1])
        delta = source.outputs([i], clean) - writer_outputs(model, clean)  # [1, writers, p, d]
        out = run(model, clean, record=names, logits_at=clean.last)
        target, foil = answers(encoded, [i], metric, model.vocab_size, out.logits.device)
        base = float(target_metric(out.logits, metric, target, foil)[0])
        for sl in row_chunks(model, len(edges), len(encoded.tokens[i]), batch_size):
            part = edges.iloc[sl]
            rows = model.batch(encoded.tokens[i:i + 1] * len(part))
            grouped: dict[tuple[str, str], list] = {}  # one intervention per hook, a row per edge
            for r, (up, down) in enumerate(zip(part["upstream"], part["downstream"])):
                hook, op, value, head = _moved_input(model, weights, out.cache, down, delta[0, writers[up]])
                grouped.setdefault((hook, op), []).append((r, value, head))
            patches = [_intervention(hook, op, items) for (hook, op), items in grouped.items()]
            logits = run(model, rows, patches, logits_at=rows.last).logits
            n = len(part)
            patched = target_metric(logits, metric, *(None if a is None else a.expand(n, *a.shape[1:])
                                                      for a in (target, foil)))
            effects[i, sl] = base - patched.double().cpu().numpy()
    mean, low, high = mean_interval(effects, axis=0, method=interval, level=level)
    return edges.assign(exact_effect=mean, exact_low=low, exact_high=high)


def _moved_input(model: Model, weights: "ReaderWeights", clean: dict, downstream: str, delta: torch.Tensor):
    """``(hook, op, value, head)`` that moves ``downstream``'s input by ``delta`` (``[p, d]``) in a row
    that is otherwise the clean run (``clean``: its cache of one prompt)."""
    if downstream == "logits":
        return hooks.resid_post(model.n_layers - 1), "add", delta, None
    if downstream.startswith("MLP"):
        layer = int(downstream[3:])
        norm, x = weights.ln2[layer], clean[hooks.resid_mid(layer)][0]
        return hooks.mlp_in(layer), "set", clean[hooks.mlp_in(layer)][0].float() + norm(x + delta) - norm(x), None
    name, part = downstream.split(".")
    layer, head = (int(v) for v in name[1:].split("H"))
    norm, x = weights.ln1[layer], clean[hooks.resid_pre(layer)][0]
    hook = getattr(hooks, part)(layer)
    moved = (norm(x + delta) - norm(x)) @ weights.w[part][layer, head].to(x.device)  # [p, d_head]
    return hook, "set", clean[hook][0, :, head].float() + moved, head


def _intervention(hook: str, op: str, items: list) -> Intervention:
    rows = torch.tensor([r for r, _, _ in items])
    values = torch.stack([v for _, v, _ in items])
    heads = None if items[0][2] is None else torch.tensor([h for _, _, h in items])
    if op == "add":
        return Intervention.add(hook, values, rows=rows)
    return Intervention.set(hook, values, rows=rows, heads=heads)


class ReaderWeights:
    """Each layer's query, key and value weights (``[heads, d_model, d_head]``; ``qkv``: the three
    stacked, ``[H + 2K, d_model, d_head]``) and input norms."""

    def __init__(self, model: Model):
        bridge = model.bridge
        with materialized(model.hf_model):  # copies: an offloaded model holds placeholders outside a forward
            self.w = {part: getattr(bridge, f"W_{part.upper()}").detach().float().clone() for part in ("q", "k", "v")}
        self.qkv = [torch.cat([self.w[part][l] for part in ("q", "k", "v")]) for l in range(bridge.cfg.n_layers)]
        self.ln1 = [norm_of(block.ln1) for block in bridge.blocks]
        self.ln2 = [norm_of(block.ln2) for block in bridge.blocks]


def reader_gradients(model: Model, batch, weights: ReaderWeights, ids, metric: str, start: torch.Tensor | None = None,
                     writers: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``∂ metric / ∂ (each reader's input)``, ``[batch, readers, pos, d_model]`` in the ``EdgeGraph``
    order, the metric summed over the batch's rows at their last positions; ``start`` replaces the
    first block's input (EAP-IG's interpolated points). With ``writers``, also this run's
    ``writer_outputs``."""
    L = model.n_layers
    qkv = [getattr(hooks, part)(l) for l in range(L) for part in ("q", "k", "v")]
    streams = [hooks.resid_pre(l) for l in range(L)] + [hooks.resid_mid(l) for l in range(L)]
    mlp_in = [hooks.mlp_in(l) for l in range(L)]
    final = hooks.resid_post(L - 1)
    interventions = []
    if start is not None:
        start = start.detach().requires_grad_(True)
        interventions = [Intervention.set(hooks.resid_pre(0), start)]
    kept = writer_hooks(model) if writers else []
    out = run(model, batch, interventions, record=list(dict.fromkeys(qkv + streams + mlp_in + [final] + kept)),
              grad=True, logits_at=batch.last)
    target, foil = (None if i is None else i.to(out.logits.device) for i in ids)
    total = target_metric(out.logits, metric, target, foil).sum()
    wanted = qkv + mlp_in + [final]
    grads = dict(zip(wanted, torch.autograd.grad(total, [out.cache[n] for n in wanted])))
    x = out.cache[hooks.resid_pre(0)]
    per_layer = model.n_heads + 2 * model.n_kv_heads + 1
    result = torch.empty(x.shape[0], L * per_layer + 1, *x.shape[1:], device=x.device, dtype=torch.float32)
    for l in range(L):
        x = out.cache[hooks.resid_pre(l)]
        head_grads = torch.cat([grads[getattr(hooks, part)(l)] for part in ("q", "k", "v")], 2).float()
        cotangent = torch.einsum("bpne,nde->bnpd", head_grads, weights.qkv[l].to(x.device))
        at = l * per_layer  # the layer's q, k, v readers (one norm for all), then its MLP
        _through_norm(weights.ln1[l], x, cotangent, out=result[:, at:at + per_layer - 1])
        _through_norm(weights.ln2[l], out.cache[hooks.resid_mid(l)], grads[mlp_in[l]].float()[:, None],
                      out=result[:, at + per_layer - 1:at + per_layer])
    result[:, -1] = grads[final]
    return result, stack_writers(model, out.cache) if writers else None


def _through_norm(norm, x: torch.Tensor, cotangent: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The gradient at the norm's input ``x`` ``[b, p, d]`` of each of the cotangents at its output
    ``[b, n, p, d]`` (one per reader that reads the stream through this norm), written to ``out``
    ``[b, n, p, d]``.

    For ``y = w * c / s + beta`` (``c`` the centred ``x``, ``s`` its root mean square with eps), the
    gradient at ``c`` is ``(w * u - n * mean(w * u * n)) / s`` with ``n = c / s``; LayerNorm then
    centres it. The mean is a product over the width, so only two ``[b, n, p, d]`` tensors are made."""
    c = norm.centered(x.detach())[:, None]  # [b, 1, p, d]
    s = norm.scale(x.detach())[:, None]  # [b, 1, p, 1]
    n, w = c / s, norm.weight.to(x.device)
    mean = torch.einsum("bnpd,bpd->bnp", cotangent, (w * n)[:, 0])[..., None] / x.shape[-1]  # [b, n, p, 1]
    torch.addcmul(mean * (n / s).neg(), cotangent, w / s, out=out)
    return out.sub_(out.mean(-1, keepdim=True)) if norm.center else out
