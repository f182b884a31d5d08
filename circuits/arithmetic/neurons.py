"""Layer- and neuron-level attribution of an answer token, and comparative neuron analysis (CNA).

Yu & Ananiadou ("Neuron-Level Knowledge Attribution in Large Language Models"; "Interpreting
Arithmetic Mechanism in LLMs through Comparative Neuron Analysis"; zepingyu0512/arithmetic-mechanism)
score a vector ``v`` added to a residual state ``x`` at the last position by how much it raises the
answer token ``w``:

    score = log p(w | x + v) - log p(w | x),   p(. | x) = softmax(W_U N_s(x) + b_U)

``N_s`` is the model's final normalisation with its scale frozen at the value ``s`` it takes on the
same prompt's final residual stream (the reference divides by the RMS of the last layer's output,
not of ``x``); its bias, when it has one, and soft-capping are applied. The pairs are:

- attention of layer l: ``x`` = the stream entering the layer, ``v`` = its attention output;
- MLP of layer l: ``x`` = the stream after its attention (``resid_mid``), ``v`` = its MLP output;
- neuron i of MLP l: ``x`` = ``resid_mid``, ``v = m_i W_out[i]`` (``m_i`` its activation,
  ``hook_post``); a post-MLP norm (Gemma's ``ln2_post``) is linearised with its scale frozen at the
  whole MLP output's, so the neurons' vectors plus the output bias add up to the MLP's write.

**CNA** compares each neuron's score in the original model with its score when chosen heads are
zero-ablated (their ``z`` at every position, as the reference zeroes their ``o_proj`` columns): the
ablated run gives its own activations and ``resid_mid``; the frozen scale stays the original run's,
as in the reference. ``cna_score = score - score_ablated``: large where the heads feed the neuron.

**Vectorised**: ``logits(x + m_i W_out[i]) = logits(x) + (m_i / s) E_i`` with
``E = (w * C(W_out)) W_U`` (``w``, ``C``: the norm's weight and centring), so every neuron of a layer
is scored at once, one vocabulary chunk at a time with the log-sum-exp carried across chunks; ``E``
serves every prompt and both runs. A neuron's top tokens are those of ``sign(m) E_i`` (the
reference decodes ``m_i W_out[i]`` through the same map).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ...probes.models import hooks
from ...probes import HeadscopeError, Model, Record, Result, Tokens, run
from ...probes.models.placement import materialized
from ...probes.readouts.decompose import final_norm, norm_of, readout
from ...probes.engine.interventions import Edit
from ...probes.engine.batching import row_chunks

Head = tuple[int, int]


@dataclass
class LastState:
    """Activations at each prompt's last position (float32): ``[P, L, d]`` streams and outputs,
    ``post`` ``[P, L, n_neurons]`` MLP activations, ``final`` ``[P, d]`` the last block's output."""

    resid_pre: torch.Tensor
    resid_mid: torch.Tensor
    resid_post: torch.Tensor
    post: torch.Tensor
    mlp_raw: torch.Tensor | None  # the MLP's output before a post-MLP norm, where there is one

    @property
    def attn_out(self) -> torch.Tensor:
        return self.resid_mid - self.resid_pre

    @property
    def mlp_out(self) -> torch.Tensor:
        return self.resid_post - self.resid_mid

    @property
    def final(self) -> torch.Tensor:
        return self.resid_post[:, -1]


def _has_post_norm(model: Model) -> bool:
    return hasattr(model.bridge.blocks[0], "ln2_post")


