"""Early decoding of components and their direct logit attribution.

At one position of a prompt, the residual stream after the last block is the sum of the embeddings,
every attention output and every MLP output (each attention output is in turn a sum over heads plus
``b_O``; ``decompose.head_outputs``). For each component this reports

- what it says on its own: the component vector decoded like the logit lens, through the final
  norm computed on that vector and the unembedding (top-k tokens with probabilities, and the
  bottom-k: the tokens it pushes down most);
- its direct logit attribution (DLA) to the target (minus the foil, when one is given): the
  component read through the final norm with the scale frozen at the whole residual stream's value
  (``decompose``), dotted with the unembedding direction. The DLAs of the embeddings, every attention
  and MLP output and the constant ``bias`` row (the final norm's bias and the unembedding bias) add
  up to the model's own logit (difference) exactly, before any final logit soft-capping. With
``heads``, the ``head`` rows of a layer and its ``attn_bias`` row (``b_O``, where the model has one)
split that layer's ``attn`` row.

Heads are query heads; with grouped-query attention a head's output is computed from its shared
key/value head as the model does.
"""

from __future__ import annotations

import time

import pandas as pd
import torch

from ..models import hooks
from .decompose import decode, final_norm, head_outputs, unembed_matrix
from ..engine.run import Record, run
from .lens import check_top_k
from ..models.model import Model
from ..results.result import Result


class Components(Result):
    """One row per component: kind (embed, attn, mlp, head, bias), layer, head, DLA, decoded tokens."""

    kind = "components"
    table = "components"

    def plot(self):
        """Direct logit attribution of the embeddings, each attention and MLP output (bars by layer)."""
        import plotly.graph_objects as go

        frame = self.frame[self.frame["kind"].isin(["embed", "attn", "mlp", "bias"])]
        fig = go.Figure()
        for kind, color in (("embed", "#888"), ("attn", "#1f77b4"), ("mlp", "#ff7f0e"), ("bias", "#bbb")):
            part = frame[frame["kind"] == kind]
            fig.add_trace(go.Bar(x=part["component"], y=part["dla"], name=kind, marker_color=color,
                                 customdata=[", ".join(map(repr, t[:3])) for t in part["top_tokens"]],
                                 hovertemplate="%{x}: %{y:.3f}<br>decodes to %{customdata}<extra></extra>"))
        fig.update_layout(title=f"direct logit attribution to {self._direction()}", yaxis_title="logit",
                          xaxis={"categoryorder": "array", "categoryarray": list(frame["component"])}, height=420)
        return fig

    def heads_plot(self):
        """Layer x head heatmap of each head's direct logit attribution."""
        import plotly.graph_objects as go

        heads = self.frame[self.frame["kind"] == "head"]
        grid = heads.pivot(index="layer", columns="head", values="dla")
        top = heads.assign(t=[repr(t[0]) for t in heads["top_tokens"]]).pivot(index="layer", columns="head", values="t")
        fig = go.Figure(go.Heatmap(z=grid.values, x=[f"H{h}" for h in grid.columns], y=list(grid.index), zmid=0,
                                   colorscale="RdBu", customdata=top.values,
                                   hovertemplate="L%{y} %{x}: %{z:.3f}<br>decodes to %{customdata}<extra></extra>"))
        fig.update_layout(title=f"heads' direct logit attribution to {self._direction()}", yaxis_title="layer",
                          height=max(350, 18 * len(grid)))
        return fig

    def _direction(self) -> str:
        foil = self.meta.get("foil_token")
        return repr(self.meta["target_token"]) + (f" - {foil!r}" if foil is not None else "")


