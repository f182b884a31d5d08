"""Composition between heads: whole-matrix scores (Elhage et al.) and low-rank channels (Merullo et al.).

**Scores.** A writer head's OV feeds a later reader through its query (Q), key (K) or value (V)
input: ``score = ||OV_w M_r||_F / (||OV_w||_F ||M_r||_F)`` with ``M_r`` the reader's QK, QK^T or OV,
as TransformerLens's ``all_composition_scores`` (equal to it, tests). Computed without forming any
``d_model x d_model`` matrix: with ``W_V = Q_V R_V`` (QR), ``OV_w = Q_V (R_V W_O)``, and each reader
matrix reduced the same way to a ``d_model x d_head`` factor ``F_r`` with ``||Y M_r|| = ||Y F_r||``,
so all pairs come from one product of ``[writers x d_head, d_model]`` by ``[d_model, readers x d_head]``
per writer layer.

**Baseline.** The same score for matrices of the same shapes drawn at random (i.i.d. Gaussian
``W_Q, W_K, W_V, W_O``; ``n_random`` draws per kind, seeded): ``baseline`` is their mean and
``z = (score - baseline) / std``, so scores read relative to chance for this model's sizes.

**Channels** (Talking Heads). The SVD ``OV_w = sum_i s_i u_i v_i^T`` splits a writer into rank-1
components writing along ``v_i``. Component i's score with a reader is
``c_i = s_i ||v_i^T F_r|| / (||OV_w||_F ||F_r||_F)``: the ``c_i^2`` add up to the whole score squared,
so ``share_i = c_i^2 / score^2`` says how much of the composition component i carries (and
``top1_share`` / ``top2_share`` how concentrated it is). Signs of singular vectors do not matter.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from ...probes import HeadscopeError, Model, Result
from ...probes.readouts.decompose import final_norm, unembed_matrix
from ...probes.progress import tracked

from .graph import CircuitGraph
from .weights import HeadWeights, head_weights

KINDS = ("q", "k", "v")


def check_kinds(kinds) -> list[str]:
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    for kind in kinds:
        if kind not in KINDS:
            raise HeadscopeError(f"unknown composition kind {kind!r}; use q, k and/or v")
    if not kinds:
        raise HeadscopeError("no composition kind given; use q, k and/or v")
    return list(dict.fromkeys(kinds))


def _r(a: torch.Tensor) -> torch.Tensor:
    """``R`` of the reduced QR of ``a`` ``[..., n, k]``: ``||Y a^T|| = ||Y R^T||`` for any ``Y``."""
    return torch.linalg.qr(a).R


def writer_svd(w: HeadWeights) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every head's OV as ``U diag(S) Vh``: ``U`` ``[L, H, d_model, d_head]``, ``S`` ``[L, H, d_head]``,
    ``Vh`` ``[L, H, d_head, d_model]`` (the directions each component writes)."""
    q_v, r_v = torch.linalg.qr(w.W_V)
    u, s, vh = torch.linalg.svd(r_v @ w.W_O, full_matrices=False)
    return q_v @ u, s, vh


def reader_factor(w: HeadWeights, kind: str) -> torch.Tensor:
    """``F`` ``[L, H, d_model, d_head]`` with ``||Y M|| = ||Y F||`` for the reader matrix ``M`` of ``kind``
    (QK for q, QK^T for k, OV for v)."""
    if kind == "q":
        return w.W_Q @ _r(w.W_K).transpose(-1, -2)
    if kind == "k":
        return w.W_K @ _r(w.W_Q).transpose(-1, -2)
    return w.W_V @ _r(w.W_O.transpose(-1, -2)).transpose(-1, -2)


def component_scores(w: HeadWeights, kind: str, writer_layer: int, *, svd=None, factor: torch.Tensor | None = None,
                     readers_from: int | None = None) -> torch.Tensor:
    """``c`` ``[H, d_head, L_r, H]``: each component of each head of ``writer_layer`` against every head
    of the reader layers ``readers_from..L-1`` (default: the layers after the writer's). ``svd`` and
    ``factor`` (``writer_svd``, ``reader_factor``) can be passed when computed already."""
    _, s, vh = writer_svd(w) if svd is None else svd
    f = reader_factor(w, kind) if factor is None else factor
    start = writer_layer + 1 if readers_from is None else readers_from
    f = f[start:]
    n_r, H, d, k = f.shape[0], f.shape[1], f.shape[2], f.shape[3]
    g = (s[writer_layer, ..., None] * vh[writer_layer]).reshape(-1, d)  # [H * k, d]
    prod = (g @ f.permute(2, 0, 1, 3).reshape(d, -1)).reshape(H, k, n_r, H, k)
    c = prod.norm(dim=-1)
    whole_w = s[writer_layer].norm(dim=-1)  # ||OV_w||_F
    whole_r = f.norm(dim=(-2, -1))  # ||M_r||_F
    return c / whole_w[:, None, None, None] / whole_r[None, None]