def last_state(model: Model, prompts: list[Tokens], *, ablate: list[Head] = (), batch_size: int | None = None) -> LastState:
    """One forward per batch; ``ablate``: heads whose ``z`` is zeroed at every position."""
    L = model.n_layers
    names = {"resid_pre": [hooks.resid_pre(l) for l in range(L)],
             "resid_mid": [hooks.resid_mid(l) for l in range(L)],
             "resid_post": [hooks.resid_post(l) for l in range(L)],
             "post": [hooks.mlp_post(l) for l in range(L)]}
    if _has_post_norm(model):
        names["mlp_raw"] = [hooks.mlp_hook_out(l) for l in range(L)]
    for layer, head in ablate:
        model.check_layer(layer), model.check_head(head)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in names}
    for sl in row_chunks(model, len(prompts), max(len(t) for t in prompts), batch_size):
        batch = model.batch(prompts[sl])
        rows = torch.arange(len(batch))
        last = batch.last

        def keep(name, act):
            return act[rows.to(act.device), last.to(act.device)].float()

        edits = [Edit(hooks.z(l), rows, heads=torch.full((len(rows),), h)) for l, h in ablate]
        with torch.no_grad():
            out = run(model, batch, interventions=edits, record=Record([n for group in names.values() for n in group], keep=keep),
                      logits_at=torch.zeros(len(batch), dtype=torch.long))
        for key, group in names.items():
            parts[key].append(torch.stack([out.cache[n] for n in group], 1))
    cat = {k: torch.cat(v) for k, v in parts.items()}
    return LastState(cat["resid_pre"], cat["resid_mid"], cat["resid_post"], cat["post"], cat.get("mlp_raw"))


def final_scale(model: Model, state: LastState) -> torch.Tensor:
    """The frozen scale ``s`` of each prompt ``[P, 1]``: the final norm's on the last block's output."""
    return final_norm(model).scale(state.final)


