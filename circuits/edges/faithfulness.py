"""How faithful a circuit is: run the clean prompt with every edge outside the circuit patched to its
corrupted value (hannamw/EAP-IG ``evaluate_graph``), as rows of batched forwards.

Each reader's input becomes its clean-run input plus, over the writers whose edge to it is not in the
circuit, ``corrupted output - output in this run``: the writer's output in the same forward, which
upstream patches have already moved, so the differences are taken as the forward goes (hooks that
keep each row's running differences). A reader reads its input through its own norm and weights
(``ln1`` and ``W_Q`` / ``W_K`` / ``W_V`` for a head's q, k, v; ``ln2`` for an MLP; the logits the last
block's output), so two readers of one layer can see different inputs, as in the reference's split
q/k/v inputs. With every edge in the circuit nothing moves (the clean run); with none, every reader
hears only corrupted outputs (the corrupted run).

``faithfulness = (metric(circuit) - metric(corrupted)) / (metric(clean) - metric(corrupted))``, the
metrics averaged over prompts. A curve evaluates circuits of several sizes (the MIB benchmark's
fractions of the edge count) beside random circuits of the same sizes, built the same way from random
scores (several seeds); CPR is the area under the curve and CMD the area between it and 1, both by
the trapezoid rule over the edge fraction (MIB, Mueller et al. 2025).
"""

from __future__ import annotations

import numpy as np
import torch

from ...probes import HeadscopeError, Intervention, Model, run
from ...probes.engine.batching import row_chunks
from ...probes.models import hooks
from ...probes.progress import tracked
from ...probes.readouts.decompose import head_outputs
from ..metrics import answers, target_metric
from ..prompt_sets import as_prompt_set
from .attribution import ReaderWeights
from .corruption import Corruption, check_corruption
from .circuit import EdgeIndex, greedy_edges, top_edges
from .graph import EdgeGraph
from .prompts import check_metric, edge_prompts

FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # MIB's circuit sizes
BUILDERS = {"top": top_edges, "greedy": greedy_edges}


def circuit_metrics(model: Model, prompts, masks: np.ndarray, *, metric: str = "logit_diff",
                    corruption: str = "prompt", batch_size: int | None = None, progress: bool = True) -> np.ndarray:
    """The metric of every prompt with only the edges of each circuit kept clean: ``masks`` is
    ``[circuits, edges]`` (``graph.edges()`` order); returns ``[circuits, prompts]``. Each (circuit,
    prompt) is one row of a batched forward; the edges outside a circuit take the ``corruption``'s
    values (the corrupted prompt's, or the writers' mean outputs)."""
    check_metric(metric)
    check_corruption(corruption)
    graph = EdgeGraph.of(model)
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 2 or masks.shape[1] != graph.n_edges:
        raise HeadscopeError(f"circuit masks must be [circuits, {graph.n_edges}], not {list(masks.shape)}")
    prompts = as_prompt_set(prompts)
    encoded = edge_prompts(model, prompts, metric, corruption, batch_size)
    source = Corruption(model, encoded, corruption, batch_size)
    index, weights = EdgeIndex(graph), ReaderWeights(model)
    rows = [(c, i) for i in range(len(prompts)) for c in range(len(masks))]  # prompt-major: few prompts per chunk
    width = max(len(t) for t in encoded.tokens)
    out = np.zeros((len(masks), len(prompts)))
    for sl in tracked(row_chunks(model, len(rows), width, batch_size, per_row=3), "circuits", disable=not progress):
        circuits, items = (np.array(v) for v in zip(*rows[sl]))
        unique, which = np.unique(items, return_inverse=True)
        batch = model.batch([encoded.tokens[i] for i in items])
        corrupted = source.outputs(unique, model.batch([encoded.tokens[i] for i in unique]))[which]  # a copy
        outside = torch.from_numpy(~masks[circuits]).to(corrupted.device)  # [rows, edges]: True where patched
        patches = _CircuitPatch(model, graph, index, weights, corrupted, outside).interventions()
        logits = run(model, batch, patches, logits_at=batch.last).logits
        target, foil = answers(encoded, items, metric, model.vocab_size, logits.device)
        out[circuits, items] = target_metric(logits, metric, target, foil).double().cpu().numpy()
    return out