def pair_components(svd, f: torch.Tensor, writer: tuple[int, int], reader: tuple[int, int]) -> torch.Tensor:
    """``c`` ``[d_head]`` of one (writer, reader) pair, given ``writer_svd`` and the ``reader_factor``."""
    _, s, vh = svd
    g = s[writer][:, None] * vh[writer]  # [k, d]
    fr = f[reader]
    return (g @ fr).norm(dim=-1) / s[writer].norm() / fr.norm()


def random_baseline(model: Model, kind: str, n_random: int = 48, seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation of the score between random matrices of this model's shapes: every
    pair of ``n_random`` random writers and ``n_random`` random readers."""
    gen = torch.Generator().manual_seed(seed * 1009 + KINDS.index(kind))
    d, k = model.d_model, model.d_head

    def draw(*shape):  # layer 0: the writers, layer 1: the readers
        return torch.randn(2, n_random, *shape, generator=gen)

    w = HeadWeights(draw(d, k), draw(d, k), draw(d, k), draw(k, d), folded=False)
    scores = component_scores(w, kind, 0).norm(dim=1)[:, 0]  # [writers, readers]
    return float(scores.mean()), float(scores.std())


class Composition(Result):
    """Every (writer, later reader, kind) pair: ``score``, ``baseline``, ``z``, ``top1_share``,
    ``top2_share``; ``channels`` holds the strongest pairs' leading components."""

    kind = "composition"
    table = "composition"
    TABLES = ("channels", "graph_edges", "graph_nodes")
    title = "headscope composition"

    def with_graph(self, graph) -> "Composition":
        """This result with a ``CircuitGraph`` of it attached: saved as its tables and ``graph.json``."""
        return Composition(self.frame, self.meta, {"channels": self.channels, "graph_edges": graph.frame,
                                                   "graph_nodes": graph.nodes})

    def graph(self) -> CircuitGraph | None:
        """The attached ``CircuitGraph``, or None."""
        if self.graph_edges is None:
            return None
        return CircuitGraph(self.graph_edges, {"model": self.meta.get("model")}, {"nodes": self.graph_nodes})

    def exports(self) -> dict[str, str]:
        graph = self.graph()
        return {} if graph is None else graph.exports()

    def pairs(self, kind: str, top: int = 20, by: str = "z") -> pd.DataFrame:
        return self.frame[self.frame["kind"] == kind].nlargest(top, by)

    def plot(self, kind: str = "q", reader: tuple[int, int] | None = None):
        """Heatmap of writers (rows) x readers (columns) by z-score; with ``reader``, that reader's column."""
        import plotly.graph_objects as go

        part = self.frame[self.frame["kind"] == kind]
        names = lambda layer, head: [f"L{a}H{b}" for a, b in zip(layer, head)]  # noqa: E731
        if reader is not None:
            part = part[(part["reader_layer"] == reader[0]) & (part["reader_head"] == reader[1])]
            return go.Figure(go.Bar(x=names(part["writer_layer"], part["writer_head"]), y=part["z"]),
                             layout=dict(title=f"{kind}-composition into L{reader[0]}H{reader[1]} (z)"))
        grid = part.pivot_table(index=["writer_layer", "writer_head"], columns=["reader_layer", "reader_head"],
                                values="z")
        return go.Figure(go.Heatmap(z=grid.values, x=[f"L{a}H{b}" for a, b in grid.columns],
                                    y=[f"L{a}H{b}" for a, b in grid.index], colorscale="Viridis",
                                    hovertemplate="%{y} -> %{x}: z %{z:.1f}<extra></extra>"),
                         layout=dict(title=f"{kind}-composition, z-score against random matrices",
                                     yaxis=dict(autorange="reversed"), height=700))

    def report(self) -> list:
        parts = [f"<h1>Head composition: {self.meta['model']}</h1>",
                 f"<p>Norm weights folded: {self.meta['fold_norm']}. Random baselines: "
                 + ", ".join(f"{k}: {v[0]:.4f} &plusmn; {v[1]:.4f}" for k, v in self.meta["baselines"].items())
                 + f". {self.meta['seconds']} s.</p>"]
        for kind in self.meta["kinds"]:
            parts += [f"<h2>{kind}-composition: strongest pairs</h2>",
                      self.pairs(kind).to_html(index=False, float_format=lambda v: f"{v:.4f}")]
        if self.channels is not None:
            parts += ["<h2>Channels: leading components of the strongest pairs</h2>",
                      self.channels.to_html(index=False, float_format=lambda v: f"{v:.4f}")]
        return parts


def composition(model: Model, kinds=KINDS, *, top: int = 50, components: int = 4, fold_norm: bool = True,
                n_random: int = 48, top_k_tokens: int = 8, seed: int = 0, progress: bool = True) -> Composition:
    """Scores of every writer / later reader pair for each kind, with baselines, and the channels of
    the ``top`` pairs of each kind by z-score: their ``components`` largest components (module docstring)."""
    started = time.perf_counter()
    kinds = check_kinds(kinds)
    if top < 0 or components < 1:
        raise HeadscopeError(f"top {top} must be >= 0 and components {components} >= 1")
    w = head_weights(model, fold_norm=fold_norm)
    svd = writer_svd(w)
    L, H = model.n_layers, model.n_heads
    frames, channels, baselines = [], [], {}
    steps = [(kind, layer) for kind in kinds for layer in range(L - 1)]
    factors = {}
    for kind, layer in tracked(steps, desc="composition", unit="layer", disable=not progress):
        if kind not in baselines:
            baselines[kind] = random_baseline(model, kind, n_random, seed)
            factors[kind] = reader_factor(w, kind)
        c = component_scores(w, kind, layer, svd=svd, factor=factors[kind])  # [H, k, L_r, H]
        sq = c.pow(2)
        score = sq.sum(1).sqrt()  # [H, L_r, H]
        ranked = sq.sort(dim=1, descending=True).values
        total = sq.sum(1).clamp_min(1e-30)
        n_r = L - layer - 1
        frames.append(pd.DataFrame({
            "writer_layer": layer, "writer_head": np.repeat(np.arange(H), n_r * H),
            "reader_layer": np.tile(np.repeat(np.arange(layer + 1, L), H), H),
            "reader_head": np.tile(np.arange(H), H * n_r), "kind": kind,
            "score": score.flatten().cpu().numpy(),
            "top1_share": (ranked[:, 0] / total).flatten().cpu().numpy(),
            "top2_share": (ranked[:, :2].sum(1) / total).flatten().cpu().numpy()}))
    frame = pd.concat(frames, ignore_index=True)
    frame["baseline"] = frame["kind"].map({k: v[0] for k, v in baselines.items()})
    frame["z"] = (frame["score"] - frame["baseline"]) / frame["kind"].map({k: v[1] for k, v in baselines.items()})
    for kind in kinds:
        for pair in frame[frame["kind"] == kind].nlargest(top, "z").itertuples():
            c = pair_components(svd, factors[kind], (pair.writer_layer, pair.writer_head), (pair.reader_layer, pair.reader_head))
            for i in c.argsort(descending=True)[:components].tolist():
                channels.append({"writer_layer": pair.writer_layer, "writer_head": pair.writer_head, "component": i,
                                 "singular_value": float(svd[1][pair.writer_layer, pair.writer_head, i]),
                                 "reader_layer": pair.reader_layer, "reader_head": pair.reader_head, "kind": kind,
                                 "score": float(c[i]), "share": float(c[i] ** 2 / c.pow(2).sum())})
    channel_frame = pd.DataFrame(channels)
    if len(channel_frame):
        tops = component_tokens(model, svd[2], channel_frame[["writer_layer", "writer_head", "component"]].to_numpy(),
                                top_k_tokens)
        channel_frame["top_tokens"], channel_frame["bottom_tokens"] = tops
    meta = {"model": model.spec, "kinds": kinds, "fold_norm": fold_norm, "n_random": n_random, "seed": seed,
            "baselines": baselines, "top": top, "components": components,
            "heads_are": "query heads (grouped keys and values copied to each head of the group)",
            "seconds": round(time.perf_counter() - started, 2)}
    return Composition(frame, meta, {"channels": channel_frame})


def component_tokens(model: Model, vh: torch.Tensor, which: np.ndarray, k: int) -> tuple[list, list]:
    """Top and bottom tokens of the directions ``vh[layer, head, component]`` read through the final
    norm's weight and the unembedding (the sign of a singular vector is arbitrary: both ends are given)."""
    norm, (w_u, _) = final_norm(model), unembed_matrix(model)
    vectors = torch.stack([vh[l, h, i] for l, h, i in which])
    logits = norm.centered(vectors) * norm.weight @ w_u
    top, bottom = logits.topk(k, -1).indices, (-logits).topk(k, -1).indices
    texts = model.token_texts(torch.cat([top, bottom]).flatten().tolist())
    return ([[texts[int(t)] for t in row] for row in top], [[texts[int(t)] for t in row] for row in bottom])
