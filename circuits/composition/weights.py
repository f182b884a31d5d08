"""Per-head weight views: the OV and QK circuits of every head as factors, in float32.

Row-vector convention (TransformerLens's): a head reads ``x @ W_V`` and writes ``z @ W_O``, so its OV
matrix is ``W_V W_O`` (``d_model x d_model``, rank at most ``d_head``) and its QK matrix is
``W_Q W_K^T`` (a query ``x_q`` and key ``x_k`` score ``x_q W_Q W_K^T x_k^T``).

- **Grouped-query attention**: heads of one group share ``W_K`` and ``W_V``; each query head gets
  its group's matrices (copied), with its own ``W_Q`` and ``W_O`` slice, so every view is per query
  head, as TransformerLens's ``_expand_kv_heads`` does.
- **Normalisation** (``fold_norm``, default on): a head reads the normalised stream
  ``w * C(x) / s``; folding puts the layer's input-norm weight ``w`` (and, for LayerNorm, the
  centring ``C``) into ``W_Q``, ``W_K`` and ``W_V``, so the matrices act on the residual stream
  itself. The scale ``s`` is a scalar per token and cancels in composition scores. Off, the raw
  weights are used (TransformerLens's ``all_composition_scores`` on an unfolded model).
- **Not included**: biases (composition is about the linear maps), per-head query/key norms (Gemma
  3, Qwen 3) and post-attention norms, which are not linear maps of the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...probes import Model
from ...probes.models.placement import materialized
from ...probes.readouts.decompose import norm_of


@dataclass
class HeadWeights:
    """``W_Q``, ``W_K``, ``W_V``: ``[L, H, d_model, d_head]`` (K and V per query head); ``W_O``:
    ``[L, H, d_head, d_model]``."""

    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor
    folded: bool

    def ov(self, layer: int, head: int) -> torch.Tensor:
        return self.W_V[layer, head] @ self.W_O[layer, head]

    def qk(self, layer: int, head: int) -> torch.Tensor:
        return self.W_Q[layer, head] @ self.W_K[layer, head].T


def head_weights(model: Model, *, fold_norm: bool = True) -> HeadWeights:
    """The factors of every head (module docstring)."""
    bridge = model.bridge
    group = model.n_heads // model.n_kv_heads

    def per_query_head(w: torch.Tensor) -> torch.Tensor:
        w = w.detach().float()
        return w.repeat_interleave(group, dim=1) if w.shape[1] != model.n_heads else w

    with materialized(model.hf_model):  # copies: an offloaded model holds placeholders outside a forward
        q, k, v = (per_query_head(w).clone() for w in (bridge.W_Q, bridge.W_K, bridge.W_V))
        o = bridge.W_O.detach().float().clone()
    if fold_norm:
        q, k, v = q.clone(), k.clone(), v.clone()
        for layer in range(model.n_layers):
            norm = norm_of(bridge.blocks[layer].ln1)
            weight = norm.weight.to(q.device)[:, None]
            for w in (q, k, v):
                folded = weight * w[layer]
                w[layer] = folded - folded.mean(-2, keepdim=True) if norm.center else folded
    return HeadWeights(q, k, v, o, fold_norm)
