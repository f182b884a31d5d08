"""The graph that circuit discovery scores (issue 18): every component that writes to the residual
stream, every input that reads from it, and an edge from each writer to each later reader.

Writers (upstream nodes): ``input`` (the embeddings), ``L{l}H{h}`` (attention head h's output, its
slice of ``hook_z`` through ``W_O``) and ``MLP{l}``. Readers (downstream inputs): each query head's
``L{l}H{h}.q``; the keys and values, which belong to the key-value head and not to one query head:
``L{l}H{g}.k`` / ``.v`` for key-value head g (under grouped-query attention it serves query heads
``g * G`` to ``g * G + G - 1``, ``G = n_heads / n_kv_heads``); ``MLP{l}``; and ``logits``. A reader in
layer l hears the input and every writer of the layers below; an MLP also hears its own layer's heads
(the attention block runs first), unless the block runs attention and MLP in parallel.

As in hannamw/EAP-IG (``Graph.from_model``), the edges are counted per reader:

    E = sum over layers l of (H + 2K) * (1 + l (H + 1)) + (1 + l (H + 1) + H) + (1 + L (H + 1)),

with H query heads, K key-value heads and L layers (minus L * H with parallel blocks). The reference
requires K = H (it ungroups grouped-query attention: one k and v input per query head); here a
shared key or value input is one reader, as the model computes it. SmolLM2-135M (30 layers, 9 heads,
3 key-value heads) has 70,651 edges; ungrouped it would have 123,211.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from ...probes import HeadscopeError

INPUT, LOGITS = "input", "logits"
PARTS = ("q", "k", "v")


@dataclass(frozen=True)
class EdgeGraph:
    """The writers, readers and edges of a model of ``n_layers`` x ``n_heads`` heads (module docstring)."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    parallel: bool = False

    def __post_init__(self):
        if min(self.n_layers, self.n_heads, self.n_kv_heads) < 1 or self.n_heads % self.n_kv_heads:
            raise HeadscopeError(f"a graph needs n_layers, n_heads, n_kv_heads >= 1 with n_kv_heads dividing n_heads, "
                             f"not {self.n_layers}, {self.n_heads}, {self.n_kv_heads}")

    @classmethod
    def of(cls, model) -> "EdgeGraph":
        """The graph of a loaded ``Model``; refused for architectures that normalise each attention
        output before the residual stream (Gemma's ``ln1_post``: a head's output there is not its own)
        and for parallel blocks (the graph counts them, the analyses do not read them yet)."""
        if any(getattr(block, "ln1_post", None) is not None for block in model.bridge.blocks):
            raise HeadscopeError(f"{model.spec} normalises each attention output before the residual stream: its "
                                 "heads do not write to the stream on their own, so edges from them are not defined")
        config = model.hf_model.config
        if getattr(config, "parallel_attn", False) or getattr(config, "use_parallel_residual", False):
            raise HeadscopeError(f"{model.spec} runs attention and MLP in parallel: the edge analyses read an MLP's "
                                 "input after the attention block and do not cover it yet")
        return cls(model.n_layers, model.n_heads, model.n_kv_heads)

    # -- nodes --------------------------------------------------------------------------------

    def writers(self) -> list[tuple[str, int]]:
        """``(name, layer)`` of every upstream node in forward order; the input is layer -1."""
        out = [(INPUT, -1)]
        for layer in range(self.n_layers):
            out += [(f"L{layer}H{h}", layer) for h in range(self.n_heads)] + [(f"MLP{layer}", layer)]
        return out

    def readers(self) -> list[tuple[str, int]]:
        """``(name, layer)`` of every downstream input in forward order; the logits are layer L."""
        out = []
        for layer in range(self.n_layers):
            out += [(f"L{layer}H{h}.q", layer) for h in range(self.n_heads)]
            out += [(f"L{layer}H{g}.{part}", layer) for part in ("k", "v") for g in range(self.n_kv_heads)]
            out.append((f"MLP{layer}", layer))
        return out + [(LOGITS, self.n_layers)]

    def hears(self, reader: str, layer: int) -> int:
        """How many writers come before ``reader`` of ``layer`` (they are the first ones of ``writers()``)."""
        below = 1 + layer * (self.n_heads + 1)
        if reader.startswith("MLP") and not self.parallel:
            return below + self.n_heads
        return below

    # -- edges --------------------------------------------------------------------------------

    @property
    def n_edges(self) -> int:
        return sum(self.hears(name, layer) for name, layer in self.readers())

    def edges(self) -> pd.DataFrame:
        """One row per edge: ``upstream``, ``downstream``, ``upstream_layer``, ``downstream_layer``,
        readers in forward order and, for each, its writers in forward order (a new frame each call)."""
        return _edges(self).copy()

    def describe(self) -> str:
        kv = ("" if self.n_kv_heads == self.n_heads
              else f"; keys and values are read once per key-value head ({self.n_kv_heads} per layer, "
                   f"each shared by {self.n_heads // self.n_kv_heads} query heads)")
        return (f"{self.n_edges:,} edges from {len(self.writers())} writers to {len(self.readers())} readers "
                f"({self.n_layers} layers x {self.n_heads} heads{kv})")


@lru_cache(maxsize=8)
def _edges(graph: EdgeGraph) -> pd.DataFrame:
    """``EdgeGraph.edges``, made once per graph shape (the default model's 70,651 rows took 0.1 s)."""
    writers, readers = graph.writers(), graph.readers()
    heard = np.array([graph.hears(name, layer) for name, layer in readers])
    up = np.concatenate([np.arange(n) for n in heard])
    names, layers = np.array([w for w, _ in writers], dtype=object), np.array([l for _, l in writers])
    return pd.DataFrame({"upstream": names[up], "downstream": np.repeat(np.array([r for r, _ in readers], dtype=object),
                                                                        heard),
                         "upstream_layer": layers[up], "downstream_layer": np.repeat([l for _, l in readers], heard)})