def component_attribution(
    model: Model,
    prompt: str,
    *,
    target: str | None = None,
    foil: str | None = None,
    position: int = -1,
    heads: bool = True,
    top_k: int = 5,
) -> Components:
    """Decode every component at ``position`` and attribute the target's logit (minus the foil's) to it.

    ``target`` defaults to the model's own top-1 next token at ``position``.
    """
    started = time.perf_counter()
    check_top_k(model, top_k)
    tokens = model.tokenize(prompt)
    pos = tokens.position(position)
    L = model.n_layers
    names = ([hooks.resid_pre(0), hooks.resid_post(L - 1)]
             + [name(l) for l in range(L) for name in (hooks.attn_out, hooks.mlp_out)])
    if heads:
        names += [hooks.z(l) for l in range(L)]
        names += [hooks.attn_hook_out(l) for l in range(L) if hasattr(model.bridge.blocks[l], "ln1_post")]
    out = run(model, model.batch([tokens]), record=Record(names, keep=lambda name, act: act[0, pos]))
    cache, notes = out.cache, []
    final_logits = out.logits[0, pos].float()
    target_id = int(final_logits.argmax()) if target is None else _first(model, target, "target", notes)
    foil_id = None if foil is None else _first(model, foil, "foil", notes)

    rows: list[tuple[str, str, int, int, torch.Tensor]] = [("embed", "embed", -1, -1, cache[hooks.resid_pre(0)])]
    for l in range(L):
        rows.append((f"L{l}.attn", "attn", l, -1, cache[hooks.attn_out(l)]))
        if heads:
            per_head, bias = head_outputs(model, l, cache[hooks.z(l)], cache.get(hooks.attn_hook_out(l)))
            rows += [(f"L{l}H{h}", "head", l, h, per_head[h]) for h in range(model.n_heads)]
            if bias is not None:
                rows.append((f"L{l}.attn_bias", "attn_bias", l, -1, bias))
        rows.append((f"L{l}.mlp", "mlp", l, -1, cache[hooks.mlp_out(l)]))
    vectors = torch.stack([r[4] for r in rows]).float()

    norm = final_norm(model)
    w_u, b_u = unembed_matrix(model)
    direction = w_u[:, target_id] - (w_u[:, foil_id] if foil_id is not None else 0)
    scale = norm.scale(cache[hooks.resid_post(L - 1)]).to(vectors.device)
    dla = norm.linear(vectors, scale) @ direction.to(vectors.device)
    constant = 0.0
    if norm.bias is not None:
        constant += float(norm.bias.to(direction.device) @ direction)
    if b_u is not None:
        constant += float(b_u[target_id] - (b_u[foil_id] if foil_id is not None else 0))

    logp = torch.log_softmax(decode(model, vectors), -1)
    top_lp, top_ids = logp.topk(top_k, -1)
    bottom_ids = logp.topk(top_k, -1, largest=False).indices
    text = model.token_texts(torch.cat([top_ids.flatten(), bottom_ids.flatten()]).tolist() + [target_id]
                             + ([foil_id] if foil_id is not None else []))
    frame = pd.DataFrame({
        "component": [r[0] for r in rows] + ["bias"], "kind": [r[1] for r in rows] + ["bias"],
        "layer": [r[2] for r in rows] + [-1], "head": [r[3] for r in rows] + [-1],
        "dla": dla.cpu().tolist() + [constant],
        "norm": vectors.norm(dim=-1).cpu().tolist() + [0.0],
        "top_tokens": [[text[i] for i in ids] for ids in top_ids.tolist()] + [[]],
        "top_probs": top_lp.exp().cpu().tolist() + [[]],
        "bottom_tokens": [[text[i] for i in ids] for ids in bottom_ids.tolist()] + [[]],
    })
    logit = float(norm(cache[hooks.resid_post(L - 1)]).to(direction.device) @ direction) + (
        0.0 if b_u is None else float(b_u[target_id] - (b_u[foil_id] if foil_id is not None else 0)))
    meta = {"model": model.spec, "prompt": prompt, "position": pos, "token": tokens.strings[pos],
            "target": target, "target_token": text[target_id], "target_token_id": target_id,
            "foil": foil, "foil_token": None if foil_id is None else text[foil_id], "foil_token_id": foil_id,
            "logit_diff": logit, "top_k": top_k, "heads": heads, "notes": notes,
            "dla": "final norm with the scale of the whole residual stream at this position; "
                   "embed + attn + mlp + bias rows sum to the model's logit (difference) before soft-capping",
            "decoding": "each component through the final norm computed on itself and the unembedding",
            "seconds": round(time.perf_counter() - started, 3)}
    return Components(frame, meta)


def _first(model: Model, text: str, role: str, notes: list[str]) -> int:
    token_id, note = model.first_token(text, role)
    if note:
        notes.append(note)
    return token_id
