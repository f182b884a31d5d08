"""Batched sweeps of activation patches over a base run: the machinery behind tracing, patching, ablation.

A *base* run (``n_base`` prompts of one token length: e.g. the noised copies of causal tracing, one
corrupted prompt, or the prompts of an ablation sweep) is run once with ``base_run``, keeping every
layer's residual stream and every position's keys and values. Each *variant* is a set of ``Patch``es
(set an activation at a position, or at every position, optionally of one head, to a value taken from
a ``source`` activation of the same base row). ``sweep`` runs all variants x base rows, one row each,
and returns the metric per row.

A variant cannot change layers below its first patched layer nor positions before its first patched
position. Variants are ordered by that position and layer and cut into groups; a group runs
positions ``t..`` only (``t`` its lowest first position), starting at its lowest first layer from the
base run's residual stream and attending to the base run's cached keys and values for positions
before ``t``. Groups grow until their forward holds ``fill`` token rows: below that a forward costs
about the same whatever its size. On a GPU, where a forward's fixed cost (kernel launches, Python)
dominates, a group also takes variants of later positions (``merge_positions``): computing a few
positions they do not need is cheaper than another forward. On a CPU compute dominates, and groups
keep to one first position. Patches of hooks that only eager attention fires (on some architectures
``hook_z``) run every position: the bridge's eager attention cannot resume from cached keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..models import hooks
from ..errors import HeadscopeError
from .attention_mode import choose_attention
from .interventions import Intervention
from .batching import Halving, auto_batch_size
from .run import Record, RunOutput, prefix_cache, run
from ..models.model import Batch, Model, Tokens
from ..progress import tracked

_LAYER = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class Patch:
    """Set ``hook`` at ``position`` (every position when None), of ``head`` for per-head hooks, to the
    source activation at ``source_position`` (default: the same position)."""

    hook: str
    position: int | None
    head: int | None = None
    source_position: int | None = None

    @property
    def layer(self) -> int:
        match = _LAYER.match(self.hook)
        return int(match.group(1)) if match else 0


def base_run(model: Model, prompts: Sequence[Tokens], interventions: Sequence[Intervention] = (),
             record: Sequence[str | Record] = ()) -> RunOutput:
    """The base rows (``interventions`` may corrupt them), with every residual stream and key/value cached,
    and whatever else ``record`` asks for."""
    if len({len(p) for p in prompts}) != 1:
        raise HeadscopeError("the base prompts of a sweep must have one token length")
    batch = model.batch(list(prompts))
    return run(model, batch, interventions, [*(hooks.resid_pre(l) for l in range(model.n_layers)), *record],
               logits_at=batch.last, kv_cache=True)


def default_fill(model: Model) -> int:
    return 8192 if model.device.type == "cuda" else 512


def sweep(
    model: Model,
    prompts: Sequence[Tokens],
    base: RunOutput,
    variants: list[tuple[Patch, ...]],
    source: dict[str, torch.Tensor],
    score: Callable[[torch.Tensor], torch.Tensor],
    *,
    all_positions: bool = False,
    batch_size: int | None = None,
    fill: int | None = None,
    merge_positions: bool | None = None,
    progress: bool = False,
    desc: str = "sweep",
    record: Sequence[str] = (),
) -> torch.Tensor:
    """``score`` for every variant x base row: a ``[len(variants), n_base, ...]`` tensor.

    ``source[hook]`` holds the donor activation of each base row, ``[n_base, pos, ...]`` (expand a
    shared one). ``score`` maps logits ``[k, n_base, vocab]`` of the last position (with
    ``all_positions``, ``[k, n_base, pos - t, vocab]`` of positions ``t..``) to ``[k, n_base, ...]``.
    With ``record`` (hook names), ``score(logits, recorded)`` also gets those hooks' activations at the
    last position, ``{hook: [k, n_base, ...]}``; a hook of a layer below where a group started did not
    run and is absent (its value is the base run's, unchanged by every variant of the group).
    """
    n_base, n = len(prompts), len(prompts[0])
    first_pos = [min(0 if p.position is None else p.position for p in v) for v in variants]
    if choose_attention(model, {p.hook for v in variants for p in v}) == "eager":
        first_pos = [0] * len(variants)  # eager attention cannot resume from cached keys and values
    first_layer = [min(p.layer for p in v) for v in variants]
    order = sorted(range(len(variants)), key=lambda i: (first_pos[i], first_layer[i]))
    max_rows = max(n_base, batch_size or auto_batch_size(model, n))
    fill = fill or default_fill(model)
    merge_positions = model.device.type == "cuda" if merge_positions is None else merge_positions
    groups: list[list[int]] = []
    for i in order:
        if groups:
            group = groups[-1]
            rows = len(group) * n_base
            if ((merge_positions or first_pos[group[0]] == first_pos[i]) and rows + n_base <= max_rows
                    and rows * (n - first_pos[group[0]]) < fill):
                group.append(i)
                continue
        groups.append([i])

    out = None
    ids = torch.tensor([p.ids for p in prompts], device=model.device)
    base_rows = torch.arange(n_base)

    def forward(group: list[int]) -> None:
        nonlocal out
        t, start = first_pos[group[0]], min(first_layer[i] for i in group)
        k = len(group)
        rows_base = base_rows.repeat(k)
        suffix = Batch(ids[rows_base.to(model.device), t:], torch.full((k * n_base,), n - t, device=model.device))
        cached = base.cache[hooks.resid_pre(start)]  # on its layer's device (a device map spreads them)
        resid = cached[rows_base.to(cached.device), t:]
        past = prefix_cache(model, base.past, rows_base, t) if t else None
        patches = _interventions([variants[i] for i in group], n_base, t, source)
        result = run(model, suffix, patches, _last_positions(model, record, start), start_layer=start, resid=resid,
                     past=past, logits_at=None if all_positions else suffix.last)
        logits = result.logits.unflatten(0, (k, n_base))
        scored = (score(logits, {name: act.unflatten(0, (k, n_base)) for name, act in result.cache.items()})
                  if record else score(logits)).float().cpu()
        if out is None:
            out = torch.empty(len(variants), *scored.shape[1:])
        out[group] = scored

    halving = Halving("variants")
    for group in tracked(groups, desc=desc, unit="batch", disable=not progress):
        halving(group, forward)  # each half starts at its own first position and layer
    return out


def _last_positions(model: Model, record: Sequence[str], start: int) -> Record | None:
    """A record of ``record``'s hooks at the last position, those of blocks from ``start`` on (the
    blocks below a group's start are skipped and fire nothing)."""
    names = [name for name in record if not (match := _LAYER.match(name)) or int(match.group(1)) >= start]
    return Record(names, keep=lambda name, act: act[:, -1]) if names else None


def _interventions(variants: list[tuple[Patch, ...]], n_base: int, t: int,
                   source: dict[str, torch.Tensor]) -> list[Intervention]:
    """One ``Intervention.set`` per (hook, every-position?, per-head?) kind of patch, over the rows that carry it."""
    buckets: dict[tuple, list[tuple[int, Patch]]] = {}
    for v, patches in enumerate(variants):
        for patch in patches:
            key = (patch.hook, patch.position is None, patch.head is not None)
            buckets.setdefault(key, []).append((v, patch))
    out = []
    for (hook, every_position, per_head), items in buckets.items():
        src = source[hook]  # [n_base, pos, ...]
        k = len(items)
        rows = (torch.tensor([v for v, _ in items])[:, None] * n_base + torch.arange(n_base)).flatten()
        heads = torch.tensor([p.head for _, p in items]).to(src.device) if per_head else None
        if every_position:  # value [k, n_base, positions from t, ...]
            after = src[:, t:]
            value = after.transpose(1, 2)[:, heads].transpose(0, 1) if per_head else after.expand(k, *after.shape)
            positions = None
        else:  # one gather for all patches of this kind: [k, n_base, ...]
            at = torch.tensor([p.position if p.source_position is None else p.source_position for _, p in items])
            at = at.to(src.device)
            value = (src[:, at, heads] if per_head else src[:, at]).transpose(0, 1)
            positions = torch.tensor([p.position - t for _, p in items]).repeat_interleave(n_base)
        out.append(Intervention.set(hook, value.flatten(0, 1), rows=rows, positions=positions,
                                    heads=heads.cpu().repeat_interleave(n_base) if per_head else None))
    return out
