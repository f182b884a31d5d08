"""Activation patching and attribution patching between a clean and a corrupted prompt.

Activation patching (exact): run the corrupted prompt with one clean activation patched in, for
every cell of each kind: the residual stream entering each block (``resid``, layer x position),
attention and MLP outputs (``attn``, ``mlp``, layer x position), each head's output ``hook_z`` at
every position (``heads``, layer x head) or at one position (``heads_by_pos``). The score is the
normalised metric ``(m - m_corrupted) / (m_clean - m_corrupted)``: 0 changes nothing, 1 restores the
clean behaviour. These are the cells TransformerLens's ``patching`` module computes one forward at a
time (its ``get_act_patch_*`` functions are the tests' oracle); here they run as rows of batched
sweeps (``probes.sweep``), skipping the layers below and the positions before each patch.

Attribution patching (Nanda, "Attribution Patching"): the first-order estimate
``(clean - corrupted) . d m / d activation``, evaluated on the corrupted run, from one forward and
one backward, normalised the same way. It is cheap and often ranks heads well, but it is known to be
poor where the metric is far from linear in the activation: the residual stream and early MLPs,
where a patch changes everything downstream. ``rank_correlation`` measures its agreement with the
exact scores on the same inputs.
"""

from __future__ import annotations

import time

import pandas as pd
import torch

from ...probes import HeadscopeError, Model, Result, Tokens, run
from ...probes.engine.sweep import Patch, base_run, sweep
from ...probes.models import hooks

from ..metrics import target_metric
from ..stats import spearman

KINDS = ("resid", "attn", "mlp", "heads", "heads_by_pos")
METHODS = ("activation", "attribution")  # exact patching, or its gradient estimate
HOOKS = {"resid": hooks.resid_pre, "attn": hooks.attn_out, "mlp": hooks.mlp_out, "heads": hooks.z, "heads_by_pos": hooks.z}


class Patching(Result):
    """Normalised patching scores: one row per (kind, layer, position, head); -1 where not applicable."""

    kind = "patching"
    table = "patching"

    def grid(self, kind: str) -> pd.DataFrame:
        part = self.frame[self.frame["kind"] == kind]
        if kind == "heads":
            return part.pivot(index="layer", columns="head", values="score")
        if kind == "heads_by_pos":
            part = part.assign(unit=[f"L{l}H{h}" for l, h in zip(part["layer"], part["head"])])
            return part.pivot(index="unit", columns="position", values="score")
        return part.pivot(index="position", columns="layer", values="score")

    def plot(self):
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        kinds = [k for k in KINDS if k in set(self.frame["kind"])]
        fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=kinds, horizontal_spacing=0.05)
        for col, kind in enumerate(kinds, start=1):
            grid = self.grid(kind)
            fig.add_trace(go.Heatmap(z=grid.values, x=[str(c) for c in grid.columns], y=[str(i) for i in grid.index],
                                     colorscale="RdBu", zmid=0, showscale=col == len(kinds),
                                     hovertemplate="%{y} / %{x}<br>score %{z:.3f}<extra></extra>"), row=1, col=col)
        method = self.meta.get("method", "activation")
        fig.update_layout(title=f"{method} patching, normalised {self.meta['metric']} of {self.meta['target']!r}",
                          height=420)
        return fig


def _check_differs(metric: str, m_clean: float, m_corr: float) -> None:
    if abs(m_clean - m_corr) < 1e-6:
        raise HeadscopeError(f"the clean and corrupted prompts give the same {metric} ({m_clean:.4g}); "
                             "there is nothing for patching to restore")


