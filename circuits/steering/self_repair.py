"""The Hydra check: each component's direct and total effect, and the self-repair between them.

McGrath et al., "The Hydra Effect: Emergent Self-repair in Language Model Computations" (2023): when
a layer is ablated, later layers change what they write, so the ablation's total effect understates
what the layer does directly. For every layer's attention output, every MLP output and every head,
on each prompt (the metric read at the last position):

- ``direct_effect``: the component's clean output minus its ablated value, read through the final norm
  with the scale frozen at the clean run's (``circuits.direct_effects``): what the component writes to
  the metric by itself. With a zero ablation these are the components module's direct logit attributions.
- ``total_effect``: metric(clean) - metric(ablated run), the component ablated (zero, mean or resample,
  as head ablation does it: ``circuits.heads.ablation``) and the rest of the network run.
- ``self_repair = direct_effect - total_effect``: how much of the direct effect the rest of the network
  makes up for. It splits exactly into
  - ``compensation`` by each later component (``compensation`` table): the change of that component's
    direct effect in the ablated run (ablated minus clean), McGrath et al.'s per-layer compensation
    (their Eq. 33: after an attention ablation the same layer's MLP is downstream; for a head, the rest of
    its layer's attention output only where a post-attention norm re-normalises it, as Gemma's does);
  - ``norm_repair``: what the final norm's recomputed scale gives back (Rushing & Nanda, "Explorations of
    Self-Repair in Language Models", 2024, find it a sizeable share).
  With nothing after a component but the final norm, its self-repair is its ``norm_repair`` alone.

The metrics are linear in the logits (``logit_diff``, target minus foil, or the target's centred
``logit``, McGrath et al.'s), so that the direct effects and compensations add up; they are read before
any final soft-capping. Effects are signed so that positive means the component supports the behaviour
(McGrath et al. write ablated minus clean). Every component's ablation is a row of the sweep engine's
batched forwards (each starts at the component's layer from the cached residual stream), which record
every later component's output at the last position.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from ...probes import Model, Result
from ...probes.engine.batching import row_chunks
from ...probes.engine.run import Record
from ...probes.engine.sweep import Patch, base_run, sweep
from ...probes.models import hooks
from ...probes.progress import tracked
from ...probes.readouts.decompose import head_outputs

from ..direct_effects import LINEAR, DirectPath
from ..heads.ablation import check_options, prepare, sources
from ..stats import check_interval, interval_meta, mean_interval

KINDS = ("attn", "mlp", "head")
METRICS = LINEAR
EFFECTS = ("direct_effect", "total_effect", "self_repair")


class Hydra(Result):
    """The Hydra check: ``hydra`` per component (means over prompts with intervals), ``compensation`` per
    (component, later component), ``hydra_by_prompt`` per (prompt, component)."""

    kind = "hydra"
    table = "hydra"
    TABLES = ("compensation", "hydra_by_prompt")
    title = "headscope Hydra check"

    def heads(self) -> pd.DataFrame:
        """The head rows, with ``layer`` and ``head`` as integers (the heads map reads them)."""
        rows = self.frame[self.frame["component"] == "head"].astype({"head": int})
        return rows.drop(columns=["component"]).reset_index(drop=True)

    def derived(self) -> dict[str, pd.DataFrame]:
        return {"heads": self.heads()} if (self.frame["component"] == "head").any() else {}

    def plot(self):
        """Total against direct effect per component (McGrath et al.'s Fig. 2): on the diagonal nothing is
        repaired; below it, later components make up for the ablation."""
        import plotly.graph_objects as go

        frame = self.frame
        fig = go.Figure()
        for kind, color in (("head", "#7f7f7f"), ("attn", "#1f77b4"), ("mlp", "#ff7f0e")):
            part = frame[frame["component"] == kind]
            if part.empty:
                continue
            names = [name_of(r) for r in part.itertuples()]
            fig.add_trace(go.Scatter(x=part["direct_effect"], y=part["total_effect"], mode="markers", name=kind,
                                     marker={"color": color, "size": 6 if kind == "head" else 9}, text=names,
                                     hovertemplate="%{text}<br>direct %{x:.3f}<br>total %{y:.3f}<extra></extra>"))
        low = float(np.nanmin(frame[["direct_effect", "total_effect"]].to_numpy(), initial=0.0))
        high = float(np.nanmax(frame[["direct_effect", "total_effect"]].to_numpy(), initial=0.0))
        fig.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", name="no self-repair",
                                 line={"dash": "dot", "color": "#444"}))
        m = self.meta
        fig.update_layout(title=f"Hydra check: {m['ablation']} ablation, {m['metric']}, {m['n_prompts']} prompts",
                          xaxis_title="direct effect", yaxis_title="total effect", height=480)
        return fig

    def compensation_plot(self, component: str, layer: int, head: int | None = None):
        """Which later layers make up for one component's ablation: compensation by layer, attention and MLP."""
        import plotly.graph_objects as go

        comp = self.compensation
        part = comp[(comp["component"] == component) & (comp["layer"] == layer)]
        if head is not None:
            part = part[part["head"] == head]
        fig = go.Figure()
        for kind, color in (("attn", "#1f77b4"), ("mlp", "#ff7f0e")):
            rows = part[part["by_kind"] == kind]
            fig.add_trace(go.Bar(x=rows["by_layer"], y=rows["compensation"], name=f"later {kind}", marker_color=color))
        fig.update_layout(title=f"compensation for {component} L{layer}" + ("" if head is None else f"H{head}"),
                          barmode="relative", xaxis_title="later layer", yaxis_title="change of direct effect")
        return fig

    def report(self) -> list:
        m = self.meta
        top = self.frame.nlargest(15, "self_repair")
        return [f"<h1>Hydra check</h1><p>{m['ablation']} ablation at {m['positions']} positions, metric {m['metric']}, "
                f"{m['n_prompts']} prompts of {m['prompt_set']}; model {m['model']}. Self-repair = direct - total "
                "effect; it splits into the later components' compensation and the final norm's share.</p>",
                self.plot(), "<h2>Most repaired components</h2>",
                top.to_html(index=False, float_format=lambda v: f"{v:.4g}")]


def name_of(row) -> str:
    """``L3.attn``, ``L3.mlp`` or ``L3H2``."""
    return f"L{row.layer}H{int(row.head)}" if row.component == "head" else f"L{row.layer}.{row.component}"


def hydra(
    model: Model,
    prompts,
    *,
    ablation: str = "zero",
    metric: str = "logit_diff",
    positions: str = "all",
    components: tuple[str, ...] = KINDS,
    interval: str = "t",
    level: float = 0.95,
    batch_size: int | None = None,
    progress: bool = True,
) -> Hydra:
    """The Hydra check of every component of ``components`` (module docstring) on a prompt set (records
    ``prompt``, ``target``, and ``foil`` for ``logit_diff``, ``corrupted`` for resample ablation)."""
    from ...probes import HeadscopeError

    started = time.perf_counter()
    check_interval(interval, level)
    if metric not in METRICS:
        raise HeadscopeError(f"unknown metric {metric!r} for the Hydra check; use one of {', '.join(METRICS)} "
                             "(linear in the logits, so that the effects add up)")
    check_options(ablation, metric, positions)
    unknown = [c for c in components if c not in KINDS]
    if unknown or not components:
        raise HeadscopeError(f"unknown component kind {unknown[0] if unknown else ''!r}; use {', '.join(KINDS)}")
    L = model.n_layers
    mean_hooks = [name(l) for l in range(L) for name in (hooks.z, hooks.attn_out, hooks.mlp_out)]
    setup = prepare(model, prompts, mode=ablation, metric=metric, positions=positions, batch_size=batch_size,
                    mean_hooks=mean_hooks)
    variants = _variants(model, components)
    by_length: dict[int, list[int]] = {}
    for i, toks in enumerate(setup.encoded.tokens):
        by_length.setdefault(len(toks), []).append(i)
    parts, compensation = [], [0.0] * len(variants)
    groups = [(n, idx[sl]) for n, idx in by_length.items() for sl in row_chunks(model, len(idx), n, batch_size)]
    for n, idx in tracked(groups, desc="hydra", unit="batch", disable=not progress):
        frame, sums = _group(setup, idx, n, variants, batch_size)
        parts.append(frame)
        compensation = [total + part for total, part in zip(compensation, sums)]
    by_prompt = pd.concat(parts, ignore_index=True)
    frame = _summary(by_prompt, interval, level)
    rows = [(kind, layer, head, k, l, float(c) / len(setup.prompts))
            for (kind, layer, head), sums in zip(variants, compensation)
            for (k, l), c in zip(_later(kind, layer, model.n_layers), sums)]
    compensation = pd.DataFrame(rows, columns=["component", "layer", "head", "by_kind", "by_layer", "compensation"])
    compensation["head"] = compensation["head"].astype("Int64")
    meta = {"model": model.spec, **setup.describe(), "ablation": ablation, "components": list(components),
            "interval": interval_meta(interval, level, len(setup.prompts)),
            "self_repair": "direct_effect - total_effect = sum of compensation + norm_repair",
            "seconds": round(time.perf_counter() - started, 3)}
    return Hydra(frame, meta, {"compensation": compensation, "hydra_by_prompt": by_prompt})


def _variants(model: Model, components) -> list[tuple[str, int, int | None]]:
    """``(kind, layer, head)`` per ablated component, in layer order."""
    out = []
    for layer in range(model.n_layers):
        if "attn" in components:
            out.append(("attn", layer, None))
        if "head" in components:
            out += [("head", layer, h) for h in range(model.n_heads)]
        if "mlp" in components:
            out.append(("mlp", layer, None))
    return out


def _patch(kind: str, layer: int, head: int | None, position: int | None) -> Patch:
    hook = {"attn": hooks.attn_out, "mlp": hooks.mlp_out, "head": hooks.z}[kind](layer)
    return Patch(hook, position, head)


def _later(kind: str, layer: int, L: int) -> list[tuple[str, int]]:
    """The components whose compensation a component's ablation can draw on, as (kind, layer)."""
    own = [("attn", layer)] if kind == "head" else []  # a post-attention norm re-normalises the rest of the layer
    same_mlp = [("mlp", layer)] if kind in ("attn", "head") else []
    return own + same_mlp + [(k, l) for l in range(layer + 1, L) for k in ("attn", "mlp")]


def _group(setup, idx: list[int], n: int, variants, batch_size) -> tuple[pd.DataFrame, list[torch.Tensor]]:
    """The Hydra check of prompts ``idx`` (all of ``n`` tokens): a frame per (prompt, component), and per
    component its compensation by each of its later components (``_later``) summed over these prompts."""
    model, enc, L = setup.model, setup.encoded, setup.model.n_layers
    dev = model.device
    toks = [enc.tokens[i] for i in idx]
    outputs = [name(l) for l in range(L) for name in (hooks.attn_out, hooks.mlp_out)]
    post = [hooks.attn_hook_out(l) for l in range(L) if hasattr(model.bridge.blocks[l], "ln1_post")]
    final = hooks.resid_post(L - 1)
    last = lambda name, act: act[:, -1]  # noqa: E731
    base = base_run(model, toks, record=[Record([*outputs, *(hooks.z(l) for l in range(L)), *post, final], keep=last)])
    clean = base.cache
    path = DirectPath(model, clean[final])
    targets = torch.tensor([enc.target_ids[i] for i in idx], device=dev)
    foils = torch.tensor([enc.foil_ids[i] for i in idx], device=dev) if enc.foil_ids else None
    u = path.metric_vector(setup.metric, targets, foils)  # [B, d]
    g = path.direction(u)
    clean_normed = path.normed(clean[final])

    patches = [_patch(kind, layer, head, None if setup.positions == "all" else n - 1) for kind, layer, head in variants]
    ablated_hooks = sorted({patch.hook for patch in patches})
    source = sources(setup, idx, n, ablated_hooks)
    replaced = {name: source[name][:, -1].to(dev) for name in ablated_hooks}  # the value at the metric's position
    direct = []
    for (kind, layer, head), patch in zip(variants, patches):
        if kind == "head":
            shares, _ = head_outputs(model, layer, clean[hooks.z(layer)], clean.get(hooks.attn_hook_out(layer)))
            after, _ = head_outputs(model, layer, replaced[patch.hook], clean.get(hooks.attn_hook_out(layer)))
            delta = shares[:, head] - after[:, head]
        else:
            delta = clean[patch.hook].float() - replaced[patch.hook].float()
        direct.append((delta.float() * g).sum(-1))
    direct = torch.stack(direct)  # [V, B]

    def score(_logits, recorded):  # -> [k, B, 2 + 2L]: total, frozen total, every output's change of direct effect
        r = recorded[final].float()
        total = ((clean_normed - path.normed(r)) * u).sum(-1)
        frozen = ((clean[final].float() - r) * g).sum(-1)
        changes = [((recorded[name].float() - clean[name].float()) * g).sum(-1) if name in recorded
                   else torch.zeros_like(total) for name in outputs]
        return torch.stack([total, frozen, *changes], -1)

    out = sweep(model, toks, base, [(patch,) for patch in patches], source, score, batch_size=batch_size,
                record=[*outputs, final])  # [V, B, 2 + 2L]
    direct = direct.cpu()
    total, frozen, changes = out[..., 0], out[..., 1], out[..., 2:]
    position = {(k, l): i for i, (l, k) in enumerate((l, k) for l in range(L) for k in ("attn", "mlp"))}
    rows, sums = [], []
    for v, (kind, layer, head) in enumerate(variants):
        comp = changes[v][:, [position[k] for k in _later(kind, layer, L)]]  # [B, later]
        if kind == "head":  # the own layer's attention output changed by the head itself: not compensation
            comp[:, 0] += direct[v]
        sums.append(comp.sum(0))
        rows += [(prompt, kind, layer, head, float(direct[v, b]), float(total[v, b]), float(frozen[v, b] - total[v, b]))
                 for b, prompt in enumerate(idx)]
    frame = pd.DataFrame(rows, columns=["prompt", "component", "layer", "head", "direct_effect", "total_effect",
                                        "norm_repair"])
    frame["head"] = frame["head"].astype("Int64")
    frame["self_repair"] = frame["direct_effect"] - frame["total_effect"]
    return frame, sums


def _summary(by_prompt: pd.DataFrame, interval: str, level: float) -> pd.DataFrame:
    """Per component: the mean over prompts of each effect, with its interval."""
    rows = []
    for (kind, layer, head), part in by_prompt.groupby(["component", "layer", "head"], dropna=False, sort=False):
        row = {"component": kind, "layer": layer, "head": head}
        for name in EFFECTS:
            mean, low, high = mean_interval(part[name].to_numpy(), method=interval, level=level)
            row.update({name: float(mean), f"{name}_low": float(low), f"{name}_high": float(high)})
        row["norm_repair"] = float(part["norm_repair"].mean())
        row["n_prompts"] = len(part)
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame["head"] = frame["head"].astype("Int64")
    return frame
