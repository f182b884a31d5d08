"""Causal tracing (Meng et al., "Locating and Editing Factual Associations in GPT", ROME).

The algorithm follows kmeng01/rome ``experiments/causal_trace.py``:

- corrupt the subject: add Gaussian noise to the subject tokens' embeddings (the embedding output,
  before any positional embedding) in ``samples`` noised copies of the prompt; the same noise is used
  for every restoration (common random numbers), drawn from ``seed``; its scale is a multiple of the
  standard deviation of token embeddings over a set of subject strings (``"3sd"``, the reference's
  "s3") or a fixed number;
- restore one (token, layer) cell to its clean value across the noised copies: the residual stream
  after block ``l`` (``resid``), or the MLP / attention output at every layer of a window centred on
  ``l`` (``mlp``, ``attn``), the window spanning layers ``[l - w//2, l + ceil(w/2))`` clipped to the
  model, as in the reference;
- score: the mean over the noised copies of the target's probability at the last position
  (optionally its log-probability, or the logit difference against a foil). ``high_score`` is the
  clean run's, ``low_score`` the corrupted run's without restoration; a cell's indirect effect is
  ``score - low_score`` and the total effect ``high_score - low_score``.

Speed, not in the reference (which runs one forward per cell): cells go along the batch axis, one
row per (cell, noise sample), through ``probes.sweep``, which skips the layers below a restoration
and the positions before it (resuming from the corrupted run's residual stream and keys/values).
Tokens before the subject are not run at all: with causal attention they are identical in the
clean and corrupted runs, so restoring them gives ``low_score`` exactly.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import pandas as pd
import torch

from ...probes.models import hooks
from ...probes import HeadscopeError, Intervention, Model, Result, run
from ...probes.engine.sweep import Patch, base_run, sweep

from ..metrics import check_metric, target_metric

KINDS = ("resid", "mlp", "attn")
_RESTORED_HOOK = {"resid": hooks.resid_post, "mlp": hooks.mlp_out, "attn": hooks.attn_out}


def default_window(model: Model) -> int:
    """About ``n_layers / 5``: the reference's 10 was for GPT-2 XL's 48 layers."""
    return max(1, round(model.n_layers / 5))


def window_layers(layer: int, window: int, n_layers: int) -> range:
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


def embedding_std(model: Model, subjects: list[str]) -> float:
    """Standard deviation of the token embeddings of ``subjects`` (all their tokens, all dimensions)."""
    embed = model.hf_model.get_input_embeddings()
    ids = [i for s in subjects for i in model.tokenizer(s, add_special_tokens=False)["input_ids"]]
    if not ids:
        raise HeadscopeError("no subject tokens to measure the embedding scale on")
    with torch.no_grad():
        return float(embed(torch.tensor([ids], device=model.device)).float().std())


def noise_scale(model: Model, noise: str | float, subjects: list[str]) -> float:
    """``"3sd"`` -> 3 x embedding std over ``subjects``; a number -> itself."""
    if isinstance(noise, str):
        match = re.fullmatch(r"\s*([0-9.]+)\s*sd\s*", noise)
        if match is None:
            try:
                noise = float(noise)
            except ValueError:
                raise HeadscopeError(f"noise {noise!r} must be a positive number or a multiple of sd like 3sd") from None
        else:
            factor = float(match.group(1))
            if factor <= 0:
                raise HeadscopeError(f"noise {noise!r} must be positive")
            return factor * embedding_std(model, subjects)
    if not noise > 0:
        raise HeadscopeError(f"noise {noise!r} must be positive")
    return float(noise)


@dataclass
class _Corruption:
    """The noised copies: which positions, what noise, and the corrupted run's residual streams."""

    positions: torch.Tensor  # subject token positions
    noise: torch.Tensor  # [samples, n_subject, d_model]

    def intervention(self, rows_sample: torch.Tensor) -> Intervention:
        """Add sample ``rows_sample[r]``'s noise to row ``r``'s subject embeddings."""
        rows = torch.arange(len(rows_sample))
        return Intervention.add("hook_embed", self.noise[rows_sample.to(self.noise.device)], rows=rows,
                                positions=self.positions[None].expand(len(rows), -1))


class CausalTrace(Result):
    """A causal trace of one prompt: one row per (kind, layer, position)."""

    kind = "causal-trace"
    table = "trace"

    def plot(self):
        """The reference's three heatmaps (token x layer), subject tokens marked with ``*``."""
        from plotly.subplots import make_subplots
        import plotly.graph_objects as go

        kinds = [k for k in KINDS if k in set(self.frame["kind"])]
        subject = set(self.meta["subject_positions"])
        fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=[_KIND_TITLES[k] for k in kinds],
                            shared_yaxes=True, horizontal_spacing=0.04)
        colours = {"resid": "Purples", "mlp": "Greens", "attn": "Reds"}
        for col, kind in enumerate(kinds, start=1):
            part = self.frame[self.frame["kind"] == kind]
            grid = part.pivot(index="position", columns="layer", values="score").sort_index()
            labels = [f"{p}: {t}{'*' if p in subject else ''}" for p, t in
                      part.drop_duplicates("position").sort_values("position")[["position", "token"]].itertuples(index=False)]
            fig.add_trace(go.Heatmap(z=grid.values, x=list(grid.columns), y=labels, colorscale=colours[kind],
                                     zmin=self.meta["low_score"], showscale=col == len(kinds),
                                     hovertemplate="layer %{x}<br>%{y}<br>score %{z:.4f}<extra></extra>"), row=1, col=col)
            fig.update_xaxes(title_text="layer" if kind == "resid" else f"centre of {self.meta['window']} layers",
                             row=1, col=col)
        fig.update_yaxes(autorange="reversed")
        fig.update_layout(title=f"{self.meta['metric']} of {self.meta['target']!r} (clean {self.meta['high_score']:.3f}, "
                                f"corrupted {self.meta['low_score']:.3f})", height=250 + 22 * grid.shape[0])
        return fig