def layer_scores(model: Model, state: LastState, answer_ids: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``[P, L, 2]``: the score of each layer's attention and MLP output (module docstring)."""
    read = readout(model)
    s = scale[:, None]
    attn = read.frozen_logprob(state.resid_mid, s, answer_ids) - read.frozen_logprob(state.resid_pre, s, answer_ids)
    mlp = read.frozen_logprob(state.resid_post, s, answer_ids) - read.frozen_logprob(state.resid_mid, s, answer_ids)
    return torch.stack([attn, mlp], -1)


def neuron_vectors(model: Model, layer: int, post: torch.Tensor, mlp_raw: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each neuron's write to the stream, ``[..., n_neurons, d]``, and the output bias's (or None):
    their sum is the MLP's output. ``mlp_raw`` (the output before a post-MLP norm) gives that norm's scale."""
    mlp = model.bridge.blocks[layer].mlp
    with materialized(mlp.original_component):
        w_out = mlp.W_out.detach().float().to(post.device)
        b_out = getattr(mlp, "b_out", None)
        b_out = None if b_out is None else b_out.detach().clone()
    vectors = post[..., :, None] * w_out
    bias = None if b_out is None else b_out.detach().float().to(post.device).expand(post.shape[:-1] + w_out.shape[-1:])
    if _has_post_norm(model):
        norm = norm_of(model.bridge.blocks[layer].ln2_post)
        scale = norm.scale(mlp_raw).to(post.device)
        vectors = norm.linear(vectors, scale[..., None, :])
        bias = None if bias is None else norm.linear(bias, scale)
    return vectors, bias


def _post_scale(model: Model, layer: int, state: LastState) -> tuple[torch.Tensor, torch.Tensor]:
    """(``W_out`` with a post-MLP norm's weight folded in, ``[N, d]``; that norm's scale ``[P, 1]``)."""
    mlp = model.bridge.blocks[layer].mlp
    with materialized(mlp.original_component):
        w_out = mlp.W_out.detach().float().to(state.post.device)
    if not _has_post_norm(model):
        return w_out, torch.ones(state.post.shape[0], 1, device=w_out.device)
    norm = norm_of(model.bridge.blocks[layer].ln2_post)
    return w_out * norm.weight.to(w_out.device), norm.scale(state.mlp_raw[:, layer])


def neuron_scores(model: Model, states: list[LastState], answer_ids: torch.Tensor, scale: torch.Tensor, *,
                  layers: list[int] | None = None, top_k: int = 10, e_elements: int = 2**26,
                  chunk_elements: int = 2**20) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of every neuron of ``layers`` in each state, ``[S, P, L', N]``, and each neuron's top
    tokens for a positive and a negative activation, ``[L', N, 2, top_k]`` (module docstring).
    ``scale`` is the frozen final-norm scale of the original run, ``[P, 1]``, used for every state.

    ``E`` is formed ``e_elements`` at a time (the product dominates the cost and is shared by all
    prompts and states); the logits built from it, ``chunk_elements`` at a time, stay in cache."""
    layers = list(range(model.n_layers)) if layers is None else layers
    device = states[0].post.device
    read = readout(model)
    vocab = read.w_u.shape[1]
    S, P = len(states), states[0].post.shape[0]
    ids = answer_ids.view(1, P, 1)
    scores, tops = [], []
    for layer in layers:
        w_out, post_scales = zip(*[_post_scale(model, layer, st) for st in states])
        e_rows = read.norm.centered(w_out[0]) * read.norm.weight  # [N, d]
        n = e_rows.shape[0]
        x = torch.stack([st.resid_mid[:, layer] for st in states])  # [S, P, d]
        coef = (torch.stack([st.post[:, layer] / ps for st, ps in zip(states, post_scales)]) / scale)[..., None]
        base = read.frozen(x, scale)  # [S, P, V]
        base_lp = torch.log_softmax(read.capped(base), -1).gather(-1, ids.expand(S, P, 1))[..., 0]  # [S, P]
        lse = torch.full((S, P, n), -torch.inf, device=device)
        target = torch.zeros(S, P, n, device=device)
        top = [(torch.empty(n, 0, device=device), torch.empty(n, 0, dtype=torch.long, device=device))] * 2
        e_width = max(1, min(vocab, e_elements // n))
        width = max(64, chunk_elements // (S * P * n))
        for e_start in range(0, vocab, e_width):
            e_all = e_rows @ read.w_u[:, e_start:e_start + e_width]  # [N, We]
            top = [_merge_top(top[0], e_all, e_start, top_k), _merge_top(top[1], -e_all, e_start, top_k)]
            for off in range(0, e_all.shape[1], width):
                e = e_all[:, off:off + width]
                start = e_start + off
                logits = read.capped(torch.addcmul(base[:, :, None, start:start + e.shape[1]], coef, e))
                lse = torch.logaddexp(lse, torch.logsumexp(logits, -1))
                inside = (answer_ids >= start) & (answer_ids < start + e.shape[1])
                if inside.any():
                    local = (answer_ids - start).clamp(0, e.shape[1] - 1).view(1, P, 1, 1).expand(S, P, n, 1)
                    target = torch.where(inside.view(1, P, 1), logits.gather(-1, local)[..., 0], target)
        scores.append(target - lse - base_lp[..., None])
        tops.append(torch.stack([top[0][1], top[1][1]], 1))
    return torch.stack(scores, 2), torch.stack(tops)


def _merge_top(current, values: torch.Tensor, offset: int, k: int):
    vals, idx = values.topk(min(k, values.shape[1]), -1)
    vals, idx = torch.cat([current[0], vals], -1), torch.cat([current[1], idx + offset], -1)
    keep = vals.topk(min(k, vals.shape[1]), -1).indices
    return vals.gather(-1, keep), idx.gather(-1, keep)


class NeuronAttribution(Result):
    """Per neuron: mean ``score`` over the prompts, ``cna_score`` (when heads were ablated), mean
    ``activation`` and ``top_tokens``; ``layers`` holds each layer's attention and MLP score."""

    kind = "neuron-attribution"
    table = "neurons"
    TABLES = ("layers",)

    def plot(self):
        import plotly.express as px

        return px.bar(self.layers, x="layer", y="score", color="kind", barmode="group", facet_row="group",
                      title="log-probability increase of the answer from each layer's attention and MLP output")



def neuron_attribution(model: Model, prompts: list[Tokens | str], answer_ids: list[int], *,
                       groups: list[str] | None = None, ablate: list[Head] | dict[str, list[Head]] = (),
                       layers: list[int] | None = None, top_k: int = 10,
                       batch_size: int | None = None) -> NeuronAttribution:
    """Layer and neuron scores of ``answer_ids`` (one token per prompt) at the last position, averaged
    over the prompts of each of ``groups`` (a label per prompt; default one group, "all"); with
    ``ablate`` (heads, or a dict group -> heads), each neuron's CNA score against those heads zeroed.
    ``E`` is formed once per layer for all groups, so one call for several groups costs about one."""
    if not prompts or len(prompts) != len(answer_ids):
        raise HeadscopeError(f"{len(prompts)} prompts and {len(answer_ids)} answers: give one answer token per prompt")
    groups = ["all"] * len(prompts) if groups is None else list(groups)
    if len(groups) != len(prompts):
        raise HeadscopeError(f"{len(groups)} group labels for {len(prompts)} prompts")
    labels = list(dict.fromkeys(groups))
    heads_of = {g: list(ablate.get(g, [])) for g in labels} if isinstance(ablate, dict) else {g: list(ablate) for g in labels}
    layers = list(range(model.n_layers)) if layers is None else [model.check_layer(l) for l in layers]
    order = sorted(range(len(prompts)), key=lambda i: labels.index(groups[i]))  # each group contiguous
    toks = [prompts[i] if isinstance(prompts[i], Tokens) else model.tokenize(prompts[i]) for i in order]
    groups = [groups[i] for i in order]
    state = last_state(model, toks, batch_size=batch_size)
    states = [state]
    cna = any(heads_of.values())
    if cna:
        parts = [last_state(model, [t for t, g in zip(toks, groups) if g == label], ablate=heads_of[label],
                            batch_size=batch_size) for label in labels]
        states.append(LastState(*(None if getattr(parts[0], f) is None else torch.cat([getattr(p, f) for p in parts])
                                  for f in ("resid_pre", "resid_mid", "resid_post", "post", "mlp_raw"))))
    ids = torch.tensor([answer_ids[i] for i in order], device=state.final.device)
    scale = final_scale(model, state)
    by_layer = layer_scores(model, state, ids, scale).cpu()  # [P, L, 2]
    scores, tops = neuron_scores(model, states, ids, scale, layers=layers, top_k=top_k)
    scores, tops = scores.cpu(), tops.cpu().numpy()
    texts = model.token_texts(tops.flatten().tolist())
    n = scores.shape[-1]
    frames, layer_frames = [], []
    for label in labels:
        rows = torch.tensor([g == label for g in groups])
        mean = scores[:, rows].mean(1).numpy()  # [S, L', N]
        activation = state.post[rows.to(state.post.device)][:, layers].mean(0).cpu().numpy()  # [L', N]
        sign = (activation < 0).astype(int)  # decode -E where the mean activation is negative
        frames.append(pd.DataFrame({
            "group": label, "layer": np.repeat(layers, n), "neuron": np.tile(np.arange(n), len(layers)),
            "score": mean[0].reshape(-1), "cna_score": (mean[0] - mean[1]).reshape(-1) if cna else np.nan,
            "activation": activation.reshape(-1),
            "top_tokens": [[texts[int(t)] for t in tops[i, j, sign[i, j]]]
                           for i in range(len(layers)) for j in range(n)]}))
        layer_frames.append(pd.DataFrame({"group": label, "layer": np.repeat(np.arange(model.n_layers), 2),
                                          "kind": ["attn", "mlp"] * model.n_layers,
                                          "score": by_layer[rows].mean(0).numpy().reshape(-1)}))
    meta = {"model": model.spec, "n_prompts": len(toks), "groups": labels,
            "ablated_heads": {g: [f"{l}-{h}" for l, h in heads_of[g]] for g in labels}, "layers": layers,
            "frozen_scale": "final norm scale of the original run's last-block output",
            "score": "log p(answer | x + v) - log p(answer | x)", "cna_score": "score - score with heads ablated"}
    return NeuronAttribution(pd.concat(frames, ignore_index=True), meta,
                             {"layers": pd.concat(layer_frames, ignore_index=True)})
