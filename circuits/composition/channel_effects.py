"""Data-side test of a channel: scale components of a writer head's output and watch a reader head.

For a writer head with OV SVD components ``v_i`` (``composition.writer_svd``: the directions it writes,
orthonormal, spanning the row space of its ``W_O``), a variant keeps the head's output ``out = z W_O``
except along a chosen subspace ``S``: ``out' = out - (1 - scale) sum_{i in S} (out . v_i) v_i``. It is
applied to the head's ``z`` (``hook_z``, every position) as ``z' = z M`` with
``M = I - (1 - scale) W_O V_S^T V_S W_O^+``: an empty ``S`` changes nothing, and every component with
scale 0 zeroes the head (its output has no other part), which is zero ablation (tests).

Measured on a prompt set (``prompt``, ``target``, optional ``foil``), all variants as rows of one batch:
the reader head's attention from the last position to the ``source`` tokens (a text located in each
prompt, a position, or by default the position the reader attends to most in the unchanged run), and
the metric of the target at the last position (``logprob``, ``prob``, or ``logit_diff`` with a foil).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from ...probes.models import hooks
from ...probes import HeadscopeError, Intervention, Model, Record, Result, run
from ...probes.engine.batching import row_chunks

from .scores import writer_svd
from .weights import HeadWeights, head_weights
from ..metrics import check_metric, target_metric
from ..prompt_sets import as_prompt_set, encode

Head = tuple[int, int]


def projection(model: Model, writer: Head, subspaces: list[list[int]], scale: float, *, fold_norm: bool = True,
               svd=None) -> torch.Tensor:
    """``M`` ``[variants, d_head, d_head]`` for each subspace (module docstring)."""
    layer, head = writer
    w = head_weights(model, fold_norm=fold_norm)
    one = HeadWeights(*(m[layer:layer + 1, head:head + 1] for m in (w.W_Q, w.W_K, w.W_V, w.W_O)), w.folded)
    vh = (writer_svd(one)[2][0, 0] if svd is None else svd[2][layer, head]).cpu()  # [d_head, d_model]
    w_o = w.W_O[layer, head].cpu()
    pinv = torch.linalg.pinv(w_o)
    eye = torch.eye(model.d_head)
    out = []
    for comps in subspaces:
        v = vh[list(comps)]
        out.append(eye - (1.0 - scale) * (w_o @ v.T @ v @ pinv) if comps else eye)
    return torch.stack(out)


def run_variants(model: Model, batch, writer: Head, mats: torch.Tensor, **kwargs):
    """One forward of ``batch``, whose rows are ``len(mats)`` variant-major copies of some prompts, with
    the writer's ``z`` multiplied by each variant's ``M``; logits at each row's last position."""
    layer, head = writer
    per_row = mats.to(model.device).repeat_interleave(len(batch) // len(mats), 0)
    scaled = Intervention.project(hooks.z(layer), per_row, rows=torch.arange(len(batch)),
                                  heads=torch.full((len(batch),), head))
    with torch.no_grad():
        return run(model, batch, [scaled], logits_at=batch.last, **kwargs)


def check_writer(model: Model, writer: Head, subspaces: list[list[int]]) -> None:
    model.check_layer(writer[0]), model.check_head(writer[1])
    for comps in subspaces:
        for i in comps:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < model.d_head:
                raise HeadscopeError(f"component {i!r} out of range; a head has components 0..{model.d_head - 1}")


def _check(model: Model, writer: Head, reader: Head, subspaces: list[list[int]]) -> None:
    check_writer(model, writer, subspaces)
    model.check_layer(reader[0]), model.check_head(reader[1])
    if reader[0] <= writer[0]:
        raise HeadscopeError(f"reader L{reader[0]}H{reader[1]} is not after writer L{writer[0]}H{writer[1]}: "
                             "a head can only read what earlier layers wrote")


class ChannelTest(Result):
    """One row per (variant, prompt): ``attention`` of the reader to the source and the ``metric``."""

    kind = "channel-test"
    table = "channel_test"

    def summary(self) -> pd.DataFrame:
        """Per variant: mean attention and metric, and their change from the unchanged run (variant 0)."""
        out = self.frame.groupby(["variant", "components", "scale"], as_index=False, sort=False)[
            ["attention", "metric"]].mean()
        out["attention_change"] = out["attention"] - out["attention"].iloc[0]
        out["metric_change"] = out["metric"] - out["metric"].iloc[0]
        return out

    def plot(self):
        import plotly.express as px

        s = self.summary()
        m = self.meta
        return px.bar(s, x="components", y=["attention_change", "metric_change"], barmode="group",
                      title=f"L{m['writer'][0]}H{m['writer'][1]} -> L{m['reader'][0]}H{m['reader'][1]}: "
                            f"components scaled by {m['scale']}")


def channel_test(model: Model, prompts, writer: Head, reader: Head, subspaces: list[list[int]], *,
                 scale: float = 0.0, source: str | int | None = None, metric: str = "logprob",
                 fold_norm: bool = True, batch_size: int | None = None) -> ChannelTest:
    """Each subspace of ``writer``'s components scaled by ``scale`` (variant 0: unchanged), batched."""
    started = time.perf_counter()
    writer, reader = tuple(writer), tuple(reader)
    _check(model, writer, reader, subspaces)
    prompt_set = as_prompt_set(prompts)
    foil = metric == "logit_diff"
    check_metric(metric, "foil" if foil else None)
    enc = encode(model, prompt_set, foil=foil)
    variants = [[]] + [list(s) for s in subspaces]
    mats = projection(model, writer, variants, scale, fold_norm=fold_norm).to(model.device)
    K, P = len(variants), len(enc.tokens)
    attention, values = np.zeros((K, P)), np.zeros((K, P))
    rl, rh = reader
    pattern = hooks.pattern(rl)
    for sl in row_chunks(model, P, max(len(t) for t in enc.tokens), batch_size, per_row=K):
        toks = enc.tokens[sl]
        batch = model.batch(toks * K)  # variant-major rows
        rows = torch.arange(len(batch))
        last = batch.last

        def keep(name, act):
            return act[rows.to(act.device), rh, last.to(act.device)].float()

        out = run_variants(model, batch, writer, mats, record=Record([pattern], keep=keep))
        weights = out.cache[pattern].cpu().reshape(K, len(toks), -1)
        targets = torch.tensor(enc.target_ids[sl] * K, device=out.logits.device)
        foils = torch.tensor(enc.foil_ids[sl] * K, device=out.logits.device) if foil else None
        values[:, sl] = target_metric(out.logits, metric, targets, foils).cpu().reshape(K, len(toks)).numpy()
        for j, t in enumerate(toks):
            where = _source(t, source, weights[0, j, :len(t)])
            attention[:, sl.start + j] = weights[:, j, where].sum(-1).numpy()
    frame = pd.DataFrame({"variant": np.repeat(np.arange(K), P),
                          "components": np.repeat([",".join(map(str, v)) or "none" for v in variants], P),
                          "scale": np.repeat([1.0] + [scale] * (K - 1), P), "prompt": np.tile(np.arange(P), K),
                          "attention": attention.reshape(-1), "metric": values.reshape(-1)})
    meta = {"model": model.spec, "writer": list(writer), "reader": list(reader), "scale": scale,
            "source": source if source is not None else "the reader's most-attended position (unchanged run)",
            "metric": metric, "fold_norm": fold_norm, "n_prompts": P,
            "seconds": round(time.perf_counter() - started, 3)}
    return ChannelTest(frame, meta)


def _source(tokens, source, clean_row: torch.Tensor) -> list[int]:
    if source is None:
        return [int(clean_row.argmax())]
    if isinstance(source, int):
        return [tokens.position(source)]
    return tokens.locate(source, role="source")
