"""Batched sweeps of activation patches over a base run: the machinery behind tracing, patching, ablation.

A *base* run (one prompt, ``n_base`` rows: e.g. the noised copies of causal tracing, or one corrupted
prompt) is run once with ``base_run``, keeping every layer's residual stream and every position's
keys and values. Each *variant* is a set of ``Patch``es (set an activation at a position, or at every
position, optionally of one head, to a value taken from a ``source`` activation). ``sweep`` runs all
variants x base rows, one row each, and returns the metric per row.

A variant cannot change layers below its first patched layer nor positions before its first patched
position, so rows are grouped by that position ``t`` and run positions ``t..`` only, starting at
the group's lowest first layer from the base run's residual stream and attending to the base run's
cached keys and values for positions before ``t``. Groups grow (neighbouring start layers, in order)
until their forward holds ``fill`` token rows: below that a forward costs about the same whatever its
size (weights are read once per forward on a CPU; launch overhead dominates on a GPU).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch

from .engine import Edit, RunOutput, auto_batch_size, prefix_cache, run
from .model import Batch, Model, Tokens

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


def base_run(model: Model, tokens: Tokens, n_base: int, hooks=()) -> RunOutput:
    """The base rows (``hooks`` may corrupt them), with every residual stream and key/value cached."""
    batch = model.batch([tokens] * n_base)
    return run(model, batch, hooks=hooks, cache=[f"blocks.{l}.hook_resid_pre" for l in range(model.n_layers)],
               logits_at=batch.last, kv_cache=True)


def default_fill(model: Model) -> int:
    return 8192 if model.device.type == "cuda" else 512


def sweep(
    model: Model,
    tokens: Tokens,
    base: RunOutput,
    n_base: int,
    variants: list[tuple[Patch, ...]],
    source: dict[str, torch.Tensor],
    score: Callable[[torch.Tensor], torch.Tensor],
    *,
    batch_size: int | None = None,
    fill: int | None = None,
    progress: bool = False,
    desc: str = "sweep",
) -> torch.Tensor:
    """``score`` (of last-position logits, one value per row) for every variant x base row:
    a ``[len(variants), n_base]`` tensor. ``source[hook]`` holds the donor activation ``[pos, ...]``."""
    from tqdm.auto import tqdm

    n = len(tokens)
    first_pos = [min(0 if p.position is None else p.position for p in v) for v in variants]
    first_layer = [min(p.layer for p in v) for v in variants]
    order = sorted(range(len(variants)), key=lambda i: (first_pos[i], first_layer[i]))
    max_rows = max(n_base, batch_size or auto_batch_size(model, n))
    fill = fill or default_fill(model)
    groups: list[list[int]] = []
    for i in order:
        if groups:
            group = groups[-1]
            rows = len(group) * n_base
            if first_pos[group[0]] == first_pos[i] and rows + n_base <= max_rows and rows * (n - first_pos[i]) < fill:
                group.append(i)
                continue
        groups.append([i])

    out = torch.empty(len(variants), n_base)
    ids = torch.tensor(tokens.ids, device=model.device)
    base_rows = torch.arange(n_base)
    for group in tqdm(groups, desc=desc, unit="batch", disable=not progress):
        t, start = first_pos[group[0]], min(first_layer[i] for i in group)
        n_rows = len(group) * n_base
        suffix = Batch(ids[t:].repeat(n_rows, 1), torch.full((n_rows,), n - t, device=model.device))
        rows_base = base_rows.repeat(len(group))
        resid = base.cache[f"blocks.{start}.hook_resid_pre"][rows_base.to(model.device), t:]
        past = prefix_cache(model, base.past, rows_base, t) if t else None
        edits = _edits([variants[i] for i in group], n_base, t, source)
        result = run(model, suffix, edits=edits, start_layer=start, resid=resid, past=past, logits_at=suffix.last)
        out[group] = score(result.logits).float().cpu().view(len(group), n_base)
    return out


def _edits(variants: list[tuple[Patch, ...]], n_base: int, t: int, source: dict[str, torch.Tensor]) -> list[Edit]:
    """One Edit per (hook, every-position?, per-head?) kind of patch, over the rows that carry it."""
    buckets: dict[tuple, list[tuple[int, Patch]]] = {}
    for v, patches in enumerate(variants):
        for patch in patches:
            key = (patch.hook, patch.position is None, patch.head is not None)
            buckets.setdefault(key, []).append((v, patch))
    edits = []
    for (hook, every_position, per_head), items in buckets.items():
        src = source[hook]
        k = len(items)
        rows = (torch.tensor([v for v, _ in items])[:, None] * n_base + torch.arange(n_base)).flatten()
        heads = torch.tensor([p.head for _, p in items]) if per_head else None
        if every_position:  # value [k, positions from t, ...]
            value = src[t:].transpose(0, 1)[heads.to(src.device)] if per_head else src[t:].expand(k, *src[t:].shape)
            positions = None
        else:  # one gather for all patches of this kind
            at = torch.tensor([p.position if p.source_position is None else p.source_position for _, p in items])
            value = src[at.to(src.device), heads.to(src.device)] if per_head else src[at.to(src.device)]
            positions = torch.tensor([p.position - t for _, p in items]).repeat_interleave(n_base)
        edits.append(Edit(hook, rows=rows, positions=positions,
                          heads=heads.repeat_interleave(n_base) if per_head else None,
                          value=value.repeat_interleave(n_base, dim=0)))
    return edits
