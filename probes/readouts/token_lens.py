"""The token lens: what a head writes, at one position, out of a chosen span of source tokens.

A head's output at destination ``p`` is ``sum_s A[h, p, s] v_s W_O[h]`` (its key/value head's value
vectors, with grouped-query attention). Restricting the sum to the source positions ``s`` of a span
gives the part of the output that comes from those tokens; read through the final norm with the scale
frozen at the residual stream's value at ``p`` (as direct logit attribution does, ``decompose``) and
the unembedding, it is that span's direct effect, through this head, on every logit: the tokens it
promotes (largest) and suppresses (smallest). Summed over a partition of all source positions the
parts give the head's whole output (tests). On Gemma the post-attention norm is applied with the scale
of the layer's whole attention output.
"""

from __future__ import annotations

import time

import pandas as pd
import torch

from ..models import hooks
from .decompose import final_norm, head_outputs, unembed_matrix
from ..engine.run import run
from ..errors import HeadscopeError
from .lens import check_top_k
from ..models.model import Model
from ..results.result import Result


class TokenLens(Result):
    """One row per head: attention to the span, and the tokens its output from the span promotes/suppresses."""

    kind = "token-lens"
    table = "token_lens"

    def plot(self, head: int | None = None):
        """Bars of the top promoted and suppressed tokens of one head (default: the first row's)."""
        import plotly.graph_objects as go

        row = self.frame.iloc[0] if head is None else self.frame[self.frame["head"] == head].iloc[0]
        tokens = list(row["top_tokens"]) + list(row["bottom_tokens"])[::-1]
        logits = list(row["top_logits"]) + list(row["bottom_logits"])[::-1]
        fig = go.Figure(go.Bar(x=logits, y=[repr(t) for t in tokens], orientation="h",
                               marker_color=["#2a7" if v > 0 else "#c44" for v in logits]))
        fig.update_layout(title=f"L{row['layer']}H{row['head']} from {self.meta['source_text']!r} at position "
                                f"{self.meta['position']}: attention {row['attention']:.2f}",
                          xaxis_title="direct logit contribution", yaxis={"autorange": "reversed"},
                          height=max(300, 22 * len(tokens)))
        return fig


def token_lens(
    model: Model,
    prompt: str,
    layer: int,
    source: str | tuple[int, int],
    *,
    head: int | None = None,
    position: int = -1,
    target: str | None = None,
    top_k: int = 10,
) -> TokenLens:
    """Token lens of ``head`` (default: every head of ``layer``) at ``position`` from ``source``: the
    source's text (its last occurrence in the prompt) or a token span ``(start, end)``."""
    started = time.perf_counter()
    model.check_layer(layer)
    heads = list(range(model.n_heads)) if head is None else [model.check_head(head)]
    check_top_k(model, top_k)
    tokens = model.tokenize(prompt)
    pos = tokens.position(position)
    if isinstance(source, str):
        span = tokens.locate(source, role="source")
        start, end = span[0], span[-1] + 1
    else:
        start, end = (int(x) for x in source)
        if not 0 <= start < end <= len(tokens):
            raise HeadscopeError(f"source span {source!r} must be (start, end) with 0 <= start < end <= {len(tokens)}")
    if start > pos:
        raise HeadscopeError(f"source span starts at {start}, after position {pos}: a token cannot attend to later ones")
    names = [hooks.pattern(layer), hooks.v(layer), hooks.attn_hook_out(layer),
             hooks.resid_post(model.n_layers - 1)]
    cache = run(model, model.batch([tokens]), record=names).cache
    pattern = cache[names[0]][0, :, pos].float()  # [head, key]
    values = cache[names[1]][0].float()  # [key, kv_head, d_head]
    group = model.n_heads // values.shape[1]
    values = values.repeat_interleave(group, dim=1)  # each query head's value vectors
    weights = torch.zeros_like(pattern)
    weights[:, start:end] = pattern[:, start:end]
    z = torch.einsum("hk,khd->hd", weights, values)
    part, _ = head_outputs(model, layer, z, cache[names[2]][0, pos])  # [head, d_model]; b_O is no token's
    norm = final_norm(model)
    w_u, _ = unembed_matrix(model)
    scale = norm.scale(cache[names[3]][0, pos]).to(part.device)
    logits = norm.linear(part[heads], scale) @ w_u.to(part.device)  # [heads, vocab]
    top_v, top_i = logits.topk(top_k, -1)
    bottom_v, bottom_i = logits.topk(top_k, -1, largest=False)
    target_id = None
    notes = []
    if target is not None:
        target_id, note = model.first_token(target, "target")
        notes += [note] if note else []
    text = model.token_texts(torch.cat([top_i.flatten(), bottom_i.flatten()]).tolist()
                             + ([target_id] if target_id is not None else []))
    frame = pd.DataFrame({
        "layer": layer, "head": heads,
        "attention": pattern[heads, start:end].sum(-1).cpu().tolist(),
        "top_tokens": [[text[i] for i in row] for row in top_i.tolist()], "top_logits": top_v.cpu().tolist(),
        "bottom_tokens": [[text[i] for i in row] for row in bottom_i.tolist()], "bottom_logits": bottom_v.cpu().tolist(),
    })
    if target_id is not None:
        frame["target_logit"] = logits[:, target_id].cpu().tolist()
    meta = {"model": model.spec, "prompt": prompt, "layer": layer, "heads": heads, "position": pos,
            "token": tokens.strings[pos], "source": [start, end], "source_text": "".join(tokens.strings[start:end]),
            "target": target, "target_token_id": target_id, "top_k": top_k, "notes": notes,
            "readout": "final norm with the residual stream's scale at this position, then the unembedding (no bias)",
            "seconds": round(time.perf_counter() - started, 3)}
    return TokenLens(frame, meta)
