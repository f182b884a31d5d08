"""The logit lens: read every layer's residual stream in the vocabulary.

For the residual stream entering block 0 (the embeddings, layer 0) and after each block l (layer
l + 1), at the chosen positions, apply the model's own final normalisation computed on that vector
itself (not the final layer's scale reused, the trap of TransformerLens issue 1076), then the
unembedding (and the model's final logit soft-capping, where it has one). Per (layer, position):
the top-k tokens and probabilities, the target's probability and rank (0 = top), the entropy, and
the KL divergence KL(final || lens) from the model's own next-token distribution.

Only ``rows`` (layer, position) vectors are decoded at a time, so the full
vocab x layers x positions tensor never exists; ``top_k`` and the target are all that is kept.
(The vocabulary itself is not cut further: the entropy and the KL need each row's whole
distribution, and ``rows`` x vocab floats is the only large tensor.) The target is a given token,
or by default the model's own top-1 next token at each position.

``tuned_lens`` reads the same grid through a trained ``TunedLens`` (``tuned_lens.py``): each
layer's vector passes its affine translator before the same decoding.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ..models import hooks
from ..engine.run import run
from ..errors import HeadscopeError
from ..models.model import Model
from ..results.result import Result
from .decompose import decode

if TYPE_CHECKING:
    from .tuned_lens import TunedLens


LENSES = ("logit", "tuned")  # the final readout of each layer as it is, or through a trained translator

def check_top_k(model: Model, top_k: int) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= model.vocab_size:
        raise HeadscopeError(f"top_k {top_k!r} must be between 1 and the vocabulary size ({model.vocab_size})")


class LogitLens(Result):
    """One row per (layer, position): top tokens, target probability and rank, entropy, KL to final."""

    kind = "logit-lens"
    table = "lens"

    def grid(self, value: str = "top_prob") -> pd.DataFrame:
        frame = self.frame.assign(top_prob=[p[0] for p in self.frame["top_probs"]])
        return frame.pivot(index="layer", columns="position", values=value)

    def plot(self, color: str = "top_prob"):
        """The layer x position grid, each cell showing its top token, coloured by ``color``
        (``top_prob`` or ``target_prob``)."""
        import plotly.graph_objects as go

        frame = self.frame.assign(top_prob=[p[0] for p in self.frame["top_probs"]],
                                  top_token=[_printable(t[0]) for t in self.frame["top_tokens"]])
        z = frame.pivot(index="layer", columns="position", values=color)
        text = frame.pivot(index="layer", columns="position", values="top_token")
        labels = [f"{p}: {t!r}" for p, t in zip(sorted(set(frame["position"])),
                                                  frame.drop_duplicates("position").sort_values("position")["token"])]
        fig = go.Figure(go.Heatmap(z=z.values, x=labels, y=list(z.index), text=text.values, texttemplate="%{text}",
                                   colorscale="Blues", zmin=0, zmax=1,
                                   hovertemplate="layer %{y}, %{x}<br>top %{text}<br>" + color + " %{z:.3f}<extra></extra>"))
        fig.update_layout(title=f"logit lens ({color}); layer 0 = embeddings, l = after block l-1",
                          xaxis_title="position", yaxis_title="layer", height=max(400, 22 * len(z)))
        return fig

    def trajectory(self, position: int | None = None, *others: "LogitLens"):
        """The target's probability (solid) and rank (dotted, log axis) across layers at one position
        (default: the last), with the same curves of ``others`` (e.g. the tuned lens) overlaid."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        position = int(self.frame["position"].max()) if position is None else position
        fig = make_subplots(specs=[[{"secondary_y": True}]])
        for result, color in zip((self, *others), ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")):
            part = result.frame[result.frame["position"] == position].sort_values("layer")
            name = f"{result.meta.get('lens', 'logit')} lens"
            fig.add_trace(go.Scatter(x=part["layer"], y=part["target_prob"], name=f"{name}: probability",
                                     line=dict(color=color)))
            fig.add_trace(go.Scatter(x=part["layer"], y=part["target_rank"] + 1, name=f"{name}: rank + 1",
                                     line=dict(color=color, dash="dot")), secondary_y=True)
        fig.update_yaxes(title_text="target probability", range=[0, 1], secondary_y=False)
        fig.update_yaxes(title_text="rank + 1", type="log", exponentformat="power", secondary_y=True)
        target = self.frame[self.frame["position"] == position]["target"].iloc[0]
        fig.update_layout(title=f"target {target!r} at position {position}", xaxis_title="layer")
        return fig


def logit_lens(
    model: Model,
    prompt: str,
    *,
    target: str | None = None,
    positions: list[int] | None = None,
    top_k: int = 5,
    rows: int = 256,
    lens: "TunedLens | None" = None,
) -> LogitLens:
    """Logit lens of ``prompt`` at ``positions`` (default: all) over the embeddings and every block;
    with ``lens`` (a ``TunedLens``) each layer's stream passes its translator first."""
    started = time.perf_counter()
    check_top_k(model, top_k)
    tokens = model.tokenize(prompt)
    n = len(tokens)
    positions = sorted({tokens.position(p) for p in (range(n) if positions is None else positions)})
    notes = []
    target_id = None
    if target is not None:
        target_id, note = model.first_token(target, "target")
        notes += [note] if note else []
    names = [hooks.resid_pre(0)] + [hooks.resid_post(l) for l in range(model.n_layers)]
    batch = model.batch([tokens])
    out = run(model, batch, record=names, logits=False)  # the last block's output is the final readout's input
    at = torch.tensor(positions, device=model.device)
    final_logp = torch.log_softmax(decode(model, out.cache[names[-1]][0, at]), -1)  # [P, V]: the model's logits
    targets = (torch.full((len(positions),), target_id) if target_id is not None
               else final_logp.argmax(-1).cpu())
    stream = torch.stack([out.cache[h][0, at] for h in names])  # [L + 1, P, d]
    if lens is not None:
        lens.check(model)
        stream = torch.stack([lens.transform(layer, h) for layer, h in enumerate(stream)])
    flat = stream.flatten(0, 1)
    n_pos = len(positions)
    column = torch.arange(n_pos, device=model.device).repeat(len(names))  # cell -> index into positions
    targets = targets.to(model.device)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("top_ids", "top_lp", "tgt", "tgt_lp", "rank", "ent", "kl")}
    for start in range(0, len(flat), rows):
        logp = torch.log_softmax(decode(model, flat[start:start + rows]), -1)
        idx = column[start:start + rows]
        top_lp, top_ids = logp.topk(top_k, -1)
        tgt = targets[idx]
        tgt_lp = logp.gather(-1, tgt[:, None])[:, 0]
        f = final_logp[idx]
        for key, value in (("top_ids", top_ids), ("top_lp", top_lp), ("tgt", tgt), ("tgt_lp", tgt_lp),
                           ("rank", (logp > tgt_lp[:, None]).sum(-1)), ("ent", -(logp.exp() * logp).sum(-1)),
                           ("kl", (f.exp() * (f - logp)).sum(-1).clamp(min=0))):
            parts[key].append(value)
    got = {k: torch.cat(v).cpu() for k, v in parts.items()}  # one transfer, not one per cell
    frame = pd.DataFrame({
        "layer": torch.arange(len(names)).repeat_interleave(n_pos).numpy(),
        "position": [positions[i] for i in column.tolist()],
        "token": [tokens.strings[positions[i]] for i in column.tolist()],
        "top_ids": got["top_ids"].tolist(), "top_probs": got["top_lp"].exp().tolist(),
        "target_id": got["tgt"].numpy(), "target_prob": got["tgt_lp"].exp().double().numpy(),
        "target_rank": got["rank"].numpy(), "entropy": got["ent"].double().numpy(),
        "kl_to_final": got["kl"].double().numpy(),
    })
    text = model.token_texts(got["top_ids"].flatten().tolist() + got["tgt"].tolist())
    frame["top_tokens"] = [[text[t] for t in r] for r in frame["top_ids"]]
    frame["target"] = [text[t] for t in frame["target_id"]]
    meta = {"model": model.spec, "prompt": prompt, "lens": "logit" if lens is None else "tuned", "target": target,
            "target_token_id": target_id, "target_default": "the model's own top-1 next token per position"
            if target is None else None, "top_k": top_k, "positions": positions, "n_layers": model.n_layers,
            "layers": "0 = embeddings (block 0's input), l = after block l-1", "notes": notes,
            "seconds": round(time.perf_counter() - started, 3)}
    return LogitLens(frame, meta)


def tuned_lens(model: Model, prompt: str, lens: "TunedLens | str | None" = None, **kwargs) -> LogitLens:
    """The logit lens read through a trained ``TunedLens`` (default: this model's lens in the cache,
    or a path to one); keyword arguments as for ``logit_lens``."""
    from .tuned_lens import TunedLens, load_tuned_lens

    if not isinstance(lens, TunedLens):
        lens = load_tuned_lens(model, lens)
    return logit_lens(model, prompt, lens=lens, **kwargs)


def _printable(token: str) -> str:
    """A token as a cell shows it: control characters escaped (they are not valid in the figure's SVG)."""
    return token if token.isprintable() else repr(token)[1:-1]