_KIND_TITLES = {"resid": "restore residual stream", "mlp": "restore MLP (window)", "attn": "restore attention (window)"}


def trace(
    model: Model,
    prompt: str,
    subject: str,
    target: str | None = None,
    *,
    kinds: tuple[str, ...] = KINDS,
    samples: int = 10,
    noise: str | float = "3sd",
    noise_subjects: list[str] | None = None,
    window: int | None = None,
    metric: str = "prob",
    foil: str | None = None,
    subject_start: int | None = None,
    layers: list[int] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
) -> CausalTrace:
    """Causal trace of ``prompt`` with ``subject`` corrupted (module docstring for the algorithm).

    ``target`` defaults to the clean top-1 next token; ``noise_subjects`` are the strings whose
    embedding std sets the ``"Nsd"`` noise scale (default: the shipped fact set's subjects);
    ``layers`` restricts the cells traced (default: every layer).
    """

    started = time.perf_counter()
    kinds = tuple(kinds)
    for kind in kinds:
        if kind not in KINDS:
            raise HeadscopeError(f"unknown kind {kind!r}; use any of {', '.join(KINDS)}")
    if not isinstance(samples, int) or samples < 1:
        raise HeadscopeError(f"samples {samples!r} must be at least 1")
    window = default_window(model) if window is None else window
    if not isinstance(window, int) or not 1 <= window <= model.n_layers:
        raise HeadscopeError(f"window {window!r} must be between 1 and n_layers ({model.n_layers})")
    check_metric(metric, foil)
    layers = list(range(model.n_layers)) if layers is None else [model.check_layer(l) for l in layers]
    tokens = model.tokenize(prompt)
    subject_pos = tokens.locate(subject, subject_start, role="subject")
    if noise_subjects is None:
        from ...data import fact_subjects

        noise_subjects = fact_subjects()
    scale = noise_scale(model, noise, noise_subjects)
    n, last = len(tokens), len(tokens) - 1

    # clean run: the target, high score, and the clean values restorations copy from
    restored_hooks = [_RESTORED_HOOK[k](l) for k in kinds for l in range(model.n_layers)]
    clean_batch = model.batch([tokens])
    clean = run(model, clean_batch, record=restored_hooks, logits_at=clean_batch.last)
    notes = []
    if target is None:
        target_id = int(clean.logits[0].argmax())
    else:
        target_id, note = model.first_token(target, "target")
        notes += [note] if note else []
    foil_id = None
    if foil is not None:
        foil_id, note = model.first_token(foil, "foil")
        notes += [note] if note else []
    high = float(target_metric(clean.logits, metric, target_id, foil_id)[0])

    # corrupted run: the noised copies, their residual streams and keys/values, low score
    gen = torch.Generator().manual_seed(seed)
    corruption = _Corruption(torch.tensor(subject_pos),
                             torch.randn(samples, len(subject_pos), model.d_model, generator=gen) * scale)
    corrupted = base_run(model, [tokens] * samples, [corruption.intervention(torch.arange(samples))])
    low = float(target_metric(corrupted.logits, metric, target_id, foil_id).mean())

    # restorations: every cell from the first subject token on, one row per (cell, noise sample)
    first = min(subject_pos)
    cells = [(kind, layer, t) for kind in kinds for layer in layers for t in range(first, n)]
    variants = [_restoration(kind, layer, t, window, model.n_layers) for kind, layer, t in cells]
    source = {hook: clean.cache[hook].expand(samples, *clean.cache[hook].shape[1:]) for hook in restored_hooks}
    source.update({hooks.resid_pre(l + 1): source[hooks.resid_post(l)]
                   for l in range(model.n_layers - 1) if hooks.resid_post(l) in source})
    values = sweep(model, [tokens] * samples, corrupted, variants, source,
                   lambda logits: target_metric(logits, metric, target_id, foil_id),
                   batch_size=batch_size, progress=progress, desc="causal trace")
    scores = dict(zip(cells, values.mean(1).tolist()))

    strings = tokens.strings
    rows = [{"kind": kind, "layer": layer, "position": t, "token": strings[t],
             "score": scores.get((kind, layer, t), low)}
            for kind in kinds for layer in layers for t in range(n)]
    frame = pd.DataFrame(rows)
    frame["indirect_effect"] = frame["score"] - low
    frame["subject"] = frame["position"].isin(subject_pos)
    meta = {
        "model": model.spec, "prompt": prompt, "subject": subject, "subject_positions": subject_pos,
        "target": model.tokenizer.decode([target_id]), "target_token_id": target_id,
        "foil": foil, "foil_token_id": foil_id, "metric": metric, "high_score": high, "low_score": low,
        "total_effect": high - low, "noise": noise, "noise_scale": scale, "samples": samples, "window": window,
        "kinds": list(kinds), "seed": seed,
        "notes": notes, "seconds": round(time.perf_counter() - started, 3), "last_position": last,
    }
    return CausalTrace(frame, meta)


def _restoration(kind: str, layer: int, t: int, window: int, n_layers: int) -> tuple[Patch, ...]:
    """The patches restoring one cell. The residual stream after block l is block l+1's input, so
    that restoration starts at block l+1 (block l cannot change); the last block's is its output."""
    if kind == "resid":
        hook = hooks.resid_pre(layer + 1) if layer + 1 < n_layers else _RESTORED_HOOK[kind](layer)
        return (Patch(hook, t),)
    return tuple(Patch(_RESTORED_HOOK[kind](j), t) for j in window_layers(layer, window, n_layers))
