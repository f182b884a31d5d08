"""Each head's direct effect under a head ablation's own mode, metric and positions.

The head's output share (``z_h @ W_O[h]``) is replaced by its ablated value (zero, the mean ``z``, or the
corrupted prompt's) on the direct path alone: the clean logits change by that difference read through
the final norm with the scale frozen at the clean run's (``circuits.direct_effects``), and nothing else
in the network moves. ``direct_effect`` is signed like the ablation's ``effect`` (positive: the head
supports the behaviour), so ``self_repair = direct_effect - effect`` is what the rest of the network makes
up for when the head is ablated (McGrath et al., "The Hydra Effect", 2023; ``circuits.steering.self_repair``
splits it by later component for the metrics linear in the logits). Every metric is read before any
final soft-capping; with ``loss`` every position is read, each with its own frozen scale.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ...probes.engine.batching import row_chunks
from ...probes.engine.run import Record, run
from ...probes.models import hooks
from ...probes.readouts.decompose import head_outputs

from ..direct_effects import DirectPath
from ..metrics import pick, target_metric
from .ablation import Ablation, Head, next_token_labels, sources

HEADS_PER_PRODUCT = 16  # heads whose changed logits are held at once


def head_direct_effects(setup: Ablation, heads: list[Head], indices: list[int],
                        batch_size: int | None = None) -> pd.DataFrame:
    """``prompt, layer, head, direct_effect`` for each of ``heads`` on the prompts ``indices``."""
    model, enc = setup.model, setup.encoded
    every = setup.metric == "loss"
    by_length: dict[int, list[int]] = {}
    for i in indices:
        by_length.setdefault(len(enc.tokens[i]), []).append(i)
    parts = []
    for n, idx in by_length.items():
        for sl in row_chunks(model, len(idx), n, batch_size):
            parts.append(_same_length(setup, heads, idx[sl], n, every))
    frame = pd.concat(parts, ignore_index=True)
    order = {p: i for i, p in enumerate(indices)}
    return frame.sort_values(["layer", "head", "prompt"], key=lambda c: c.map(order) if c.name == "prompt" else c,
                             ignore_index=True)


def _same_length(setup: Ablation, heads: list[Head], idx: list[int], n: int, every: bool) -> pd.DataFrame:
    model, enc, L, dev = setup.model, setup.encoded, setup.model.n_layers, setup.model.device
    layers = sorted({l for l, _ in heads})
    post = [hooks.attn_hook_out(l) for l in layers if hasattr(model.bridge.blocks[l], "ln1_post")]
    keep = None if every else (lambda name, act: act[:, -1:])
    batch = model.batch([enc.tokens[i] for i in idx])
    clean = run(model, batch, record=Record([*(hooks.z(l) for l in layers), *post, hooks.resid_post(L - 1)], keep=keep),
                logits_at=batch.last).cache
    path = DirectPath(model, clean[hooks.resid_post(L - 1)])  # [B, p, d]: p = n positions, or the last
    replaced = sources(setup, idx, n, [hooks.z(l) for l in layers])
    ablated_at = slice(None) if setup.positions == "all" else slice(n - 1, n)  # positions whose z is replaced
    targets = torch.tensor([enc.target_ids[i] for i in idx], device=dev)
    foils = torch.tensor([enc.foil_ids[i] for i in idx], device=dev) if enc.foil_ids else None
    pre = path.logits()  # [B, p, vocab]
    labels = next_token_labels(batch, targets) if every else None
    clean_value = _metric(setup, path, pre, targets, foils, labels, batch, pre)
    deltas = []
    for l in layers:
        z = clean[hooks.z(l)]
        after = replaced[hooks.z(l)][:, -z.shape[1]:].to(dev)
        attn = clean.get(hooks.attn_hook_out(l))
        share, _ = head_outputs(model, l, z, attn)
        share_after, _ = head_outputs(model, l, after, attn)
        delta = share - share_after  # [B, p, H, d]
        if setup.positions == "last" and every:
            mask = torch.zeros(n, device=dev)
            mask[ablated_at] = 1
            delta = delta * mask[None, :, None, None]
        deltas.append(delta)
    by_layer = {l: i for i, l in enumerate(layers)}
    values = []
    for start in range(0, len(heads), HEADS_PER_PRODUCT):
        chunk = heads[start:start + HEADS_PER_PRODUCT]
        delta = torch.stack([deltas[by_layer[l]][:, :, h] for l, h in chunk])  # [k, B, p, d]
        patched = pre - path.delta_logits(delta)
        values.append(_metric(setup, path, patched, targets, foils, labels, batch, pre))
    ablated = torch.cat(values).cpu().numpy()  # [heads, B]
    clean_value = clean_value.cpu().numpy()
    return pd.DataFrame({"prompt": np.tile(idx, len(heads)), "layer": np.repeat([l for l, _ in heads], len(idx)),
                         "head": np.repeat([h for _, h in heads], len(idx)),
                         "direct_effect": setup.sign * (clean_value[None] - ablated).reshape(-1)})


def _metric(setup: Ablation, path: DirectPath, logits: torch.Tensor, targets, foils, labels, batch,
            clean: torch.Tensor) -> torch.Tensor:
    """The ablation's metric of pre-cap logits ``[..., B, p, vocab]`` (``p``: every position for ``loss``,
    else the last), soft-capped as the model does, one value per leading index and prompt."""
    logits = path.readout.capped(logits)
    if setup.metric == "loss":
        ce = -pick(torch.log_softmax(logits, -1), labels.to(logits.device))
        mask = batch.attention_mask.to(logits.device).float()
        return (ce * mask).sum(-1) / mask.sum(-1)
    logits = logits[..., -1, :]
    if setup.metric == "kl":
        clean_logp = torch.log_softmax(path.readout.capped(clean[..., -1, :]), -1)
        return (clean_logp.exp() * (clean_logp - torch.log_softmax(logits, -1))).sum(-1)
    return target_metric(logits, setup.metric, targets, foils)