class _CircuitPatch:
    """The hooks of one batched forward in which each row keeps only its circuit's edges clean.

    ``diff[:, w]`` holds writer w's corrupted output minus its output in this forward (filled in as
    each writer runs) and ``total`` its running sum. A reader's shift is the sum of ``diff`` over its
    writers outside the row's circuit, computed as a sparse product over whichever is smaller: the
    edges outside the circuit, or those inside it (then ``total`` minus their sum)."""

    def __init__(self, model, graph, index, weights, corrupted: torch.Tensor, outside: torch.Tensor):
        self.model, self.graph, self.weights = model, graph, weights
        self.diff = corrupted  # [rows, writers, pos, d], changed in place as the forward goes
        self.total = torch.zeros_like(self.diff[:, 0])
        rows, n_writers = self.diff.shape[:2]
        n_readers = len(index.heard)
        # per row, the sparser side: +1 on the edges outside the circuit, or -1 on those inside it
        self.by_inside = (~outside).sum(1) < outside.sum(1)  # [rows]
        coef = torch.where(self.by_inside[:, None], -(~outside).float(), outside.float())
        dense = torch.zeros(rows, n_writers, n_readers, device=outside.device)
        dense[:, torch.from_numpy(index.writer), torch.from_numpy(index.reader)] = coef
        self.coef = dense  # [rows, writers, readers]
        self.heard = index.heard
        self.stream: dict[str, torch.Tensor] = {}

    def interventions(self) -> list[Intervention]:
        L, H, K = self.model.n_layers, self.graph.n_heads, self.graph.n_kv_heads
        out = [Intervention.apply(hooks.resid_pre(0), self._wrote(0, lambda a: a[None]))]
        for l in range(L):
            first = 1 + l * (H + 1)  # this layer's first writer, and its readers' first position
            reader = l * (H + 2 * K + 1)
            out.append(Intervention.apply(hooks.resid_pre(l), self._keep(f"pre{l}")))
            for k, (part, n) in enumerate((("q", H), ("k", K), ("v", K))):
                start = reader + (0 if k == 0 else H + (k - 1) * K)
                out.append(Intervention.apply(getattr(hooks, part)(l), self._head_input(l, part, start, n)))
            out.append(Intervention.apply(hooks.z(l), self._wrote(
                first, lambda z, l=l: head_outputs(self.model, l, z)[0].permute(2, 0, 1, 3))))
            out.append(Intervention.apply(hooks.resid_mid(l), self._keep(f"mid{l}")))
            out.append(Intervention.apply(hooks.mlp_in(l), self._mlp_input(l, reader + H + 2 * K)))
            out.append(Intervention.apply(hooks.mlp_out(l), self._wrote(first + H, lambda a: a.float()[None])))
        out.append(Intervention.apply(hooks.resid_post(L - 1), self._logits_input(len(self.heard) - 1)))
        return out

    def _shift(self, readers: slice) -> torch.Tensor:
        """``[rows, n, pos, d]``: each reader's input shift, from the writers it hears."""
        rows, n_writers, pos, d = self.diff.shape
        n, k = int(self.heard[readers.start]), readers.stop - readers.start
        coef = self.coef[:, :n, readers]  # [rows, n, k]
        row, writer, reader = coef.nonzero(as_tuple=True)
        product = torch.sparse_coo_tensor(torch.stack([row * k + reader, row * n_writers + writer]),
                                          coef[row, writer, reader], (rows * k, rows * n_writers),
                                          check_invariants=False)
        shift = torch.sparse.mm(product, self.diff.view(rows * n_writers, pos * d)).view(rows, k, pos, d)
        return shift + self.by_inside[:, None, None, None] * self.total[:, None]

    def _wrote(self, first: int, outputs):
        def record(act):
            values = outputs(act.detach()).float().transpose(0, 1)  # [rows, k, pos, d]
            self.diff[:, first:first + values.shape[1]] -= values
            self.total += self.diff[:, first:first + values.shape[1]].sum(1)
            return act
        return record

    def _keep(self, name: str):
        def keep(act):
            self.stream[name] = act.detach().float()
            return act
        return keep

    def _head_input(self, layer: int, part: str, start: int, n: int):
        w = self.weights.w[part][layer]  # [n, d_model, d_head]

        def move(act):
            x = self.stream[f"pre{layer}"][:, None]  # [rows, 1, pos, d]
            norm = self.weights.ln1[layer]
            moved = norm(x + self._shift(slice(start, start + n))) - norm(x)  # [rows, n, pos, d]
            return act + torch.einsum("bnpd,nde->bpne", moved, w.to(act.device)).to(act.dtype)
        return move

    def _mlp_input(self, layer: int, r: int):
        def move(act):
            x = self.stream[f"mid{layer}"]
            norm = self.weights.ln2[layer]
            return act + (norm(x + self._shift(slice(r, r + 1))[:, 0]) - norm(x)).to(act.dtype)
        return move

    def _logits_input(self, r: int):
        def move(act):
            return act + self._shift(slice(r, r + 1))[:, 0].to(act.dtype)
        return move