def _prepare(model: Model, clean: str, corrupted: str, target: str, foil: str | None, metric: str | None,
             align: list[int] | None, kinds: tuple[str, ...]):
    for kind in kinds:
        if kind not in KINDS:
            raise HeadscopeError(f"unknown kind {kind!r}; use any of {', '.join(KINDS)}")
    clean_toks, corr_toks = model.tokenize(clean), model.tokenize(corrupted)
    if align is None:
        if len(clean_toks) != len(corr_toks):
            raise HeadscopeError(f"clean and corrupted prompts have different token lengths ({len(clean_toks)} vs "
                                 f"{len(corr_toks)}); give an alignment (a clean position for each corrupted one)")
        align = list(range(len(corr_toks)))
    if len(align) != len(corr_toks) or any(not 0 <= a < len(clean_toks) for a in align):
        raise HeadscopeError(f"alignment must give a clean position (0..{len(clean_toks) - 1}) for each of the "
                             f"{len(corr_toks)} corrupted positions")
    metric = metric or ("logit_diff" if foil is not None else "logprob")
    if metric not in ("logit_diff", "logprob", "prob"):
        raise HeadscopeError(f"unknown metric {metric!r}; use logit_diff, logprob or prob")
    if metric == "logit_diff" and foil is None:
        raise HeadscopeError("metric 'logit_diff' needs a foil")
    target_id, note = model.first_token(target, "target")
    notes = [note] if note else []
    foil_id = None
    if foil is not None:
        foil_id, note = model.first_token(foil, "foil")
        notes += [note] if note else []
    return clean_toks, corr_toks, align, metric, target_id, foil_id, notes


def _meta(model, clean, corrupted, target, foil, metric, target_id, foil_id, m_clean, m_corr, notes, started, **extra):
    return {"model": model.spec, "clean": clean, "corrupted": corrupted, "target": model.tokenizer.decode([target_id]),
            "target_token_id": target_id, "foil": foil, "foil_token_id": foil_id, "metric": metric,
            "clean_metric": m_clean, "corrupted_metric": m_corr, "notes": notes,
            "seconds": round(time.perf_counter() - started, 3), **extra}


def _clean_run(model: Model, toks: Tokens, names: list[str]):
    batch = model.batch([toks])
    return run(model, batch, record=names, logits_at=batch.last)


