"""Head ablation: what knocking out an attention head (or a set of heads) changes on a prompt set.

A head's output ``z`` (``blocks.l.attn.hook_z``, ``[pos, d_head]``, the input of the output
projection) is replaced, at every position or at the last token only (``positions``), by

- ``zero``: 0, which equals zeroing that head's slice of the output projection's input;
- ``mean``: its mean over a reference prompt set (default: the prompt set itself), either over all
  positions of all reference prompts (``mean_over="all"``) or per position (``"position"``: the mean
  at position p over the reference prompts that reach p; a position no reference prompt reaches gets
  the all-position mean, as the meta notes);
- ``resample``: its value on the record's ``corrupted`` prompt (same token length) at the same position.

Metrics per prompt: ``logprob`` / ``prob`` of the target's first token at the last position,
``logit_diff`` (target - foil), ``logit`` (the target's centred logit, ``metrics``), ``kl`` (KL(clean || ablated) of the next-token distribution at the
last position) and ``loss`` (mean next-token cross-entropy over the prompt, the target being the last
position's next token). ``effect`` is ``clean - ablated`` for the first three and ``ablated - clean``
for ``kl`` and ``loss``, so a positive effect always means the head supports the behaviour.

Heads are query heads: with grouped-query attention each query head has its own ``z`` even though its
keys and values are shared with its group, so ablating one leaves the others of its group intact.

The references ablate one head per forward pass (Michel et al. 2019) or deep-copy the model per head
(zepingyu0512/arithmetic-mechanism). Here the ablations run on the sweep engine: prompts of one token
length are the base rows, each head set a variant, one row each; a variant whose first head is at
layer l starts from the cached residual stream entering block l, and with ``positions="last"`` only
the last position is recomputed, attending to the cached keys and values of the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...probes.models import hooks
from ...probes import HeadscopeError, Model, run
from ...probes.engine.batching import row_chunks
from ...probes.engine.sweep import Patch, base_run, sweep

from ..metrics import pick, target_metric
from ..prompt_sets import Encoded, PromptSet, as_prompt_set, encode

MODES = ("zero", "mean", "resample")
POSITIONS = ("all", "last")
METRICS = ("logprob", "prob", "logit_diff", "logit", "kl", "loss")
LOWER_IS_BETTER = ("kl", "loss")
Head = tuple[int, int]


def all_heads(model: Model) -> list[Head]:
    return [(layer, head) for layer in range(model.n_layers) for head in range(model.n_heads)]


@dataclass
class Ablation:
    """A prompt set prepared for ablations on one model: validated options, tokens, replacement values."""

    model: Model
    prompts: PromptSet
    encoded: Encoded
    mode: str
    metric: str
    positions: str
    mean_over: str
    means: dict[str, torch.Tensor] | None  # hook -> its mean, [positions or 1, ...] (z: [.., heads, d_head])
    notes: list[str]

    @property
    def sign(self) -> float:
        """+1 when higher metric values mean the behaviour is intact, -1 for kl and loss."""
        return -1.0 if self.metric in LOWER_IS_BETTER else 1.0

    def describe(self) -> dict:
        gqa = self.model.n_kv_heads < self.model.n_heads
        return {"mode": self.mode, "metric": self.metric, "positions": self.positions,
                "mean_over": self.mean_over if self.mode == "mean" else None,
                "effect": "ablated - clean" if self.sign < 0 else "clean - ablated",
                "heads_are": (f"query heads ({self.model.n_heads} query heads share {self.model.n_kv_heads} key/value "
                              "heads; ablating one leaves the rest of its group intact)") if gqa else "heads",
                "prompt_set": self.prompts.name, "prompt_source": self.prompts.source,
                "n_prompts": len(self.prompts), "notes": self.notes}


def check_options(mode: str, metric: str, positions: str) -> None:
    """One-line errors for an unknown ablation mode, metric or positions."""
    if mode not in MODES:
        raise HeadscopeError(f"unknown ablation mode {mode!r}; use one of {', '.join(MODES)}")
    if metric not in METRICS:
        raise HeadscopeError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if positions not in POSITIONS:
        raise HeadscopeError(f"unknown positions {positions!r}; use {' or '.join(POSITIONS)}")


def prepare(
    model: Model,
    prompts,
    *,
    mode: str = "zero",
    metric: str = "logprob",
    positions: str = "all",
    mean_over: str = "all",
    reference: list[str] | None = None,
    batch_size: int | None = None,
    mean_hooks: list[str] | None = None,
) -> Ablation:
    """Validate the options and the prompt set (every error before any model work) and compute the
    mean-ablation values. ``reference``: the prompts whose mean activations a mean ablation uses, of
    ``mean_hooks`` (default: every layer's ``z``)."""
    check_options(mode, metric, positions)
    if mean_over not in ("all", "position"):
        raise HeadscopeError(f"unknown mean_over {mean_over!r}; use all or position")
    prompts = as_prompt_set(prompts)
    encoded = encode(model, prompts, foil=metric == "logit_diff", corrupted=mode == "resample")
    notes = list(encoded.notes)
    means = None
    if mode == "mean":
        reference = reference or [r["prompt"] for r in prompts.records]
        means = mean_activations(model, reference, mean_hooks or [hooks.z(l) for l in range(model.n_layers)],
                                 mean_over, max(len(t) for t in encoded.tokens), notes, batch_size)
    return Ablation(model, prompts, encoded, mode, metric, positions, mean_over, means, notes)


def mean_activations(model: Model, reference: list[str], names: list[str], mean_over: str, n_max: int,
                     notes: list[str], batch_size: int | None) -> dict[str, torch.Tensor]:
    """Per hook, the mean activation over the reference prompts' tokens (``[1, ...]``) or per position
    (``[n_max, ...]``), accumulated in float32 over padded batches (pads excluded)."""
    toks = [model.tokenize(p) for p in reference]
    width = max(n_max, max(len(t) for t in toks))
    sums: dict[str, torch.Tensor] = {}
    counts = torch.zeros(width)
    for sl in row_chunks(model, len(toks), width, batch_size):
        batch = model.batch(toks[sl])
        mask = batch.attention_mask.float().cpu()  # [b, pos]
        out = run(model, batch, record=names, logits_at=batch.last)
        n = mask.shape[1]
        counts[:n] += mask.sum(0)
        for name in names:
            act = out.cache[name].float().cpu()
            total = sums.setdefault(name, torch.zeros(width, *act.shape[2:]))
            total[:n] += torch.einsum("bp,bp...->p...", mask, act)
    means = {}
    reached = counts > 0
    for name in names:
        overall = sums[name].sum(0) / counts.sum()
        if mean_over == "all":
            means[name] = overall[None]
        else:
            per_pos = sums[name] / counts.clamp(min=1).view(-1, *([1] * overall.dim()))
            per_pos[~reached] = overall
            means[name] = per_pos[:n_max]
    if mean_over == "position" and not bool(reached[:n_max].all()):
        notes.append(f"positions from {int(reached.sum())} on are beyond every reference prompt; "
                     "they use the all-position mean")
    return means


def ablate(
    setup: Ablation,
    head_sets: list[list[Head]],
    *,
    indices: list[int] | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    desc: str = "ablations",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ablate each head set on each prompt (``indices``: a subset of the prompt set).

    Returns ``clean [P]``, ``ablated [sets, P]`` metric values and whether the greedy next token is
    the target, ``clean_correct [P]`` and ``ablated_correct [sets, P]``. An empty set ablates nothing.
    """
    model = setup.model
    for heads in head_sets:
        for layer, head in heads:
            model.check_layer(layer), model.check_head(head)
    indices = list(range(len(setup.prompts))) if indices is None else list(indices)
    n_sets, n_prompts = len(head_sets), len(indices)
    clean = np.zeros(n_prompts)
    ablated = np.zeros((n_sets, n_prompts))
    clean_ok = np.zeros(n_prompts, dtype=bool)
    ablated_ok = np.zeros((n_sets, n_prompts), dtype=bool)
    nonempty = [i for i, heads in enumerate(head_sets) if heads]
    by_length: dict[int, list[int]] = {}
    for col, i in enumerate(indices):
        by_length.setdefault(len(setup.encoded.tokens[i]), []).append(col)
    for n, cols in by_length.items():
        for sl in row_chunks(model, len(cols), n, batch_size):
            part = cols[sl]
            values, ok, base_values, base_ok = _ablate_same_length(
                setup, [indices[c] for c in part], [head_sets[i] for i in nonempty], batch_size, progress, desc)
            clean[part], clean_ok[part] = base_values, base_ok
            ablated[:, part], ablated_ok[:, part] = base_values, base_ok
            if nonempty:
                ablated[np.ix_(nonempty, part)] = values
                ablated_ok[np.ix_(nonempty, part)] = ok
    return clean, ablated, clean_ok, ablated_ok


def next_token_labels(batch, targets: torch.Tensor) -> torch.Tensor:
    """``[B, pos]``: each position's next token in its prompt, and the target after each row's last
    token (the ``loss`` metric's labels; pad positions get 0 and must be masked)."""
    ids = batch.input_ids
    labels = torch.cat([ids[:, 1:], torch.zeros_like(ids[:, :1])], 1)
    labels[torch.arange(len(ids), device=ids.device), batch.last.to(ids.device)] = targets.to(ids.device)
    return labels


def prompt_metric(setup: Ablation, logits: torch.Tensor, batch, indices: list[int]) -> torch.Tensor:
    """The metric per row of a (padded) batch of the prompt set, from last-position logits ``[B, V]``
    (or every position's ``[B, pos, V]`` for ``loss``, pads excluded)."""
    enc, dev = setup.encoded, logits.device
    targets = torch.tensor([enc.target_ids[i] for i in indices], device=dev)
    if setup.metric == "loss":
        ce = -pick(torch.log_softmax(logits.float(), -1), next_token_labels(batch, targets).to(dev))
        mask = batch.attention_mask.to(dev).float()
        return (ce * mask).sum(-1) / mask.sum(-1)
    foils = torch.tensor([enc.foil_ids[i] for i in indices], device=dev) if enc.foil_ids else None
    return target_metric(logits, setup.metric, targets, foils)


def _ablate_same_length(setup: Ablation, idx: list[int], head_sets: list[list[Head]], batch_size, progress, desc):
    model, enc, metric = setup.model, setup.encoded, setup.metric
    toks = [enc.tokens[i] for i in idx]
    n, dev = len(toks[0]), model.device
    targets = torch.tensor([enc.target_ids[i] for i in idx], device=dev)
    foils = torch.tensor([enc.foil_ids[i] for i in idx], device=dev) if enc.foil_ids else None
    base = base_run(model, toks)
    clean_logp = torch.log_softmax(base.logits.float(), -1)  # [B, vocab]
    clean_ok = (base.logits.argmax(-1) == targets).cpu().numpy()
    labels = ce_clean = None
    if metric == "loss":
        batch = model.batch(toks)
        labels = next_token_labels(batch, targets)
        full = run(model, batch).logits
        ce_clean = -pick(torch.log_softmax(full.float(), -1), labels)  # [B, n]
        clean = ce_clean.mean(-1)
    elif metric == "kl":
        clean = torch.zeros(len(idx), device=dev)
    else:
        clean = target_metric(base.logits, metric, targets, foils)

    def score(logits: torch.Tensor) -> torch.Tensor:  # [k, B, (pos,) vocab] -> [k, B, 2]: metric, correct
        logp = torch.log_softmax(logits.float(), -1)
        last = logp[:, :, -1] if metric == "loss" else logp
        correct = (last.argmax(-1) == targets).float()
        if metric == "loss":
            t = n - logits.shape[2]
            ce = -pick(logp, labels[:, t:])  # [k, B, n - t]
            value = (ce_clean[:, :t].sum(-1) + ce.sum(-1)) / n
        elif metric == "kl":
            value = (clean_logp.exp() * (clean_logp - logp)).sum(-1)
        else:
            value = target_metric(logits, metric, targets, foils)
        return torch.stack([value, correct], -1)

    if not head_sets:
        return None, None, clean.cpu().numpy(), clean_ok
    position = None if setup.positions == "all" else n - 1
    variants = [tuple(Patch(hooks.z(l), position, h) for l, h in sorted(heads)) for heads in head_sets]
    source = sources(setup, idx, n, sorted({hooks.z(l) for heads in head_sets for l, _ in heads}))
    out = sweep(model, toks, base, variants, source, score, all_positions=metric == "loss",
                batch_size=batch_size, progress=progress, desc=desc)
    return out[..., 0].numpy(), out[..., 1].numpy() > 0.5, clean.cpu().numpy(), clean_ok


def sources(setup: Ablation, idx: list[int], n: int, names: list[str]) -> dict[str, torch.Tensor]:
    """The replacement activation of each ablated hook for prompts ``idx`` (of ``n`` tokens), ``[B, n, ...]``
    (expanded views where shared): zeros, the mean, or the corrupted prompt's activation."""
    model, b = setup.model, len(idx)
    if setup.mode == "resample":
        corrupted = model.batch([setup.encoded.corrupted[i] for i in idx])
        return run(model, corrupted, record=names, logits_at=corrupted.last).cache
    out = {}
    for name in names:
        if setup.mode == "mean":
            m = setup.means[name].to(model.device, model.dtype)
            out[name] = (m if len(m) == 1 else m[:n])[None].expand(b, n, *m.shape[1:])
        else:
            out[name] = torch.zeros(1, 1, *_trailing(model, name), device=model.device, dtype=model.dtype).expand(
                b, n, *_trailing(model, name))
    return out


def _trailing(model: Model, name: str) -> tuple[int, ...]:
    """The shape of one position of hook ``name`` (per-head hooks: heads x d_head)."""
    return (model.n_heads, model.d_head) if name.endswith("attn.hook_z") else (model.d_model,)
