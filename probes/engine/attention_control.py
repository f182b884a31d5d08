"""Attention rows and head masks inside the model's own attention call, in linear memory.

The engine can run a model with ``headscope`` attention: an attention implementation registered with
``transformers`` (so every architecture that dispatches through ``ALL_ATTENTION_FUNCTIONS`` uses it),
which computes each layer's output with SDPA and, as an ``AttentionControl`` asks,

- records the attention weights of the last ``rows`` query positions, computed from those queries
  and the layer's keys (the cached ones included) exactly as eager attention computes them: the
  model's scaling, grouped-query key sharing, its mask (causal, sliding window, padding) and logit
  soft-capping. Only ``rows`` x keys weights per head exist at a time, so memory grows linearly with
  the context; ``reduce`` can shrink them further (e.g. to each head's argmax key) layer by layer;
- zeroes chosen heads' queries after rotary embedding (``uniform``): the head then attends uniformly
  to every key it may see, the masking of Wu et al.'s retrieval-head reference;
- zeroes chosen heads' outputs (``silenced``) before the output projection.

Masks are per layer, ``[batch, heads]`` booleans, so each row of a batch can mask different heads
(``head_masks`` builds them from a list of head sets, one per row).

Queries and keys arrive after the model's own norms and rotary embedding, so nothing here depends on
the architecture. A layer whose implementation would soft-cap attention logits computes its output
with a query-chunked eager path (SDPA cannot soft-cap), still in linear memory.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

NAME = "headscope"
_control: contextvars.ContextVar["AttentionControl | None"] = contextvars.ContextVar("headscope_attention",
                                                                                     default=None)
_registered = False


@dataclass
class AttentionControl:
    rows: int = 0
    reduce: Callable[[int, torch.Tensor], torch.Tensor] | None = None
    uniform: dict[int, torch.Tensor] = field(default_factory=dict)
    silenced: dict[int, torch.Tensor] = field(default_factory=dict)
    kept: dict[int, torch.Tensor] = field(default_factory=dict)

    def record(self, layer: int, weights: torch.Tensor) -> None:
        """Keep ``weights`` ``[batch, head, rows, keys]`` (or their reduction) for ``layer``."""
        self.kept[layer] = weights if self.reduce is None else self.reduce(layer, weights)


def head_masks(head_sets: list[list[tuple[int, int]]], n_heads: int) -> dict[int, torch.Tensor]:
    """Per-layer ``[rows, heads]`` masks: row ``i`` masks the (layer, head) pairs of ``head_sets[i]``."""
    masks: dict[int, torch.Tensor] = {}
    for row, heads in enumerate(head_sets):
        for layer, head in heads:
            masks.setdefault(layer, torch.zeros(len(head_sets), n_heads, dtype=torch.bool))[row, head] = True
    return masks


@contextlib.contextmanager
def controlling(control: AttentionControl) -> Iterator[None]:
    register()
    token = _control.set(control)
    try:
        yield
    finally:
        _control.reset(token)


def register() -> None:
    """Make ``headscope`` a known attention implementation (and its masks those of SDPA)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, _attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    _registered = True


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, softcap=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    control = _control.get()
    layer = getattr(module, "layer_idx", None)
    if control is not None and layer in control.uniform:
        query = query.masked_fill(control.uniform[layer].to(query.device)[:, :, None, None], 0.0)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    if softcap is None:
        out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                        **kwargs)
    else:
        out = _chunked_eager(query, key, value, attention_mask, scale, softcap)
    if control is not None and control.rows:
        control.record(layer, rows_of(query[:, :, -control.rows:], key, attention_mask, scale, softcap))
    if control is not None and layer in control.silenced:  # out is [batch, query, head, d_head]
        out = out.masked_fill(control.silenced[layer].to(out.device)[:, None, :, None], 0.0)
    return out, None


def rows_of(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scale: float,
            softcap: float | None) -> torch.Tensor:
    """Softmax weights ``[batch, head, q, keys]`` of the last ``q`` queries (float32), as eager attention
    computes them: scores scaled, soft-capped, masked; GQA keys shared by their query heads."""
    q_len, n_keys = query.shape[2], key.shape[2]
    key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    return torch.softmax(scores + _bias(mask, q_len, n_keys, scores), dim=-1)


def _bias(mask: torch.Tensor | None, q_len: int, n_keys: int, like: torch.Tensor) -> torch.Tensor:
    """The additive mask of the last ``q_len`` query rows: the model's mask, or causal when it has none."""
    if mask is None:  # SDPA's is_causal: query i (counted from the end) sees keys up to its own position
        query_pos = torch.arange(n_keys - q_len, n_keys, device=like.device)[:, None]
        allowed = torch.arange(n_keys, device=like.device)[None, :] <= query_pos
    else:
        rows = mask[..., -q_len:, :]
        if rows.dtype == torch.bool:
            allowed = rows
        else:
            return rows.float()
    zero = torch.zeros((), device=like.device)
    return torch.where(allowed, zero, torch.tensor(float("-inf"), device=like.device))


def _chunked_eager(query, key, value, mask, scale, softcap, chunk: int = 256) -> torch.Tensor:
    """Eager attention with soft-capping, ``chunk`` queries at a time: ``[batch, query, head, d_head]``."""
    value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
    n = query.shape[2]
    parts = []
    for start in range(0, n, chunk):
        end = min(n, start + chunk)
        rows_mask = None if mask is None else mask[..., start:end, :]
        if mask is None:  # causal rows start..end of n queries over the keys
            offset = key.shape[2] - n
            pos = torch.arange(start, end, device=query.device)[:, None] + offset
            rows_mask = torch.arange(key.shape[2], device=query.device)[None, :] <= pos
        weights = rows_of(query[:, :, start:end], key, rows_mask, scale, softcap)
        parts.append(torch.matmul(weights.to(value.dtype), value))
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous()