def activation_patching(
    model: Model,
    clean: str,
    corrupted: str,
    target: str,
    foil: str | None = None,
    *,
    kinds: tuple[str, ...] = KINDS,
    metric: str | None = None,
    align: list[int] | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> Patching:
    """Exact activation patching of clean activations into the corrupted run (module docstring).

    ``metric`` defaults to ``logit_diff`` (target - foil) when a foil is given, else ``logprob``.
    ``align[p]`` is the clean position patched into corrupted position ``p`` (default: the same).
    """
    started = time.perf_counter()
    clean_toks, corr_toks, align, metric, target_id, foil_id, notes = _prepare(
        model, clean, corrupted, target, foil, metric, align, kinds)
    names = sorted({HOOKS[k](l) for k in kinds for l in range(model.n_layers)})
    clean_run = _clean_run(model, clean_toks, names)
    score = lambda logits: target_metric(logits, metric, target_id, foil_id)  # noqa: E731
    m_clean = float(score(clean_run.logits)[0])
    base = base_run(model, [corr_toks])
    m_corr = float(score(base.logits)[0])
    _check_differs(metric, m_clean, m_corr)
    index = torch.tensor(align)
    source = {h: clean_run.cache[h][:, index.to(clean_run.cache[h].device)] for h in names}
    cells, variants = [], []
    n, L, H = len(corr_toks), model.n_layers, model.n_heads
    for kind in kinds:
        for layer in range(L):
            hook = HOOKS[kind](layer)
            if kind == "heads":
                for h in range(H):
                    cells.append((kind, layer, -1, h))
                    variants.append((Patch(hook, None, h),))
            elif kind == "heads_by_pos":
                for p in range(n):
                    for h in range(H):
                        cells.append((kind, layer, p, h))
                        variants.append((Patch(hook, p, h),))
            else:
                for p in range(n):
                    cells.append((kind, layer, p, -1))
                    variants.append((Patch(hook, p),))
    values = sweep(model, [corr_toks], base, variants, source, score, batch_size=batch_size, progress=progress,
                   desc="activation patching")[:, 0]
    frame = pd.DataFrame(cells, columns=["kind", "layer", "position", "head"])
    frame["token"] = [corr_toks.strings[p] if p >= 0 else "" for p in frame["position"]]
    frame["metric_value"] = values.numpy()
    frame["score"] = (frame["metric_value"] - m_corr) / (m_clean - m_corr)
    return Patching(frame, _meta(model, clean, corrupted, target, foil, metric, target_id, foil_id, m_clean, m_corr,
                                 notes, started, method="activation", kinds=list(kinds), align=align))


def attribution_patching(
    model: Model,
    clean: str,
    corrupted: str,
    target: str,
    foil: str | None = None,
    *,
    kinds: tuple[str, ...] = ("resid", "attn", "mlp", "heads", "heads_by_pos"),
    metric: str | None = None,
    align: list[int] | None = None,
) -> Patching:
    """First-order (gradient) estimate of activation patching, from one forward and one backward."""
    started = time.perf_counter()
    clean_toks, corr_toks, align, metric, target_id, foil_id, notes = _prepare(
        model, clean, corrupted, target, foil, metric, align, kinds)
    names = sorted({HOOKS[k](l) for k in kinds for l in range(model.n_layers)})
    clean_run = _clean_run(model, clean_toks, names)
    m_clean = float(target_metric(clean_run.logits, metric, target_id, foil_id)[0])
    batch = model.batch([corr_toks])
    corr_run = run(model, batch, record=names, logits_at=batch.last, grad=True)
    m = target_metric(corr_run.logits, metric, target_id, foil_id)[0]
    grads = torch.autograd.grad(m, [corr_run.cache[h] for h in names])
    m_corr = float(m.detach())
    _check_differs(metric, m_clean, m_corr)
    index = torch.tensor(align)
    # per hook: (clean - corrupted) . gradient, summed over the feature axis -> [pos] or [pos, head]
    attrib = {}
    for hook, grad in zip(names, grads):
        delta = clean_run.cache[hook][0][index.to(grad.device)] - corr_run.cache[hook][0].detach()
        attrib[hook] = (delta * grad[0]).sum(-1).float().cpu()
    rows = []
    for kind in kinds:
        for layer in range(model.n_layers):
            a = attrib[HOOKS[kind](layer)]
            if kind == "heads":
                rows += [(kind, layer, -1, h, float(v)) for h, v in enumerate(a.sum(0))]
            elif kind == "heads_by_pos":
                rows += [(kind, layer, p, h, float(a[p, h])) for p in range(a.shape[0]) for h in range(a.shape[1])]
            else:
                rows += [(kind, layer, p, -1, float(v)) for p, v in enumerate(a)]
    frame = pd.DataFrame(rows, columns=["kind", "layer", "position", "head", "attribution"])
    frame["token"] = [corr_toks.strings[p] if p >= 0 else "" for p in frame["position"]]
    frame["score"] = frame["attribution"] / (m_clean - m_corr)
    return Patching(frame, _meta(model, clean, corrupted, target, foil, metric, target_id, foil_id, m_clean, m_corr,
                                 notes, started, method="attribution", kinds=list(kinds), align=align))


def rank_correlation(exact: Patching, approx: Patching) -> pd.DataFrame:
    """Spearman rank correlation between two patching results, per kind they share."""
    keys = ["kind", "layer", "position", "head"]
    merged = exact.frame[keys + ["score"]].merge(approx.frame[keys + ["score"]], on=keys, suffixes=("_exact", "_approx"))
    out = []
    for kind, part in merged.groupby("kind", sort=False):
        out.append({"kind": kind, "spearman": spearman(part["score_exact"], part["score_approx"]), "n": len(part)})
    return pd.DataFrame(out)
